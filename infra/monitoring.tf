# Log-based metrics from the JSON lines the product writes (functions/log.py: jsonPayload.message
# and the fields of each log call; labels.component from logging.googleapis.com/labels).
# tests/integration/test_log_metrics.py runs the real processes and checks that every filter's
# jsonPayload / labels conditions, label extractors and value extractors match lines they really
# write: renaming a log message or a field breaks `make test`, not the dashboard.
#
# Labels stay low-cardinality: kinds, outcomes, FCM error codes, reasons, constant messages. The
# exception is `relay` on the relay state metrics, which the per-relay alert needs: one series
# per relay that changes state (bounded by the relays configured), with points only when it does.
# Metric types are logging.googleapis.com/user/<name>; alerts.tf and dashboard.tf use them.

locals {
  connector_logs = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${local.connector_service_name}\" AND labels.component=\"connector\""
  notifier_logs  = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${local.notifier_function_name}\" AND labels.component=\"notifier\""

  metric_prefix = "logging.googleapis.com/user/${var.name_prefix}"

  # Ring latency buckets (ms): fine around the 2 s alert threshold.
  latency_buckets_ms = [100, 200, 300, 500, 750, 1000, 1250, 1500, 2000, 2500, 3000, 5000, 10000, 30000]
}

# --- connector -----------------------------------------------------------------------------------

# One line per call event the connector publishes (ingest.py "call event"): calls per minute.
resource "google_logging_metric" "call_events" {
  project     = var.project_id
  name        = "${var.name_prefix}/call_events"
  description = "Call events the connector recognised and published (ringing = incoming calls), by kind."
  filter      = "${local.connector_logs} AND jsonPayload.message=\"call event\""

  label_extractors = {
    kind = "EXTRACT(jsonPayload.kind)"
  }

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "Call events (connector)"
    labels {
      key         = "kind"
      description = "ringing, answered or ended"
    }
  }

  depends_on = [google_project_service.enabled]
}

# relay_client.py "relay connected" / "relay disconnected" (one line per failed attempt while a
# relay is down, at least every ~40 s: backoff is capped at 30 s).
resource "google_logging_metric" "relay_connection_changes" {
  project     = var.project_id
  name        = "${var.name_prefix}/relay_connection_changes"
  description = "Relay WebSocket connections made and lost, by relay and change."
  filter      = "${local.connector_logs} AND jsonPayload.message=(\"relay connected\" OR \"relay disconnected\")"

  label_extractors = {
    relay  = "EXTRACT(jsonPayload.relay)"
    change = "REGEXP_EXTRACT(jsonPayload.message, \"relay (connected|disconnected)\")"
  }

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "Relay connection changes"
    labels {
      key         = "relay"
      description = "The relay URL (scheme, host, port; never credentials)"
    }
    labels {
      key         = "change"
      description = "connected or disconnected"
    }
  }

  depends_on = [google_project_service.enabled]
}

# relay_client.py "relay refused": the address policy refused the relay's address (docs/security.md).
resource "google_logging_metric" "relays_refused" {
  project     = var.project_id
  name        = "${var.name_prefix}/relays_refused"
  description = "Relay connections refused by the address policy (private, loopback, unresolvable ...), by relay and reason."
  filter      = "${local.connector_logs} AND jsonPayload.message=\"relay refused\""

  label_extractors = {
    relay  = "EXTRACT(jsonPayload.relay)"
    reason = "EXTRACT(jsonPayload.reason)"
  }

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "Relays refused"
    labels {
      key         = "relay"
      description = "The relay URL"
    }
    labels {
      key         = "reason"
      description = "Why the address was refused (functions/core/address_policy.py)"
    }
  }

  depends_on = [google_project_service.enabled]
}

# The same lines once a relay has been refused for 5 minutes in a row (refused_for_s, repeated
# at each re-check): what the "relay down" alert counts.
resource "google_logging_metric" "relays_refused_long" {
  project     = var.project_id
  name        = "${var.name_prefix}/relays_refused_5min"
  description = "Re-checks of relays refused for 5 minutes or more in a row, by relay."
  filter      = "${local.connector_logs} AND jsonPayload.message=\"relay refused\" AND jsonPayload.refused_for_s>=300"

  label_extractors = {
    relay = "EXTRACT(jsonPayload.relay)"
  }

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "Relays refused for 5 minutes"
    labels {
      key         = "relay"
      description = "The relay URL"
    }
  }

  depends_on = [google_project_service.enabled]
}

