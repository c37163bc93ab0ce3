# ---------------------------------------------------------------------------
# Project and naming
# ---------------------------------------------------------------------------

variable "project_id" {
  description = "ID of the Firebase/Google Cloud project the MakeCall app already uses (Firestore, FCM). Everything is deployed into it."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project ID: 6-30 characters, lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "region" {
  description = "Region of the connector, the notifier, the image repository and the source bucket."
  type        = string
  default     = "asia-northeast3"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must look like asia-northeast3 or europe-west1."
  }
}

variable "name_prefix" {
  description = "Prefix of every resource name (service accounts, topics, services). Keep it short: service account IDs are limited to 30 characters."
  type        = string
  default     = "callpush"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,11}$", var.name_prefix))
    error_message = "name_prefix must be 2-12 characters: lowercase letters, digits, hyphens, starting with a letter."
  }
}

variable "labels" {
  description = "Extra labels added to every resource that supports labels."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k, v in var.labels : can(regex("^[a-z][a-z0-9_-]{0,62}$", k)) && can(regex("^[a-z0-9_-]{0,63}$", v))])
    error_message = "Label keys must start with a lowercase letter; keys and values may hold lowercase letters, digits, '_' and '-' (max 63)."
  }
}

variable "deletion_protection" {
  description = "Protect the connector Cloud Run service from `terraform destroy`. Set to false only to tear a test project down."
  type        = bool
  default     = true
}

# ---------------------------------------------------------------------------
# Settings read by the code (see functions/settings.py)
# ---------------------------------------------------------------------------

variable "ring_window_seconds" {
  description = "How long a call may ring (RING_WINDOW_SECONDS): events older than this never ring a device; also the FCM TTL of incoming-call pushes."
  type        = number
  default     = 60

  validation {
    condition     = var.ring_window_seconds >= 10 && var.ring_window_seconds <= 600 && floor(var.ring_window_seconds) == var.ring_window_seconds
    error_message = "ring_window_seconds must be a whole number between 10 and 600."
  }
}

variable "trunk_context_prefixes" {
  description = "Asterisk dialplan context prefixes of inbound trunk channels (TRUNK_CONTEXT_PREFIXES), e.g. [\"trk\"] or [\"from-pstn\", \"from-trunk\"] on FreePBX."
  type        = list(string)
  default     = ["trk"]

  validation {
    condition     = length(var.trunk_context_prefixes) > 0 && alltrue([for p in var.trunk_context_prefixes : can(regex("^[A-Za-z0-9_.-]+$", p))])
    error_message = "trunk_context_prefixes must hold at least one prefix made of letters, digits, '_', '.' and '-' (no commas or spaces)."
  }
}

variable "default_region" {
  description = "ISO 3166 region used to normalize phone numbers written without a country code (DEFAULT_REGION)."
  type        = string
  default     = "KR"

  validation {
    condition     = can(regex("^[A-Z]{2}$", var.default_region))
    error_message = "default_region must be a two-letter uppercase ISO 3166 code such as KR."
  }
}

variable "log_level" {
  description = "Log level of both workloads (LOG_LEVEL)."
  type        = string
  default     = "INFO"

  validation {
    condition     = contains(["DEBUG", "INFO", "WARNING", "ERROR"], var.log_level)
    error_message = "log_level must be one of DEBUG, INFO, WARNING, ERROR."
  }
}

variable "missed_call_notifications" {
  description = "Send a visible missed-call notification when a call ends unanswered (MISSED_CALL_NOTIFICATIONS)."
  type        = bool
  default     = true
}

variable "tenancy" {
  description = "Who may be rung from which PBX (TENANCY, both workloads): \"directory\" (default) trusts only the backend-owned pbx_tenants directory (relays, numbers, members; users' own relay fields are ignored); \"user_documents\" uses the relay fields users write into their own users/{uid} documents (older deployments, weaker: see docs/deploy.md \"Tenancy\")."
  type        = string
  default     = "directory"

  validation {
    condition     = contains(["directory", "user_documents"], var.tenancy)
    error_message = "tenancy must be directory or user_documents."
  }
}

