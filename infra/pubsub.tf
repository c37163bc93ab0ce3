# Call events: connector -> topic -> push subscription -> notifier.
#
# Why a push subscription of our own and not the function's Eventarc trigger (event_trigger):
# Eventarc creates and owns the subscription behind a Pub/Sub trigger, and Terraform cannot give it
# a dead-letter policy (nor message ordering or our retry backoff); a message the notifier keeps
# failing would be retried until the subscription's retention ends and then vanish silently.
# With our own subscription, every delivery setting is in this file: ordering per call (the
# connector publishes with ordering key = the call), a short exponential backoff (a retry is only
# worth it while the phone still rings), a dead-letter topic after max_delivery_attempts, and an
# OIDC-authenticated push to the function's Cloud Run URL, which only push_invoker may invoke.
#
# What the notifier receives: a raw push body {"message": {...}, "subscription": "..."}, not a
# CloudEvent. functions-framework (3.10.2, event_conversion.py) turns it into the CloudEvent the
# function expects when the function is registered with @functions_framework.cloud_event:
# type google.cloud.pubsub.topic.v1.messagePublished, id = messageId, time = publishTime,
# source //pubsub.googleapis.com/<the projects/P/topics/T found in the request path — hence the
# topic path appended to the push endpoint>, data {"message": {data, attributes, messageId,
# publishTime}}. It drops "subscription" and the message's "orderingKey": the notifier must not
# rely on either. Raising from the function returns HTTP 500, which Pub/Sub treats as a nack (retry).

resource "google_pubsub_topic" "call_events" {
  #checkov:skip=CKV_GCP_83:Call events live for seconds and hold no secrets; Google-managed encryption is enough.
  project = var.project_id
  name    = "${var.name_prefix}-call-events"

  message_retention_duration = "${var.topic_message_retention_seconds}s"

  depends_on = [google_project_service.enabled]
}

resource "google_pubsub_topic" "call_events_dead_letter" {
  #checkov:skip=CKV_GCP_83:Dead-lettered call events hold no secrets; Google-managed encryption is enough.
  project = var.project_id
  name    = "${var.name_prefix}-call-events-dead-letter"

  message_retention_duration = "604800s"

  depends_on = [google_project_service.enabled]
}

resource "google_pubsub_subscription" "notifier_push" {
  project = var.project_id
  name    = "${var.name_prefix}-notifier-push"
  topic   = google_pubsub_topic.call_events.id

  # Push deliveries wait for the HTTP response up to the ack deadline: cover the function timeout.
  ack_deadline_seconds       = var.notifier_timeout_seconds
  message_retention_duration = "${var.subscription_message_retention_seconds}s"
  enable_message_ordering    = true

  push_config {
    # The topic path in the URL lets functions-framework set the CloudEvent source (see above).
    push_endpoint = "${google_cloudfunctions2_function.notifier.service_config[0].uri}/${google_pubsub_topic.call_events.id}"

    oidc_token {
      service_account_email = google_service_account.push_invoker.email
      audience              = google_cloudfunctions2_function.notifier.service_config[0].uri
    }
  }

  retry_policy {
    minimum_backoff = "${var.retry_minimum_backoff_seconds}s"
    maximum_backoff = "${var.retry_maximum_backoff_seconds}s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.call_events_dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  expiration_policy {
    ttl = "" # never expires, even with no traffic
  }

  depends_on = [
    google_cloud_run_v2_service_iam_member.push_invoker,
    google_pubsub_topic_iam_member.dead_letter_publisher,
  ]
}

# Keeps what was dead-lettered for a week: inspect with `gcloud pubsub subscriptions pull`.
resource "google_pubsub_subscription" "dead_letter_hold" {
  project = var.project_id
  name    = "${var.name_prefix}-call-events-dead-letter-hold"
  topic   = google_pubsub_topic.call_events_dead_letter.id

  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  retain_acked_messages      = false

  expiration_policy {
    ttl = ""
  }
}
