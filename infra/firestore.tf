# Firestore: the app's database stays the app's. This backend adds five server-only collections
# (pbx_tenants, push_dedupe, relay_status, relay_leases, connector_instances). Security rules:
#   manage_firestore_rules = false (default)  Terraform never touches them; firestore.rules.backend
#                                             holds the backend's lines, to merge into the app's.
#   manage_firestore_rules = true             Terraform deploys firestore.rules, the complete file
#                                             (app collections included), REPLACING what is
#                                             deployed; see the two resources at the end.
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

# ---------------------------------------------------------------------------
# Security rules (only with manage_firestore_rules = true)
# ---------------------------------------------------------------------------

locals {
  # The release Firestore reads a database's rules from: cloud.firestore for (default),
  # cloud.firestore/<database id> for a named database.
  firestore_rules_release = var.firestore_database == "(default)" ? "cloud.firestore" : "cloud.firestore/${var.firestore_database}"
}

# A ruleset is immutable: any change to firestore.rules creates a new one, and the provider then
# replaces the release (a changed ruleset_name requires a new release: the provider's 5.0
# upgrade guide, and RequiresRecreate in its firebaserules client). create_before_destroy keeps
# the old ruleset until the new release points at the new one (the API refuses to delete a
# ruleset in use), so it is still there to roll back to if anything in between fails.
resource "google_firebaserules_ruleset" "firestore" {
  count = var.manage_firestore_rules ? 1 : 0

  project = var.project_id

  source {
    files {
      name    = "firestore.rules"
      content = file("${path.module}/firestore.rules")
    }
  }

  lifecycle {
    create_before_destroy = true
  }

  depends_on = [google_project_service.enabled, google_firestore_database.app]
}

# The release already exists in a project whose app deployed rules before: import it once before
# the first apply with manage_firestore_rules = true (docs/deploy.md); without the import the
# create fails with "already exists" and nothing changes.
# A rules change deletes this release and creates it again: for that moment the database has no
# released rules, and if the new ruleset is rejected it has none until the next good apply. The
# pipeline's tests load firestore.rules into the emulator first, so a broken file never gets here.
# Neither lifecycle workaround helps: replace_triggered_by (the 4.x workaround the 5.0 upgrade
# guide retires) only forces the same replacement, and create_before_destroy would create a second
# release with the same name before deleting the first, which the API refuses.
resource "google_firebaserules_release" "firestore" {
  count = var.manage_firestore_rules ? 1 : 0

  project      = var.project_id
  name         = local.firestore_rules_release
  ruleset_name = "projects/${var.project_id}/rulesets/${google_firebaserules_ruleset.firestore[0].name}"

  depends_on = [google_project_service.enabled, google_firestore_database.app]
}