variable "relay_allowed_networks" {
  description = "Private networks the connector may open relay connections to (RELAY_ALLOWED_NETWORKS, CIDRs such as [\"10.8.0.0/24\"]). Empty (default): public addresses only; loopback, private, link-local (the metadata server), CGNAT and other non-public addresses are refused. Only list a range a relay is really reached through (e.g. over a VPC connector); never a range holding 169.254.169.254."
  type        = list(string)
  default     = []

  validation {
    # cidrhost() parses IPv4 and IPv6 prefixes and fails on anything else (bare addresses,
    # commas, spaces), so the joined env value always splits back into these entries.
    condition     = alltrue([for n in var.relay_allowed_networks : can(cidrhost(n, 0)) && trimspace(n) == n])
    error_message = "relay_allowed_networks entries must be CIDRs such as 10.8.0.0/24 or fd00::/64 (address/prefix length, no spaces)."
  }

  validation {
    # A /0 would allow every address, the metadata server included: the check would be gone.
    condition     = alltrue([for n in var.relay_allowed_networks : !can(regex("/0+$", n))])
    error_message = "relay_allowed_networks must not hold a /0 network: list the ranges the relays are in."
  }
}

# ---------------------------------------------------------------------------
# Connector (Cloud Run service)
# ---------------------------------------------------------------------------

variable "connector_image_tag" {
  description = "Tag of the connector image in the Artifact Registry repository; Cloud Build passes the commit SHA."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.connector_image_tag)) && var.connector_image_tag != "latest"
    error_message = "connector_image_tag must be a Docker tag (a commit SHA), not 'latest'."
  }
}

variable "connector_min_instances" {
  description = "Minimum connector instances. At least 1: the connector holds the relay WebSockets and must always run (the alert \"no connector instance\" watches it). It is the number of shards (the connector serves no requests, so Cloud Run stays at the minimum): ceil(relays / 1000) + 1 survives one instance lost; docs/deploy.md \"Connector sizing\"."
  type        = number
  default     = 1

  validation {
    condition     = var.connector_min_instances >= 1 && var.connector_min_instances <= 10
    error_message = "connector_min_instances must be between 1 and 10."
  }
}

variable "connector_max_instances" {
  description = "Maximum connector instances. Every instance holds a share of the relays through relay_leases (docs/leases.md), so more instances spread the relays; sizing in docs/deploy.md."
  type        = number
  default     = 3

  validation {
    condition     = var.connector_max_instances >= var.connector_min_instances && var.connector_max_instances <= 20
    error_message = "connector_max_instances must be >= connector_min_instances and <= 20."
  }
}

variable "connector_cpu" {
  description = "CPU limit of a connector instance (always allocated)."
  type        = string
  default     = "1"

  validation {
    condition     = contains(["1", "2", "4"], var.connector_cpu)
    error_message = "connector_cpu must be 1, 2 or 4 (CPU always allocated needs at least 1 vCPU)."
  }
}

variable "connector_memory" {
  description = "Memory limit of a connector instance."
  type        = string
  default     = "512Mi"

  validation {
    condition     = can(regex("^[0-9]+(Mi|Gi)$", var.connector_memory))
    error_message = "connector_memory must be like 512Mi or 1Gi."
  }
}

variable "relay_credential_secrets" {
  description = "Secret Manager secret IDs (in project_id) that hold relay credentials (\"id:password\") named by the PBX directory, pbx_tenants/{tenantId}.pbx[].authSecret = projects/<project>/secrets/<ID>/versions/latest. The connector's service account gets roles/secretmanager.secretAccessor on each of these secrets only. Create the secrets and their versions with gcloud first (docs/deploy.md); Terraform never sees a value."
  type        = list(string)
  default     = []

  validation {
    # Secret IDs only (never a value: ':' and '@' are not allowed in an ID).
    condition     = alltrue([for s in var.relay_credential_secrets : can(regex("^[A-Za-z0-9_-]{1,255}$", s))])
    error_message = "relay_credential_secrets entries must be secret IDs (letters, digits, '_' and '-'), not names with projects/ or versions/, and never values."
  }

  validation {
    condition     = length(distinct(var.relay_credential_secrets)) == length(var.relay_credential_secrets)
    error_message = "relay_credential_secrets must not list a secret twice."
  }
}

# ---------------------------------------------------------------------------
# Notifier (Cloud Functions 2nd gen)
# ---------------------------------------------------------------------------

