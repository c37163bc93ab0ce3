# The app's own call endpoints (docs/app-endpoints.md): Cloud Functions 2nd gen (python311), named
# and placed as the MakeCall app calls them:
#   cancelIncomingCallNotification  Firebase callable (entry point of the same name in main.py)
#   sendIncomingCallNotification    HTTPS POST with the app's JSON body
# The app hard-codes region asia-northeast3 (FirebaseFunctions.instanceFor(region: ...) and the
# https://asia-northeast3-<project>.cloudfunctions.net/... URL): their region is a variable of its
# own so that the rest of the backend may live elsewhere. The app's Node functions of the same
# names must be deleted first (firebase functions:delete ..., docs/app-endpoints.md).
#
# Both take requests from the internet (phones), so Cloud Run's IAM check is opened to allUsers:
# the code does the checking. The callable verifies the caller's Firebase ID token and acts only
# on that user's own call in the delivery ledger; sendIncomingCallNotification acts only on calls
# this backend saw ring, for the users the tenancy rules allow, at most once per device.
#
# Same source archive as the notifier (notifier.tf: main.py, requirements.txt, functions/), built
# by the same build account; run by an account of their own: Firestore documents, FCM send, logs.

variable "app_endpoints_region" {
  description = "Region of cancelIncomingCallNotification and sendIncomingCallNotification: the one the MakeCall app calls (asia-northeast3 in its code)."
  type        = string
  default     = "asia-northeast3"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.app_endpoints_region))
    error_message = "app_endpoints_region must look like asia-northeast3."
  }
}

variable "app_endpoints_min_instances" {
  description = "Minimum warm instances of each app endpoint. sendIncomingCallNotification rings a DCMIWS user's other phones: a cold start is ringing time lost."
  type        = number
  default     = 0

  validation {
    condition     = var.app_endpoints_min_instances >= 0 && var.app_endpoints_min_instances <= 100
    error_message = "app_endpoints_min_instances must be between 0 and 100."
  }
}

variable "app_endpoints_max_instances" {
  description = "Maximum instances of each app endpoint (one request at a time per instance)."
  type        = number
  default     = 20

  validation {
    condition     = var.app_endpoints_max_instances >= 1 && var.app_endpoints_max_instances >= var.app_endpoints_min_instances && var.app_endpoints_max_instances <= 1000
    error_message = "app_endpoints_max_instances must be >= 1, >= app_endpoints_min_instances and <= 1000."
  }
}

locals {
  # Function name = entry point in main.py = the name the app calls.
  app_endpoints = {
    cancelIncomingCallNotification = "The app's callable: the signed-in user stopped their call on one device; cancel on that user's other devices."
    sendIncomingCallNotification   = "The app in DCMIWS mode: ring the user's other devices for a call this backend saw ring."
  }

  app_endpoints_project_roles = toset([
    "roles/datastore.user",
    "roles/logging.logWriter",
  ])
}

resource "google_service_account" "app_endpoints" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-app-fn"
  display_name = "Call-push app endpoints (Cloud Functions)"
  description  = "Runs cancelIncomingCallNotification and sendIncomingCallNotification."
}

resource "google_project_iam_member" "app_endpoints" {
  for_each = local.app_endpoints_project_roles

  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.app_endpoints.email}"
}

# FCM messages:send only (the notifier's custom role, iam.tf).
resource "google_project_iam_member" "app_endpoints_fcm_sender" {
  project = var.project_id
  role    = local.fcm_sender_role
  member  = "serviceAccount:${google_service_account.app_endpoints.email}"
}

resource "google_cloudfunctions2_function" "app_endpoint" {
  #checkov:skip=CKV_GCP_124:The MakeCall app calls these from phones over the internet; the code verifies ID tokens and acts only on calls the backend knows.
  for_each = local.app_endpoints

  project     = var.project_id
  name        = each.key
  location    = var.app_endpoints_region
  description = each.value

  build_config {
    runtime           = "python311"
    entry_point       = each.key
    service_account   = google_service_account.notifier_build.id
    docker_repository = google_artifact_registry_repository.images.id

    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        object = google_storage_bucket_object.notifier_source.name
      }
    }
  }

  service_config {
    service_account_email = google_service_account.app_endpoints.email

    # Phones call it over the internet; the code authenticates (see the top of this file).
    ingress_settings               = "ALLOW_ALL"
    all_traffic_on_latest_revision = true

    min_instance_count               = var.app_endpoints_min_instances
    max_instance_count               = var.app_endpoints_max_instances
    max_instance_request_concurrency = 1
    available_memory                 = var.notifier_memory
    # sendIncomingCallNotification waits up to 4 s for the connector's ring, then rings
    timeout_seconds = 30

    environment_variables = {
      GOOGLE_CLOUD_PROJECT      = var.project_id
      TENANCY                   = var.tenancy
      RING_WINDOW_SECONDS       = tostring(var.ring_window_seconds)
      DEFAULT_REGION            = var.default_region
      LOG_LEVEL                 = var.log_level
      MISSED_CALL_NOTIFICATIONS = tostring(var.missed_call_notifications)
    }
  }

  depends_on = [
    google_project_service.enabled,
    google_project_iam_member.app_endpoints,
    google_project_iam_member.app_endpoints_fcm_sender,
    google_project_iam_member.notifier_build,
    google_storage_bucket_iam_member.notifier_build_source_reader,
    google_artifact_registry_repository_iam_member.notifier_build_image_writer,
  ]
}

# Anyone may reach the endpoints (the app's users are Firebase users, not Google identities);
# who may act on which call is decided in the code.
resource "google_cloud_run_v2_service_iam_member" "app_endpoint_public" {
  for_each = google_cloudfunctions2_function.app_endpoint

  project  = var.project_id
  location = each.value.location
  name     = each.value.service_config[0].service
  role     = "roles/run.invoker"
  member   = "allUsers"
}

output "app_endpoint_urls" {
  description = "URLs of the app's endpoints (the app calls them by name and region)."
  value       = { for name, fn in google_cloudfunctions2_function.app_endpoint : name => fn.service_config[0].uri }
}
