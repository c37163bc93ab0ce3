# Alert policies. Each one's documentation says what it means and links its runbook section
# (docs/runbook.md); every policy notifies var.alert_notification_channels.
#
# Known provider behaviour: a policy on a log-based metric created in the same apply can fail
# with 404 "Cannot find metric(s) that match type" for a few minutes, until Monitoring knows the
# new metric. Each policy depends on its metric resources, so the metric is at least created
# first; if the apply still fails with that 404, wait two or three minutes and run the same
# `terraform apply` again (docs/deploy.md): the metrics exist by then and only the policies are
# created.

locals {
  runbook = trimsuffix(var.runbook_url, "/")

  # The metric type alone: a log-based metric's series carry the monitored resource of their
  # log entries, which the metric's own filter already chose.
  log_metric = {
    relay_connection_changes = "metric.type=\"${local.metric_prefix}/relay_connection_changes\""
    relays_refused_long      = "metric.type=\"${local.metric_prefix}/relays_refused_5min\""
    pushes                   = "metric.type=\"${local.metric_prefix}/pushes\""
    ring_latency             = "metric.type=\"${local.metric_prefix}/ring_latency\""
  }

  connector_instances = "metric.type=\"run.googleapis.com/container/instance_count\" AND resource.type=\"cloud_run_revision\" AND resource.label.service_name=\"${local.connector_service_name}\""
}

resource "google_monitoring_alert_policy" "relay_down" {
  project      = var.project_id
  display_name = "${var.name_prefix}: relay down for 5 minutes"
  combiner     = "OR"
  severity     = "ERROR"

  documentation {
    subject   = "${var.name_prefix}: relay $${metric.label.relay} down for 5 minutes"
    mime_type = "text/markdown"
    content   = <<-EOT
      A PBX relay has not been readable for 5 minutes: its calls ring nobody.

      - **disconnected**: the connector failed to connect (or lost the connection) again and again;
        the relay, its proxy, the network or its credentials are the suspects.
      - **refused**: the connector's address policy refuses the relay's address (private,
        loopback, unresolvable ...): a configuration problem, it does not heal by itself.

      Runbook: ${local.runbook}#relay-down
    EOT
  }

  conditions {
    display_name = "relay keeps disconnecting"
    condition_threshold {
      # A relay that is down logs "relay disconnected" at every failed attempt (backoff <= 30 s),
      # so every 2-minute window holds one; a relay that reconnected logs none.
      filter          = "${local.log_metric.relay_connection_changes} AND metric.label.change=\"disconnected\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "300s"

      aggregations {
        alignment_period     = "120s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.relay"]
      }

      evaluation_missing_data = "EVALUATION_MISSING_DATA_INACTIVE"

      trigger {
        count = 1
      }
    }
  }

  conditions {
    display_name = "relay refused for 5 minutes"
    condition_threshold {
      # Lines of relays refused >= 300 s in a row; re-checks come at most 300 s apart.
      filter          = local.log_metric.relays_refused_long
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period     = "600s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.relay"]
      }

      evaluation_missing_data = "EVALUATION_MISSING_DATA_INACTIVE"

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "1800s"
  }

  notification_channels = var.alert_notification_channels

  depends_on = [
    google_logging_metric.relay_connection_changes,
    google_logging_metric.relays_refused_long,
  ]
}

resource "google_monitoring_alert_policy" "push_failures" {
  project      = var.project_id
  display_name = "${var.name_prefix}: incoming-call pushes failing"
  combiner     = "OR"
  severity     = "CRITICAL"

  documentation {
    subject   = "${var.name_prefix}: more than ${var.push_failure_ratio_threshold * 100}% of incoming-call pushes fail"
    mime_type = "text/markdown"
    content   = <<-EOT
      For 10 minutes, more than ${var.push_failure_ratio_threshold * 100}% of the incoming-call
      pushes sent to FCM failed: transient errors still failing after the retries of the ring
      window (UNAVAILABLE, INTERNAL), or rejected (QUOTA_EXCEEDED, SENDER_ID_MISMATCH,
      THIRD_PARTY_AUTH_ERROR). Dead tokens (UNREGISTERED) are not counted: they are pruned.
      Phones do not ring.

      Runbook: ${local.runbook}#push-failures
    EOT
  }

  conditions {
    display_name = "incoming push failure ratio"
    condition_threshold {
      filter             = "${local.log_metric.pushes} AND metric.label.push=\"incoming\" AND metric.label.outcome=monitoring.regex.full_match(\"transient|rejected\")"
      denominator_filter = "${local.log_metric.pushes} AND metric.label.push=\"incoming\" AND metric.label.outcome=monitoring.regex.full_match(\"sent|transient|rejected\")"
      comparison         = "COMPARISON_GT"
      threshold_value    = var.push_failure_ratio_threshold
      duration           = "600s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }

      denominator_aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }

      evaluation_missing_data = "EVALUATION_MISSING_DATA_INACTIVE"

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "1800s"
  }

  notification_channels = var.alert_notification_channels

  depends_on = [google_logging_metric.pushes]
}