variable "notifier_min_instances" {
  description = "Minimum warm notifier instances. A cold start (several seconds) is ringing time lost; 1 keeps one instance warm."
  type        = number
  default     = 1

  validation {
    condition     = var.notifier_min_instances >= 0 && var.notifier_min_instances <= 100
    error_message = "notifier_min_instances must be between 0 and 100."
  }
}

variable "notifier_max_instances" {
  description = "Maximum notifier instances."
  type        = number
  default     = 20

  validation {
    condition     = var.notifier_max_instances >= 1 && var.notifier_max_instances >= var.notifier_min_instances && var.notifier_max_instances <= 1000
    error_message = "notifier_max_instances must be >= 1, >= notifier_min_instances and <= 1000."
  }
}

variable "notifier_memory" {
  description = "Memory of a notifier instance."
  type        = string
  default     = "512Mi"

  validation {
    condition     = can(regex("^[0-9]+(Mi|Gi|M|G)$", var.notifier_memory))
    error_message = "notifier_memory must be like 512Mi or 1Gi."
  }
}

variable "notifier_concurrency" {
  description = "Call events one notifier instance handles at once (functions-framework threads). The notifier mostly waits on Firestore and FCM: 8 on 1 vCPU delivered a burst of 200 ringing calls within one second (3 devices each) with p99 368 ms on one instance, where 1 queued them to p99 1.3 s (docs/benchmarks.md, section 6)."
  type        = number
  default     = 8

  validation {
    condition     = var.notifier_concurrency >= 1 && var.notifier_concurrency <= 80
    error_message = "notifier_concurrency must be between 1 and 80."
  }
}

variable "notifier_cpu" {
  description = "vCPUs of a notifier instance; Cloud Functions allows a concurrency above 1 only with at least 1."
  type        = string
  default     = "1"

  validation {
    condition     = contains(["0.583", "1", "2", "4"], var.notifier_cpu)
    error_message = "notifier_cpu must be one of 0.583, 1, 2, 4."
  }
}

variable "notifier_timeout_seconds" {
  description = "Notifier execution timeout; also the ack deadline of the push subscription."
  type        = number
  default     = 60

  validation {
    condition     = var.notifier_timeout_seconds >= 10 && var.notifier_timeout_seconds <= 540
    error_message = "notifier_timeout_seconds must be between 10 and 540."
  }
}

variable "fcm_sender_role" {
  description = "Role that lets the notifier send FCM messages. Empty (default) creates a custom role holding only cloudmessaging.messages.create; set roles/firebasecloudmessaging.admin if custom roles are not allowed."
  type        = string
  default     = ""

  validation {
    condition     = var.fcm_sender_role == "" || can(regex("^(roles/|projects/|organizations/)", var.fcm_sender_role))
    error_message = "fcm_sender_role must be empty or a role name (roles/..., projects/.../roles/..., organizations/.../roles/...)."
  }
}

# ---------------------------------------------------------------------------
# Pub/Sub delivery
# ---------------------------------------------------------------------------

variable "topic_message_retention_seconds" {
  description = "How long the call-events topic keeps messages (lets an operator seek a subscription back after an outage)."
  type        = number
  default     = 86400

  validation {
    condition     = var.topic_message_retention_seconds >= 600 && var.topic_message_retention_seconds <= 2678400
    error_message = "topic_message_retention_seconds must be between 600 (10 minutes) and 2678400 (31 days)."
  }
}

variable "subscription_message_retention_seconds" {
  description = "How long the notifier subscription keeps unacknowledged messages (stale incoming events are dropped by the notifier anyway)."
  type        = number
  default     = 86400

  validation {
    condition     = var.subscription_message_retention_seconds >= 600 && var.subscription_message_retention_seconds <= 604800
    error_message = "subscription_message_retention_seconds must be between 600 and 604800 (7 days)."
  }
}

variable "max_delivery_attempts" {
  description = "Deliveries of one message to the notifier before it goes to the dead-letter topic."
  type        = number
  default     = 10

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be between 5 and 100 (Pub/Sub limits)."
  }
}

variable "retry_minimum_backoff_seconds" {
  description = "Minimum delay before Pub/Sub redelivers a message the notifier failed (raised)."
  type        = number
  default     = 1

  validation {
    condition     = var.retry_minimum_backoff_seconds >= 0 && var.retry_minimum_backoff_seconds <= 600
    error_message = "retry_minimum_backoff_seconds must be between 0 and 600."
  }
}

