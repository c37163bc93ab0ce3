output "connector_service" {
  description = "Name of the connector Cloud Run service (logs: resource.labels.service_name)."
  value       = google_cloud_run_v2_service.connector.name
}

output "connector_image" {
  description = "Image the connector runs (tag = commit SHA)."
  value       = local.connector_image
}

output "connector_service_account" {
  description = "Service account the connector runs as."
  value       = google_service_account.connector.email
}

output "notifier_function" {
  description = "Name of the notifier function."
  value       = google_cloudfunctions2_function.notifier.name
}

output "notifier_uri" {
  description = "Cloud Run URL of the notifier (internal ingress; only the push identity may invoke it)."
  value       = google_cloudfunctions2_function.notifier.service_config[0].uri
}

output "notifier_service_account" {
  description = "Service account the notifier runs as."
  value       = google_service_account.notifier.email
}

output "notifier_source_object" {
  description = "GCS object of the deployed notifier source (name = content hash)."
  value       = "gs://${google_storage_bucket.sources.name}/${google_storage_bucket_object.notifier_source.name}"
}

output "call_events_topic" {
  description = "Short ID of the call-events topic (CALL_EVENTS_TOPIC)."
  value       = google_pubsub_topic.call_events.name
}

output "notifier_subscription" {
  description = "Push subscription that delivers call events to the notifier."
  value       = google_pubsub_subscription.notifier_push.name
}

output "dead_letter_topic" {
  description = "Topic that receives call events the notifier failed max_delivery_attempts times."
  value       = google_pubsub_topic.call_events_dead_letter.name
}

output "dead_letter_subscription" {
  description = "Pull subscription that keeps dead-lettered events for 7 days."
  value       = google_pubsub_subscription.dead_letter_hold.name
}

output "image_repository" {
  description = "Docker repository for the connector image (push target of Cloud Build)."
  value       = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}

output "pbx_relays_secret" {
  description = "Secret Manager secret holding PBX_RELAYS."
  value       = google_secret_manager_secret.pbx_relays.secret_id
}

output "firestore_rules_ruleset" {
  description = "Ruleset Terraform released as the Firestore rules (from infra/firestore.rules); null when manage_firestore_rules is false and the app deploys its own rules."
  value       = one(google_firebaserules_ruleset.firestore[*].name)
}

output "relay_credential_secrets" {
  description = "Secrets (IDs) the connector may read relay credentials from; name them in pbx_tenants as projects/<project>/secrets/<ID>/versions/latest."
  value       = sort(keys(google_secret_manager_secret_iam_member.connector_relay_credentials))
}
