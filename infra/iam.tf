# One service account per workload, each with the least it needs.
#
#   connector       runs the Cloud Run service: publish to the call-events topic (that topic only),
#                   read/write Firestore, read the PBX_RELAYS secret and the relay credential
#                   secrets in var.relay_credential_secrets (those secrets only), write logs/metrics.
#   notifier        runs the function: read/write Firestore, send FCM messages, write logs.
#   push_invoker    identity of the Pub/Sub push subscription: invoke the notifier (that service only).
#   notifier_build  builds the function's container from the source zip (Cloud Build): logs,
#                   push to our image repository, read the source bucket.
#
# Firestore IAM cannot be scoped to collections: roles/datastore.user is the narrowest role that
# reads and writes documents; the backend-only collections are closed to clients by the security
# rules in firestore.rules.backend.

resource "google_service_account" "connector" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-connector"
  display_name = "Call-push connector (Cloud Run)"
  description  = "Holds the relay WebSockets and publishes call events."
}

resource "google_service_account" "notifier" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-notifier"
  display_name = "Call-push notifier (Cloud Functions)"
  description  = "Turns call events into FCM pushes and call history."
}

resource "google_service_account" "push_invoker" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-push-invoker"
  display_name = "Call-push Pub/Sub push identity"
  description  = "OIDC identity of the push subscription; may only invoke the notifier."
}

resource "google_service_account" "notifier_build" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-fn-build"
  display_name = "Call-push notifier build"
  description  = "Builds the notifier function from its source archive."
}

locals {
  connector_project_roles = toset([
    "roles/datastore.user",
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
  ])

  notifier_project_roles = toset([
    "roles/datastore.user",
    "roles/logging.logWriter",
  ])

  # Narrower than roles/cloudbuild.builds.builder: write build logs (project), push the built
  # image to our repository only, read the source archives only (see the two resources below).
  notifier_build_project_roles = toset([
    "roles/logging.logWriter",
  ])

  fcm_sender_role = var.fcm_sender_role != "" ? var.fcm_sender_role : google_project_iam_custom_role.fcm_sender[0].name
}

# FCM HTTP v1 messages:send needs only cloudmessaging.messages.create; the predefined
# roles/firebasecloudmessaging.admin grants more (topic management and so on).
resource "google_project_iam_custom_role" "fcm_sender" {
  count = var.fcm_sender_role == "" ? 1 : 0

  project     = var.project_id
  role_id     = replace("${var.name_prefix}_fcmSender", "-", "_")
  title       = "FCM message sender (${var.name_prefix})"
  description = "Send messages through the FCM HTTP v1 API, nothing else."
  permissions = ["cloudmessaging.messages.create"]
}

resource "google_project_iam_member" "connector" {
  for_each = local.connector_project_roles

  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.connector.email}"
}

resource "google_project_iam_member" "notifier" {
  for_each = local.notifier_project_roles

  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.notifier.email}"
}

# Separate from the for_each above: the custom role's name is only known after it exists.
resource "google_project_iam_member" "notifier_fcm_sender" {
  project = var.project_id
  role    = local.fcm_sender_role
  member  = "serviceAccount:${google_service_account.notifier.email}"
}

resource "google_project_iam_member" "notifier_build" {
  for_each = local.notifier_build_project_roles

  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.notifier_build.email}"
}

# Connector: publish to the call-events topic only.
resource "google_pubsub_topic_iam_member" "connector_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.call_events.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.connector.email}"
}

# Connector: read its own secret only.
resource "google_secret_manager_secret_iam_member" "connector_pbx_relays" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.pbx_relays.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.connector.email}"
}

# Connector: read the relay credentials the PBX directory names (pbx_tenants/{tenant}.pbx[].
# authSecret = projects/P/secrets/<id>/versions/latest, holding "id:password"), one binding per
# listed secret. Not project-wide on purpose: whoever edits pbx_tenants chooses which secret
# versions the connector reads, and a project-wide secretAccessor would let an entry name any
# secret in the project. The secrets and their values are created with gcloud (docs/deploy.md):
# Terraform only grants, and a secret must exist before its ID is listed here.
resource "google_secret_manager_secret_iam_member" "connector_relay_credentials" {
  for_each = toset(var.relay_credential_secrets)

  project   = var.project_id
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.connector.email}"

  depends_on = [google_project_service.enabled]
}

# Push identity: invoke the notifier's Cloud Run service only.
resource "google_cloud_run_v2_service_iam_member" "push_invoker" {
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.notifier.service_config[0].service
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.push_invoker.email}"
}

# Pub/Sub service agent: mint OIDC tokens for the push identity (needed in projects created
# before April 2021, harmless after), publish dead letters, and acknowledge forwarded messages.
resource "google_service_account_iam_member" "pubsub_token_creator" {
  service_account_id = google_service_account.push_invoker.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent

  depends_on = [google_project_service.enabled]
}

resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.call_events_dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_source_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.notifier_push.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

# Function build: push the function image into our repository (build_config.docker_repository).
resource "google_artifact_registry_repository_iam_member" "notifier_build_image_writer" {
  project    = var.project_id
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = "serviceAccount:${google_service_account.notifier_build.email}"
}

# Function build: read the source archives.
resource "google_storage_bucket_iam_member" "notifier_build_source_reader" {
  bucket = google_storage_bucket.sources.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.notifier_build.email}"
}