variable "retry_maximum_backoff_seconds" {
  description = "Maximum delay between redeliveries. Keep it short: a retry is only useful while the call still rings."
  type        = number
  default     = 10

  validation {
    condition     = var.retry_maximum_backoff_seconds >= var.retry_minimum_backoff_seconds && var.retry_maximum_backoff_seconds <= 600
    error_message = "retry_maximum_backoff_seconds must be >= retry_minimum_backoff_seconds and <= 600."
  }
}

# ---------------------------------------------------------------------------
# Firestore and sources
# ---------------------------------------------------------------------------

variable "firestore_database" {
  description = "Firestore database the app uses."
  type        = string
  default     = "(default)"

  validation {
    condition     = var.firestore_database == "(default)" || can(regex("^[a-z][a-z0-9-]{3,62}$", var.firestore_database))
    error_message = "firestore_database must be (default) or a database ID."
  }
}

variable "create_firestore_database" {
  description = "Create the Firestore database (Native mode). Only for an empty test project: the app's project already has one."
  type        = bool
  default     = false
}

variable "manage_firestore_rules" {
  description = "Deploy infra/firestore.rules as the Firestore security rules of firestore_database (a google_firebaserules_ruleset and the cloud.firestore release). WARNING: true REPLACES the rules the app has deployed with infra/firestore.rules, which covers the app's collections too (docs/rules.md): compare it with the deployed rules first, and import the existing release once (docs/deploy.md). false (default): Terraform never touches the rules; merge infra/firestore.rules.backend into the app's rules by hand."
  type        = bool
  default     = false
}

variable "firestore_location" {
  description = "Location of the Firestore database when create_firestore_database is true."
  type        = string
  default     = "asia-northeast3"

  validation {
    condition     = can(regex("^[a-z0-9-]+$", var.firestore_location))
    error_message = "firestore_location must be a Firestore location such as asia-northeast3 or nam5."
  }
}

variable "source_retention_days" {
  description = "Days the notifier source archives are kept in the source bucket (Terraform uploads a missing one again)."
  type        = number
  default     = 90

  validation {
    condition     = var.source_retention_days >= 7 && var.source_retention_days <= 3650
    error_message = "source_retention_days must be between 7 and 3650."
  }
}

# ---------------------------------------------------------------------------
# Monitoring (monitoring.tf, alerts.tf, dashboard.tf; docs/runbook.md)
# ---------------------------------------------------------------------------

variable "alert_notification_channels" {
  description = "Notification channels every alert policy notifies: full IDs, projects/<project>/notificationChannels/<id> (create them in the console or with gcloud beta monitoring channels create). Empty: the alerts still open incidents, visible in the console, but notify nobody."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.alert_notification_channels : can(regex("^projects/[^/]+/notificationChannels/[0-9]+$", c))])
    error_message = "alert_notification_channels must be full channel IDs: projects/<project>/notificationChannels/<number>."
  }
}

variable "push_failure_ratio_threshold" {
  description = "The incoming-push alert fires when more than this share of incoming-call pushes fail (transient after retries, or rejected) for 10 minutes. Dead tokens are not failures: they are pruned."
  type        = number
  default     = 0.2

  validation {
    condition     = var.push_failure_ratio_threshold > 0 && var.push_failure_ratio_threshold < 1
    error_message = "push_failure_ratio_threshold must be between 0 and 1 (exclusive)."
  }
}

variable "ring_latency_p95_threshold_ms" {
  description = "The ring-latency alert fires when the 95th percentile of PBX time to FCM answer (the notifier's latency_ms) is above this for 5 minutes."
  type        = number
  default     = 2000

  validation {
    condition     = var.ring_latency_p95_threshold_ms >= 100 && var.ring_latency_p95_threshold_ms <= 60000
    error_message = "ring_latency_p95_threshold_ms must be between 100 and 60000."
  }
}

variable "runbook_url" {
  description = "Where operators read docs/runbook.md (e.g. its URL in your git host); each alert's documentation links <runbook_url>#<section>."
  type        = string
  default     = "docs/runbook.md"

  validation {
    condition     = length(trimspace(var.runbook_url)) > 0 && !strcontains(var.runbook_url, "#")
    error_message = "runbook_url must be non-empty and without a #fragment (each alert adds its own)."
  }
}
