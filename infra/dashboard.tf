# One dashboard with what the alerts watch and what an operator asks first: calls and pushes per
# minute, ring latency percentiles, relays connected, failures by reason. Charts read the
# log-based metrics of monitoring.tf and Google's own Cloud Run and Pub/Sub metrics.

locals {
  m = local.metric_prefix

  # Each chart: title, then data sets of [filter, per-series aligner, cross-series reducer,
  # group-by labels, legend]; period is the alignment period (one point per minute by default).
  charts = [
    {
      title = "Calls per minute (connector: call events by kind)"
      plot  = "STACKED_BAR"
      sets  = [["metric.type=\"${local.m}/call_events\"", "ALIGN_DELTA", "REDUCE_SUM", ["metric.label.kind"], "$${metric.label.kind}"]]
    },
    {
      title = "Pushes per minute by kind and outcome"
      plot  = "STACKED_BAR"
      sets  = [["metric.type=\"${local.m}/pushes\"", "ALIGN_DELTA", "REDUCE_SUM", ["metric.label.push", "metric.label.outcome"], "$${metric.label.push} $${metric.label.outcome}"]]
    },
    {
      title = "Ring latency (PBX timestamp to FCM answer), ms"
      plot  = "LINE"
      sets = [
        for p in ["50", "95", "99"] :
        ["metric.type=\"${local.m}/ring_latency\"", "ALIGN_DELTA", "REDUCE_PERCENTILE_${p}", [], "p${p}"]
      ]
      threshold = var.ring_latency_p95_threshold_ms
    },
    {
      title  = "Relays connected (all connector instances)"
      plot   = "LINE"
      period = "120s"
      sets   = [["metric.type=\"${local.m}/relays_connected\"", "ALIGN_PERCENTILE_50", "REDUCE_SUM", [], "connected"]]
    },
    {
      title = "Relay connections made and lost"
      plot  = "STACKED_BAR"
      sets  = [["metric.type=\"${local.m}/relay_connection_changes\"", "ALIGN_DELTA", "REDUCE_SUM", ["metric.label.change"], "$${metric.label.change}"]]
    },
    {
      title = "Relay to PBX (amiws AMI login) changes"
      plot  = "STACKED_BAR"
      sets  = [["metric.type=\"${local.m}/pbx_link_changes\"", "ALIGN_DELTA", "REDUCE_SUM", ["metric.label.pbx_link"], "$${metric.label.pbx_link}"]]
    },
    {
      title = "Relays refused by the address policy, by reason"
      plot  = "STACKED_BAR"
      sets  = [["metric.type=\"${local.m}/relays_refused\"", "ALIGN_DELTA", "REDUCE_SUM", ["metric.label.reason"], "$${metric.label.reason}"]]
    },
    {
      title = "Push failures by FCM error"
      plot  = "STACKED_BAR"
      sets  = [["metric.type=\"${local.m}/pushes\" AND metric.label.outcome!=\"sent\"", "ALIGN_DELTA", "REDUCE_SUM", ["metric.label.outcome", "metric.label.error_code"], "$${metric.label.outcome} $${metric.label.error_code}"]]
    },
    {
      title = "Recipients skipped by reason (events)"
      plot  = "STACKED_BAR"
      sets  = [["metric.type=\"${local.m}/recipients_skipped\"", "ALIGN_DELTA", "REDUCE_SUM", ["metric.label.reason"], "$${metric.label.reason}"]]
    },
    {
      title = "Call events dropped by the notifier, by reason"
      plot  = "STACKED_BAR"
      sets  = [["metric.type=\"${local.m}/notifier_events\" AND metric.label.dropped=monitoring.regex.full_match(\".+\")", "ALIGN_DELTA", "REDUCE_SUM", ["metric.label.dropped"], "$${metric.label.dropped}"]]
    },
    {
      title = "Bad relay frames by reason (logged lines)"
      plot  = "STACKED_BAR"
      sets  = [["metric.type=\"${local.m}/bad_frames\"", "ALIGN_DELTA", "REDUCE_SUM", ["metric.label.reason"], "$${metric.label.reason}"]]
    },
    {
      title = "Notifier: events with FCM retries, malformed events"
      plot  = "STACKED_BAR"
      sets = [
        ["metric.type=\"${local.m}/notifier_retries\"", "ALIGN_DELTA", "REDUCE_SUM", ["metric.label.kind"], "retried $${metric.label.kind}"],
        ["metric.type=\"${local.m}/malformed_events\"", "ALIGN_DELTA", "REDUCE_SUM", [], "malformed"],
      ]
    },
    {
      title = "Pub/Sub pushes to the notifier by response, and dead-letter backlog"
      plot  = "LINE"
      sets = [
        ["metric.type=\"pubsub.googleapis.com/subscription/push_request_count\" AND resource.type=\"pubsub_subscription\" AND resource.label.subscription_id=\"${google_pubsub_subscription.notifier_push.name}\"", "ALIGN_DELTA", "REDUCE_SUM", ["metric.label.response_class"], "push $${metric.label.response_class}"],
        ["metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND resource.type=\"pubsub_subscription\" AND resource.label.subscription_id=\"${google_pubsub_subscription.dead_letter_hold.name}\"", "ALIGN_MAX", "REDUCE_SUM", [], "dead-lettered, waiting"],
      ]
    },
    {
      title = "Connector instances"
      plot  = "LINE"
      sets  = [[local.connector_instances, "ALIGN_MAX", "REDUCE_SUM", ["metric.label.state"], "$${metric.label.state}"]]
    },
    {
      title = "Warning and error lines by message"
      plot  = "STACKED_BAR"
      sets  = [["metric.type=\"${local.m}/problem_lines\"", "ALIGN_DELTA", "REDUCE_SUM", ["metric.label.component", "metric.label.message"], "$${metric.label.component}: $${metric.label.message}"]]
    },
  ]

  dashboard_tiles = [
    for i, chart in local.charts : {
      xPos   = (i % 2) * 24
      yPos   = floor(i / 2) * 16
      width  = 24
      height = 16
      widget = {
        title = chart.title
        xyChart = merge(
          {
            chartOptions = { mode = "COLOR" }
            dataSets = [
              for s in chart.sets : {
                plotType           = chart.plot
                legendTemplate     = s[4]
                minAlignmentPeriod = lookup(chart, "period", "60s")
                timeSeriesQuery = {
                  timeSeriesFilter = {
                    filter = s[0]
                    aggregation = {
                      alignmentPeriod    = lookup(chart, "period", "60s")
                      perSeriesAligner   = s[1]
                      crossSeriesReducer = s[2]
                      groupByFields      = s[3]
                    }
                  }
                }
              }
            ]
          },
          can(chart.threshold) ? { thresholds = [{ value = chart.threshold, label = "alert", color = "RED" }] } : {},
        )
      }
    }
  ]
}

resource "google_monitoring_dashboard" "operations" {
  project = var.project_id
  dashboard_json = jsonencode({
    displayName  = "${var.name_prefix}: call pushes"
    mosaicLayout = { columns = 48, tiles = local.dashboard_tiles }
  })

  depends_on = [
    google_logging_metric.call_events,
    google_logging_metric.pushes,
    google_logging_metric.ring_latency,
    google_logging_metric.relays_connected,
    google_logging_metric.relay_connection_changes,
    google_logging_metric.relays_refused,
    google_logging_metric.recipients_skipped,
    google_logging_metric.notifier_events,
    google_logging_metric.bad_frames,
    google_logging_metric.notifier_retries,
    google_logging_metric.malformed_events,
    google_logging_metric.problem_lines,
    google_logging_metric.pbx_link_changes,
  ]
}
