# Notifier: Cloud Functions 2nd gen (python311), entry point on_call_event (CloudEvent signature).
#
# The function has no event_trigger: the push subscription in pubsub.tf delivers to its Cloud Run
# URL (with a dead-letter topic, which an Eventarc trigger's subscription cannot get from
# Terraform). GCF therefore deploys it as an HTTP function (FUNCTION_SIGNATURE_TYPE=http):
# main.py must register on_call_event with @functions_framework.cloud_event, which takes
# precedence over that variable and turns the raw push body into the CloudEvent.

locals {
  # Whitelist of what the function needs: main.py, requirements.txt and the functions/ package.
  # Tests, infra, tools, virtualenvs and node_modules can never slip into the archive; nor can a
  # locally built extension (the connector's raw gate: the notifier does not use it, and file()
  # reads text only).
  notifier_files = sort(concat(
    ["main.py", "requirements.txt"],
    [
      for f in fileset(local.repo_root, "functions/**") : f
      if !strcontains(f, "__pycache__") && !endswith(f, ".pyc") && !endswith(f, ".so")
    ],
  ))

  # Hash of the file names and contents (not of the zip bytes, which carry archive metadata):
  # it names the uploaded object, so any code change gives a new object and redeploys the function,
  # and an unchanged checkout deploys nothing.
  notifier_source_hash = sha256(join("\n", [
    for f in local.notifier_files : "${f}:${filesha256("${local.repo_root}/${f}")}"
  ]))
}

data "archive_file" "notifier_source" {
  type        = "zip"
  output_path = "${path.module}/.build/notifier-${substr(local.notifier_source_hash, 0, 16)}.zip"

  dynamic "source" {
    for_each = local.notifier_files
    content {
      filename = source.value
      content  = file("${local.repo_root}/${source.value}")
    }
  }
}

resource "google_storage_bucket" "sources" {
  #checkov:skip=CKV_GCP_62:Holds only build inputs re-creatable from git; Cloud Audit Logs cover access, a separate access-log bucket is not worth it.
  #checkov:skip=CKV_GCP_78:Objects are content-addressed (hash in the name) and never overwritten, so versioning adds nothing.
  project  = var.project_id
  name     = "${var.project_id}-${var.name_prefix}-sources"
  location = var.region

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = !var.deletion_protection

  lifecycle_rule {
    condition {
      age = var.source_retention_days
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.enabled]
}

resource "google_storage_bucket_object" "notifier_source" {
  bucket = google_storage_bucket.sources.name
  name   = "notifier/${local.notifier_source_hash}.zip"
  source = data.archive_file.notifier_source.output_path
}

resource "google_cloudfunctions2_function" "notifier" {
  project     = var.project_id
  name        = local.notifier_function_name
  location    = var.region
  description = "Turns call events into FCM pushes (incoming, cancel, missed) and call history."

  build_config {
    runtime         = "python311"
    entry_point     = "on_call_event"
    service_account = google_service_account.notifier_build.id
    # Build the function image into our repository, where the build account may write.
    docker_repository = google_artifact_registry_repository.images.id

    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        object = google_storage_bucket_object.notifier_source.name
      }
    }
  }

  service_config {
    service_account_email = google_service_account.notifier.email

    # Only Pub/Sub push (internal to the project) reaches it; run.invoker is granted to push_invoker only.
    ingress_settings               = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true

    min_instance_count = var.notifier_min_instances
    max_instance_count = var.notifier_max_instances
    # the notifier mostly waits on Firestore and FCM: several events per instance at once
    # (docs/benchmarks.md section 6; docs/deploy.md "Notifier concurrency")
    max_instance_request_concurrency = var.notifier_cpu == "0.583" ? 1 : var.notifier_concurrency
    available_cpu                    = var.notifier_cpu
    available_memory                 = var.notifier_memory
    timeout_seconds                  = var.notifier_timeout_seconds

    environment_variables = {
      GOOGLE_CLOUD_PROJECT      = var.project_id
      TENANCY                   = var.tenancy
      RING_WINDOW_SECONDS       = tostring(var.ring_window_seconds)
      DEFAULT_REGION            = var.default_region
      LOG_LEVEL                 = var.log_level
      MISSED_CALL_NOTIFICATIONS = tostring(var.missed_call_notifications)
      # functions-framework's gunicorn threads: as many as the events it may be given at once
      THREADS = tostring(var.notifier_cpu == "0.583" ? 1 : var.notifier_concurrency)
    }
  }

  depends_on = [
    google_project_service.enabled,
    google_project_iam_member.notifier,
    google_project_iam_member.notifier_fcm_sender,
    google_project_iam_member.notifier_build,
    google_storage_bucket_iam_member.notifier_build_source_reader,
    google_artifact_registry_repository_iam_member.notifier_build_image_writer,
  ]
}
