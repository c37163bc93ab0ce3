# Incoming-call push backend: connector (Cloud Run) -> Pub/Sub -> notifier (Cloud Functions gen2) -> FCM.
# Files: main.tf (APIs, locals, image repository, secret), iam.tf, pubsub.tf, connector.tf,
# notifier.tf, firestore.tf, outputs.tf. See docs/deploy.md for the operator walk-through.

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  repo_root = abspath("${path.module}/..")

  # Pub/Sub's service agent: it writes to the dead-letter topic and mints the push OIDC tokens.
  pubsub_service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"

  connector_service_name = "${var.name_prefix}-connector"
  notifier_function_name = "${var.name_prefix}-notifier"

  connector_image = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}/connector:${var.connector_image_tag}"

  # secretmanager: PBX_RELAYS and the relay credentials named by pbx_tenants (authSecret).
  # firebaserules: only when Terraform deploys the Firestore rules (manage_firestore_rules).
  apis = setunion([
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "fcm.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ], var.manage_firestore_rules ? ["firebaserules.googleapis.com"] : [])
}

resource "google_project_service" "enabled" {
  for_each = local.apis

  project = var.project_id
  service = each.value

  # Never switch an API off on destroy: the app's own project uses several of them.
  disable_on_destroy         = false
  disable_dependent_services = false
}

# ---------------------------------------------------------------------------
# Artifact Registry: the connector image (tag = commit SHA, pushed by Cloud Build)
# ---------------------------------------------------------------------------

resource "google_artifact_registry_repository" "images" {
  #checkov:skip=CKV_GCP_84:The images hold code only (settings and credentials come from env and Secret Manager); Google-managed encryption is enough, a CMEK key would add cost and a key-management duty.
  project       = var.project_id
  location      = var.region
  repository_id = "${var.name_prefix}-images"
  description   = "Connector images (tagged by commit SHA) and the notifier function images built by Cloud Functions."
  format        = "DOCKER"

  # Tags stay mutable so that a retried build of the same commit can push its image again.
  docker_config {
    immutable_tags = false
  }

  cleanup_policy_dry_run = false

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 20
    }
  }

  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      older_than = "7776000s" # 90 days; the 20 most recent images stay for rollbacks
    }
  }

  depends_on = [google_project_service.enabled]
}

# ---------------------------------------------------------------------------
# Secret Manager: static relay list (PBX_RELAYS) for relays whose credentials are not in Firestore
# ---------------------------------------------------------------------------

resource "google_secret_manager_secret" "pbx_relays" {
  project   = var.project_id
  secret_id = "${var.name_prefix}-pbx-relays"

  replication {
    auto {}
  }

  depends_on = [google_project_service.enabled]
}

# The relay list never passes through Terraform (nor its state, nor Cloud Build): operators add
# versions with gcloud (docs/deploy.md) and the connector reads "latest". Terraform only writes a
# first placeholder version so that Cloud Run can start before any relay is configured: a lone
# space, which the connector reads as "no static relay" (settings._csv drops blank entries).
# Terraform never rewrites it: the placeholder's data never changes.
resource "google_secret_manager_secret_version" "pbx_relays_placeholder" {
  secret      = google_secret_manager_secret.pbx_relays.id
  secret_data = " "
}