resource "google_monitoring_alert_policy" "ring_latency" {
  project      = var.project_id
  display_name = "${var.name_prefix}: ring latency p95 over ${var.ring_latency_p95_threshold_ms / 1000} s"
  combiner     = "OR"
  severity     = "WARNING"

  documentation {
    subject   = "${var.name_prefix}: ring latency p95 over ${var.ring_latency_p95_threshold_ms / 1000} s"
    mime_type = "text/markdown"
    content   = <<-EOT
      For 5 minutes, the 95th percentile of ring latency (the PBX's timestamp of the call to the
      FCM answers of its incoming pushes) was over ${var.ring_latency_p95_threshold_ms} ms:
      phones ring late, and callers may hang up before they do.

      Runbook: ${local.runbook}#ring-latency
    EOT
  }

  conditions {
    display_name = "ring latency p95"
    condition_threshold {
      filter          = local.log_metric.ring_latency
      comparison      = "COMPARISON_GT"
      threshold_value = var.ring_latency_p95_threshold_ms
      duration        = "300s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_PERCENTILE_95"
      }

      evaluation_missing_data = "EVALUATION_MISSING_DATA_INACTIVE"

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "1800s"
  }

  notification_channels = var.alert_notification_channels

  depends_on = [google_logging_metric.ring_latency]
}

resource "google_monitoring_alert_policy" "dead_letters" {
  project      = var.project_id
  display_name = "${var.name_prefix}: call events dead-lettered"
  combiner     = "OR"
  severity     = "ERROR"

  documentation {
    subject   = "${var.name_prefix}: call events in the dead-letter subscription"
    mime_type = "text/markdown"
    content   = <<-EOT
      The notifier failed call events ${var.max_delivery_attempts} times in a row and Pub/Sub
      moved them to ${google_pubsub_topic.call_events_dead_letter.name}; they wait in the
      subscription ${google_pubsub_subscription.dead_letter_hold.name} (7 days). Those calls rang
      nobody, or were never cancelled. The alert stays open while messages wait there.

      Runbook: ${local.runbook}#dead-letters
    EOT
  }

  conditions {
    display_name = "messages waiting in the dead-letter subscription"
    condition_threshold {
      filter          = "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND resource.type=\"pubsub_subscription\" AND resource.label.subscription_id=\"${google_pubsub_subscription.dead_letter_hold.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_MAX"
        cross_series_reducer = "REDUCE_SUM"
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "86400s"
  }

  notification_channels = var.alert_notification_channels
}

resource "google_monitoring_alert_policy" "no_connector" {
  project      = var.project_id
  display_name = "${var.name_prefix}: no connector instance running"
  combiner     = "OR"
  severity     = "CRITICAL"

  documentation {
    subject   = "${var.name_prefix}: no connector instance running"
    mime_type = "text/markdown"
    content   = <<-EOT
      For 5 minutes the Cloud Run service ${local.connector_service_name} had no instance (or
      reported none): no relay is read and no call rings anyone.

      Runbook: ${local.runbook}#no-connector
    EOT
  }

  conditions {
    display_name = "connector instances below 1"
    condition_threshold {
      filter          = local.connector_instances
      comparison      = "COMPARISON_LT"
      threshold_value = 1
      duration        = "300s"

      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_MAX"
        cross_series_reducer = "REDUCE_SUM"
      }

      trigger {
        count = 1
      }
    }
  }

  conditions {
    # No instance at all also means no instance_count points.
    display_name = "connector instance count absent"
    condition_absent {
      filter   = local.connector_instances
      duration = "300s"

      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_MAX"
        cross_series_reducer = "REDUCE_SUM"
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "1800s"
  }

  notification_channels = var.alert_notification_channels

  depends_on = [google_cloud_run_v2_service.connector]
}