# ingest.py "bad frame skipped": the first 3 per relay and reason, then one per 100 (its count
# field carries the running total).
resource "google_logging_metric" "bad_frames" {
  project     = var.project_id
  name        = "${var.name_prefix}/bad_frames"
  description = "Bad relay frames logged (first 3 per relay and reason, then 1 per 100), by reason."
  filter      = "${local.connector_logs} AND jsonPayload.message=\"bad frame skipped\""

  label_extractors = {
    reason = "EXTRACT(jsonPayload.reason)"
  }

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "Bad relay frames"
    labels {
      key         = "reason"
      description = "invalid_json, truncated, oversize, not_an_object, ..."
    }
  }

  depends_on = [google_project_service.enabled]
}

# ingest.py "relay PBX link": amiws's own AMI login to the PBX changed (up, auth_failed).
resource "google_logging_metric" "pbx_link_changes" {
  project     = var.project_id
  name        = "${var.name_prefix}/pbx_link_changes"
  description = "Changes of the link between a relay (amiws) and its PBX, by relay and state (up, auth_failed)."
  filter      = "${local.connector_logs} AND jsonPayload.message=\"relay PBX link\""

  label_extractors = {
    relay    = "EXTRACT(jsonPayload.relay)"
    pbx_link = "EXTRACT(jsonPayload.pbx_link)"
  }

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "PBX link changes"
    labels {
      key         = "relay"
      description = "The relay endpoint (host:port)"
    }
    labels {
      key         = "pbx_link"
      description = "up or auth_failed"
    }
  }

  depends_on = [google_project_service.enabled]
}

# The connector's periodic summary of the relays it holds: what "relays connected" shows.
resource "google_logging_metric" "relays_connected" {
  project         = var.project_id
  name            = "${var.name_prefix}/relays_connected"
  description     = "Relays an instance holds with an open WebSocket, sampled from its periodic summary line."
  filter          = "${local.connector_logs} AND jsonPayload.message=\"connector relays\""
  value_extractor = "EXTRACT(jsonPayload.connected)"

  label_extractors = {
    holder = "EXTRACT(jsonPayload.holder)"
  }

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "1"
    display_name = "Relays connected (per instance)"
    labels {
      key         = "holder"
      description = "The connector instance's lease session (one per process)"
    }
  }

  bucket_options {
    exponential_buckets {
      num_finite_buckets = 20
      growth_factor      = 1.6
      scale              = 1
    }
  }

  depends_on = [google_project_service.enabled]
}

# --- notifier ------------------------------------------------------------------------------------

# service.py "call event handled": one line per event handled, with why it was dropped, if it was.
resource "google_logging_metric" "notifier_events" {
  project     = var.project_id
  name        = "${var.name_prefix}/notifier_events"
  description = "Call events the notifier handled, by kind and drop reason (empty: not dropped)."
  filter      = "${local.notifier_logs} AND jsonPayload.message=\"call event handled\""

  label_extractors = {
    kind    = "EXTRACT(jsonPayload.kind)"
    dropped = "EXTRACT(jsonPayload.dropped)"
  }

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "Call events handled (notifier)"
    labels {
      key         = "kind"
      description = "ringing, answered or ended"
    }
    labels {
      key         = "dropped"
      description = "stale, call_already_over, or empty"
    }
  }

  depends_on = [google_project_service.enabled]
}

# One line per push (service.py _deliver): "push sent", or "push not delivered" with the FCM error.
resource "google_logging_metric" "pushes" {
  project     = var.project_id
  name        = "${var.name_prefix}/pushes"
  description = "FCM pushes by kind (incoming, cancel, missed), outcome (sent, dead_token = pruned, transient, rejected) and FCM error code."
  filter      = "${local.notifier_logs} AND jsonPayload.message=(\"push sent\" OR \"push not delivered\")"

  label_extractors = {
    push       = "EXTRACT(jsonPayload.push)"
    outcome    = "EXTRACT(jsonPayload.outcome)"
    error_code = "EXTRACT(jsonPayload.error_code)"
  }

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "FCM pushes"
    labels {
      key         = "push"
      description = "incoming, cancel or missed"
    }
    labels {
      key         = "outcome"
      description = "sent, dead_token (token pruned), transient (after retries), rejected"
    }
    labels {
      key         = "error_code"
      description = "FCM error code (UNREGISTERED, UNAVAILABLE, QUOTA_EXCEEDED, ...); empty when sent"
    }
  }

  depends_on = [google_project_service.enabled]
}

