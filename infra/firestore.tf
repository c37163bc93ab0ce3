# Firestore: the app's database and security rules stay the app's. This backend adds four
# server-only collections (push_dedupe, relay_status, relay_leases, connector_instances); their
# rule lines are in firestore.rules.backend, to merge into the app's rules (never deployed from
# here).
#
# Indexes: none to create. The backend's queries are
#   my_extensions where accountCode in [...]   (single field)
#   fcm_tokens    where userId in [...]        (single field)
#   users         full collection listen
#   call_history  get by document ID, and where linkedid == ... (single field)
# and Firestore's automatic single-field indexes serve all of them; a composite index would only
# be needed to combine filters/orderings on several fields.

resource "google_firestore_database" "app" {
  count = var.create_firestore_database ? 1 : 0

  project     = var.project_id
  name        = var.firestore_database
  location_id = var.firestore_location
  type        = "FIRESTORE_NATIVE"

  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = "DELETE_PROTECTION_ENABLED"
  # The database outlives this stack: destroy leaves it (and the app's data) alone.
  deletion_policy = "ABANDON"

  depends_on = [google_project_service.enabled]
}

# Dedupe records expire by themselves: Firestore deletes a push_dedupe document once its
# expiresAt (a Timestamp) is in the past (usually within a day). The field is also exempted from
# indexing: it is never queried, and a monotonically rising indexed timestamp creates hotspots.
resource "google_firestore_field" "push_dedupe_ttl" {
  project    = var.project_id
  database   = var.firestore_database
  collection = "push_dedupe"
  field      = "expiresAt"

  ttl_config {}

  index_config {}

  depends_on = [google_project_service.enabled, google_firestore_database.app]
}

# The write-once takeover markers under relay_leases/{relay}/takeovers (they make a lease
# takeover atomic) carry expiresAt a week ahead; this policy deletes them afterwards.
resource "google_firestore_field" "lease_takeovers_ttl" {
  project    = var.project_id
  database   = var.firestore_database
  collection = "takeovers"
  field      = "expiresAt"

  ttl_config {}

  index_config {}

  depends_on = [google_project_service.enabled, google_firestore_database.app]
}

# Connector heartbeats (connector_instances/{session}, docs/leases.md): one per connector
# process, renewed every few seconds while it lives. A dead instance's record is only clutter
# (absent counts as dead), so this policy deletes it once its expiresAt has passed.
resource "google_firestore_field" "connector_instances_ttl" {
  project    = var.project_id
  database   = var.firestore_database
  collection = "connector_instances"
  field      = "expiresAt"

  ttl_config {}

  index_config {}

  depends_on = [google_project_service.enabled, google_firestore_database.app]
}

# Write-once version markers under push_dedupe/{call}/versions (they make ledger updates exact
# even where transactions are not isolated) expire with their record.
resource "google_firestore_field" "ledger_versions_ttl" {
  project    = var.project_id
  database   = var.firestore_database
  collection = "versions"
  field      = "expiresAt"

  ttl_config {}

  index_config {}

  depends_on = [google_project_service.enabled, google_firestore_database.app]
}
