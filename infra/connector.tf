# Connector: a long-lived Cloud Run service that holds one WebSocket per relay and publishes call
# events. It serves nothing but GET /healthz; Cloud Run sets PORT itself (reserved: not set here).

resource "google_cloud_run_v2_service" "connector" {
  project  = var.project_id
  name     = local.connector_service_name
  location = var.region

  description = "Watches the PBX relays (amiws) and publishes call events."

  # Nothing outside the project calls it; the probes are Cloud Run's own and ignore ingress.
  ingress             = "INGRESS_TRAFFIC_INTERNAL_ONLY"
  deletion_protection = var.deletion_protection

  template {
    service_account       = google_service_account.connector.email
    execution_environment = "EXECUTION_ENVIRONMENT_GEN2"
    # Connections are long-lived WebSockets opened by the service itself, not requests.
    timeout = "3600s"

    scaling {
      min_instance_count = var.connector_min_instances
      max_instance_count = var.connector_max_instances
    }

    containers {
      name  = "connector"
      image = local.connector_image

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.connector_cpu
          memory = var.connector_memory
        }
        # CPU always allocated: the relay sockets are read between (and without) requests.
        cpu_idle          = false
        startup_cpu_boost = true
      }

      env {
        name  = "GOOGLE_CLOUD_PROJECT"
        value = var.project_id
      }
      env {
        # Which relays to watch and whom a call may ring: the pbx_tenants directory (default).
        name  = "TENANCY"
        value = var.tenancy
      }
      env {
        # Non-public networks a relay may be in; empty = public addresses only.
        name  = "RELAY_ALLOWED_NETWORKS"
        value = join(",", var.relay_allowed_networks)
      }
      env {
        # Short topic ID; the code also accepts projects/P/topics/T.
        name  = "CALL_EVENTS_TOPIC"
        value = google_pubsub_topic.call_events.name
      }
      env {
        name  = "TRUNK_CONTEXT_PREFIXES"
        value = join(",", var.trunk_context_prefixes)
      }
      env {
        name  = "RING_WINDOW_SECONDS"
        value = tostring(var.ring_window_seconds)
      }
      env {
        name  = "LOG_LEVEL"
        value = var.log_level
      }
      env {
        name  = "DEFAULT_REGION"
        value = var.default_region
      }
      env {
        # Relay URLs with credentials come from Secret Manager, never from plain env. "latest":
        # after adding a version, start a new revision (docs/deploy.md) to load it.
        name = "PBX_RELAYS"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.pbx_relays.secret_id
            version = "latest"
          }
        }
      }

      startup_probe {
        http_get {
          path = "/healthz"
        }
        initial_delay_seconds = 0
        period_seconds        = 3
        timeout_seconds       = 2
        failure_threshold     = 20
      }

      liveness_probe {
        http_get {
          path = "/healthz"
        }
        period_seconds    = 15
        timeout_seconds   = 5
        failure_threshold = 4
      }
    }
  }

  traffic {
    type    = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
    percent = 100
  }

  depends_on = [
    google_project_service.enabled,
    google_project_iam_member.connector,
    google_pubsub_topic_iam_member.connector_publisher,
    google_secret_manager_secret_iam_member.connector_pbx_relays,
    google_secret_manager_secret_iam_member.connector_relay_credentials,
    google_secret_manager_secret_version.pbx_relays_placeholder,
  ]
}