# One line per skip reason of an event (service.py): who was not rung, and why.
resource "google_logging_metric" "recipients_skipped" {
  project     = var.project_id
  name        = "${var.name_prefix}/recipients_skipped"
  description = "Call events in which users or devices were not rung, by skip reason (suspended, push_disabled, dcmiws_enabled, web_dummy_token, already_served, ...)."
  filter      = "${local.notifier_logs} AND jsonPayload.message=\"recipients skipped\""

  label_extractors = {
    reason = "EXTRACT(jsonPayload.reason)"
  }

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "Recipients skipped"
    labels {
      key         = "reason"
      description = "The skip reason (functions/core/recipients.py, already_served from the ledger)"
    }
  }

  depends_on = [google_project_service.enabled]
}

# latency_ms of a ringing event: PBX timestamp (occurred_at) to the FCM answers of its pushes.
resource "google_logging_metric" "ring_latency" {
  project         = var.project_id
  name            = "${var.name_prefix}/ring_latency"
  description     = "Ring latency: PBX timestamp of the call to the FCM answers of its incoming pushes (ms)."
  filter          = "${local.notifier_logs} AND jsonPayload.message=\"call event handled\" AND jsonPayload.kind=\"ringing\" AND jsonPayload.latency_ms>=0"
  value_extractor = "EXTRACT(jsonPayload.latency_ms)"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "ms"
    display_name = "Ring latency"
  }

  bucket_options {
    explicit_buckets {
      bounds = local.latency_buckets_ms
    }
  }

  depends_on = [google_project_service.enabled]
}

# attempts counts the event's FCM send rounds: above 1, transient failures were retried (or a
# call that ended while ringing got its cancels in a second round).
resource "google_logging_metric" "notifier_retries" {
  project     = var.project_id
  name        = "${var.name_prefix}/notifier_retries"
  description = "Call events whose pushes needed more than one FCM send round (transient failures retried), by kind."
  filter      = "${local.notifier_logs} AND jsonPayload.message=\"call event handled\" AND jsonPayload.attempts>1"

  label_extractors = {
    kind = "EXTRACT(jsonPayload.kind)"
  }

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "Notifier send retries"
    labels {
      key         = "kind"
      description = "ringing, answered or ended"
    }
  }

  depends_on = [google_project_service.enabled]
}

# app.py "malformed call event dropped": acknowledged without handling (it would fail every retry).
resource "google_logging_metric" "malformed_events" {
  project     = var.project_id
  name        = "${var.name_prefix}/malformed_events"
  description = "Pub/Sub messages the notifier could not decode as a call event (acknowledged and dropped)."
  filter      = "${local.notifier_logs} AND jsonPayload.message=\"malformed call event dropped\""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "Malformed call events"
  }

  depends_on = [google_project_service.enabled]
}

# --- both ----------------------------------------------------------------------------------------

# Every WARNING and ERROR line of either service, by component, severity and message (the
# messages are constants in the code, so the label stays low-cardinality): the catch-all the
# runbook starts from, and the counter of what has no metric of its own (calls dropped without
# an end, relay gaps, late rings, lapsed heartbeats, ...).
resource "google_logging_metric" "problem_lines" {
  project     = var.project_id
  name        = "${var.name_prefix}/problem_lines"
  description = "WARNING and worse log lines of the connector and the notifier, by component, severity and message."
  filter      = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=(\"${local.connector_service_name}\" OR \"${local.notifier_function_name}\") AND labels.component=(\"connector\" OR \"notifier\") AND severity>=WARNING"

  label_extractors = {
    component = "EXTRACT(labels.component)"
    severity  = "EXTRACT(severity)"
    message   = "EXTRACT(jsonPayload.message)"
  }

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "Warning and error lines"
    labels {
      key         = "component"
      description = "connector or notifier"
    }
    labels {
      key         = "severity"
      description = "WARNING, ERROR, CRITICAL"
    }
    labels {
      key         = "message"
      description = "The log message (docs/runbook.md lists them all)"
    }
  }

  depends_on = [google_project_service.enabled]
}
