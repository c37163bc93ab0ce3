"""Terraform wiring: what the code reads is what Terraform sets, names match, roles go to the
accounts that run the workloads, delivery has retry + dead letter."""

from __future__ import annotations

import re

import hcl2
import pytest

from functions.settings import (
    CONNECTOR_ENV_VARS,
    NOTIFIER_ENV_VARS,
    NOTIFIER_RUNTIME_ENV_VARS,
    load_settings,
)

from .conftest import HCL_OPTIONS, ROOT, Terraform, one, ref, roles_in

CONNECTOR = ("google_cloud_run_v2_service", "connector")
NOTIFIER = ("google_cloudfunctions2_function", "notifier")
TOPIC = "google_pubsub_topic.call_events"
DEAD_LETTER_TOPIC = "google_pubsub_topic.call_events_dead_letter"
SUBSCRIPTION = ("google_pubsub_subscription", "notifier_push")
CONNECTOR_SA = "${google_service_account.connector.email}"
NOTIFIER_SA = "${google_service_account.notifier.email}"
PUSH_SA = "${google_service_account.push_invoker.email}"


def connector_container(tf: Terraform) -> dict:
    template = one(tf.resource(*CONNECTOR)["template"], "template")
    return one(template["containers"], "container")


def connector_env(tf: Terraform) -> dict[str, dict]:
    envs = connector_container(tf)["env"]
    names = [e["name"] for e in envs]
    assert len(names) == len(set(names)), f"duplicate env names on the connector: {names}"
    return {e["name"]: e for e in envs}


def notifier_env(tf: Terraform) -> dict[str, str]:
    service = one(tf.resource(*NOTIFIER)["service_config"], "service_config")
    return service["environment_variables"]


# --- environment ----------------------------------------------------------------------------------


def test_connector_sets_exactly_the_env_vars_the_code_reads(tf: Terraform) -> None:
    expected = set(CONNECTOR_ENV_VARS) - {"PORT"}
    assert expected, "functions.settings.CONNECTOR_ENV_VARS is empty"
    actual = set(connector_env(tf))
    assert actual >= expected, f"not set on the connector: {sorted(expected - actual)}"
    # A name the code never reads is a typo or a leftover.
    assert actual <= expected, f"set but never read by the connector: {sorted(actual - expected)}"


def test_notifier_sets_exactly_the_env_vars_the_code_reads(tf: Terraform) -> None:
    expected = set(NOTIFIER_ENV_VARS) - {"PORT"}
    assert expected, "functions.settings.NOTIFIER_ENV_VARS is empty"
    actual = set(notifier_env(tf)) - set(NOTIFIER_RUNTIME_ENV_VARS)
    assert actual >= expected, f"not set on the notifier: {sorted(expected - actual)}"
    assert actual <= expected, f"set but never read by the notifier: {sorted(actual - expected)}"


def test_port_is_left_to_cloud_run(tf: Terraform) -> None:
    assert "PORT" not in connector_env(tf)
    assert "PORT" not in notifier_env(tf)


# Shared settings come from one variable each, so both workloads always agree.
SHARED_VALUES = {
    "GOOGLE_CLOUD_PROJECT": "var.project_id",
    "TENANCY": "var.tenancy",
    "RING_WINDOW_SECONDS": "var.ring_window_seconds",
    "DEFAULT_REGION": "var.default_region",
    "LOG_LEVEL": "var.log_level",
}


@pytest.mark.parametrize("name", sorted(SHARED_VALUES))
def test_shared_settings_come_from_the_same_variable(tf: Terraform, name: str) -> None:
    variable = SHARED_VALUES[name]
    connector_value = connector_env(tf)[name]["value"]
    assert re.search(rf"\b{re.escape(variable)}\b", connector_value), connector_value
    assert re.search(rf"\b{re.escape(variable)}\b", notifier_env(tf)[name]), notifier_env(tf)[name]


def test_connector_specific_values(tf: Terraform) -> None:
    env = connector_env(tf)
    # Short topic id of the very topic the subscription reads.
    assert ref(env["CALL_EVENTS_TOPIC"]["value"]) == f"{TOPIC}.name"
    assert "var.trunk_context_prefixes" in env["TRUNK_CONTEXT_PREFIXES"]["value"]
    assert 'join(","' in env["TRUNK_CONTEXT_PREFIXES"]["value"]
    # Relay credentials: from Secret Manager, never a plain value.
    relays = env["PBX_RELAYS"]
    assert "value" not in relays
    key = one(one(relays["value_source"])["secret_key_ref"])
    assert ref(key["secret"]) == "google_secret_manager_secret.pbx_relays.secret_id"
    assert key["version"] == "latest"


def test_missed_call_setting_is_a_bool_rendered_as_text(tf: Terraform) -> None:
    assert notifier_env(tf)["MISSED_CALL_NOTIFICATIONS"] == (
        "${tostring(var.missed_call_notifications)}"
    )
    assert tf.variables["missed_call_notifications"]["type"] == "bool"
    assert tf.variables["missed_call_notifications"]["default"] is True


# --- variables ------------------------------------------------------------------------------------


def test_every_variable_has_a_description_and_type_and_every_reference_exists(
    tf: Terraform,
) -> None:
    for name, body in tf.variables.items():
        assert str(body.get("description", "")).strip(), f"variable {name} has no description"
        assert "type" in body, f"variable {name} has no type"
    referenced = set(re.findall(r"\bvar\.([a-z_][a-z0-9_]*)", tf.text))
    assert referenced - set(tf.variables) == set(), "undeclared variables referenced"
    assert set(tf.variables) - referenced == set(), "declared variables never used"


def test_example_tfvars_covers_every_variable(tf: Terraform) -> None:
    path = ROOT / "infra" / "terraform.tfvars.example"
    example = hcl2.loads(path.read_text(encoding="utf-8"), serialization_options=HCL_OPTIONS)
    assert set(example) <= set(tf.variables), set(example) - set(tf.variables)
    text = path.read_text(encoding="utf-8")
    # Every variable is shown, set or (for the commit tag and the relay secret) commented.
    for name in tf.variables:
        assert re.search(rf"^#? ?{name}\s+=", text, re.M), f"{name} missing from the example"


def test_only_project_and_image_tag_are_required(tf: Terraform) -> None:
    required = {n for n, body in tf.variables.items() if "default" not in body}
    assert required == {"project_id", "connector_image_tag"}


def test_settings_variables_are_validated(tf: Terraform) -> None:
    for name in (
        "project_id",
        "region",
        "ring_window_seconds",
        "trunk_context_prefixes",
        "default_region",
        "log_level",
        "connector_image_tag",
        "connector_min_instances",
        "notifier_min_instances",
        "max_delivery_attempts",
    ):
        validation = tf.variables[name].get("validation")
        assert validation, f"variable {name} has no validation"
        assert one(validation)["condition"], name


def test_defaults_match_the_run_contract(tf: Terraform) -> None:
    v = tf.variables
    assert v["region"]["default"] == "asia-northeast3"
    assert v["ring_window_seconds"]["default"] == 60
    assert v["trunk_context_prefixes"]["default"] == ["trk"]
    assert v["default_region"]["default"] == "KR"
    assert v["log_level"]["default"] == "INFO"
    assert v["connector_min_instances"]["default"] == 1
    assert ">= 1" in one(v["connector_min_instances"]["validation"])["condition"]


def test_relay_credentials_never_pass_through_terraform(tf: Terraform) -> None:
    # Relay values belong in Secret Manager. The two relay variables hold no credentials: CIDRs,
    # and secret IDs (validated in test_tenancy_and_rules.py, where ':' and '@' are refused).
    relay_variables = {v for v in tf.variables if "relay" in v}
    assert relay_variables == {"relay_allowed_networks", "relay_credential_secrets"}
    for name in relay_variables:
        assert tf.variables[name]["type"] == "${list(string)}", name
    versions = tf.of_type("google_secret_manager_secret_version")
    assert set(versions) == {"pbx_relays_placeholder"}
    placeholder = versions["pbx_relays_placeholder"]
    assert ref(placeholder["secret"]) == "google_secret_manager_secret.pbx_relays.id"
    # Blank: the connector reads it as "no static relay" and starts.
    assert placeholder["secret_data"].strip() == ""
    settings = load_settings(
        {"GOOGLE_CLOUD_PROJECT": "p", "PBX_RELAYS": placeholder["secret_data"]}
    )
    assert settings.pbx_relays == ()


# --- connector ------------------------------------------------------------------------------------


def test_connector_runs_always_on_with_probes(tf: Terraform) -> None:
    service = tf.resource(*CONNECTOR)
    template = one(service["template"])
    assert template["service_account"] == CONNECTOR_SA
    scaling = one(template["scaling"])
    assert scaling["min_instance_count"] == "${var.connector_min_instances}"
    container = connector_container(tf)
    resources = one(container["resources"])
    assert resources["cpu_idle"] is False, "CPU must stay allocated outside requests"
    for probe in ("startup_probe", "liveness_probe"):
        http_get = one(one(container[probe], probe)["http_get"], f"{probe}.http_get")
        assert http_get["path"] == "/healthz", probe
    assert service["ingress"] == "INGRESS_TRAFFIC_INTERNAL_ONLY"


def test_connector_image_is_the_commit_tag_in_our_repository(tf: Terraform) -> None:
    assert connector_container(tf)["image"] == "${local.connector_image}"
    image = tf.locals["connector_image"]
    assert "google_artifact_registry_repository.images.repository_id" in image
    assert image.endswith("/connector:${var.connector_image_tag}")
    repo = tf.resource("google_artifact_registry_repository", "images")
    assert repo["format"] == "DOCKER"
    assert repo["repository_id"] == "${var.name_prefix}-images"


# --- notifier -------------------------------------------------------------------------------------


def test_notifier_function_contract(tf: Terraform) -> None:
    function = tf.resource(*NOTIFIER)
    build = one(function["build_config"])
    assert build["entry_point"] == "on_call_event"
    assert build["runtime"] == "python311"
    source = one(one(build["source"])["storage_source"])
    assert ref(source["object"]) == "google_storage_bucket_object.notifier_source.name"
    service = one(function["service_config"])
    assert service["service_account_email"] == NOTIFIER_SA
    assert service["ingress_settings"] == "ALLOW_INTERNAL_ONLY"
    assert service["min_instance_count"] == "${var.notifier_min_instances}"
    # Delivered by our push subscription only: an Eventarc trigger would deliver a second time.
    assert "event_trigger" not in function


def test_entry_point_exists_in_main_py() -> None:
    main = (ROOT / "main.py").read_text(encoding="utf-8")
    assert re.search(r"@functions_framework\.cloud_event\s+def on_call_event\(", main), (
        "the push subscription needs on_call_event registered with "
        "@functions_framework.cloud_event (see infra/notifier.tf)"
    )


def test_notifier_source_object_is_named_by_content_hash(tf: Terraform) -> None:
    obj = tf.resource("google_storage_bucket_object", "notifier_source")
    assert "${local.notifier_source_hash}" in obj["name"]
    assert ref(obj["source"]) == "data.archive_file.notifier_source.output_path"
    digest = tf.locals["notifier_source_hash"]
    assert "local.notifier_files" in digest and "filesha256(" in digest
    archive = tf.data["archive_file"]["notifier_source"]
    assert archive["type"] == "zip"
    dynamic = one(archive["dynamic"])["source"]
    assert dynamic["for_each"] == "${local.notifier_files}"


def test_notifier_archive_is_a_whitelist_of_runtime_files(tf: Terraform) -> None:
    files = tf.locals["notifier_files"]
    assert '"main.py"' in files and '"requirements.txt"' in files
    assert 'fileset(local.repo_root, "functions/**")' in files
    assert "__pycache__" in files
    assert '!endswith(f, ".so")' in files  # the connector's compiled raw gate, built locally
    for excluded in ("tests", "infra", "devtools", "node_modules", ".venv"):
        assert excluded not in files, excluded


def test_notifier_sources_are_text_files() -> None:
    # archive_file reads each whitelisted file with file(), which needs UTF-8 text.
    paths = [ROOT / "main.py", ROOT / "requirements.txt"]
    paths += [
        p
        for p in (ROOT / "functions").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in {".pyc", ".so"}
    ]
    assert len(paths) > 3
    for path in paths:
        path.read_text(encoding="utf-8")


# --- Pub/Sub delivery -----------------------------------------------------------------------------


def test_subscription_reads_the_topic_the_connector_publishes_to(tf: Terraform) -> None:
    sub = tf.resource(*SUBSCRIPTION)
    assert ref(sub["topic"]) == f"{TOPIC}.id"
    publisher = tf.resource("google_pubsub_topic_iam_member", "connector_publisher")
    assert ref(publisher["topic"]) == f"{TOPIC}.name"
    assert publisher["role"] == "roles/pubsub.publisher"
    assert publisher["member"] == f"serviceAccount:{CONNECTOR_SA}"
    assert ref(connector_env(tf)["CALL_EVENTS_TOPIC"]["value"]).startswith(TOPIC + ".")


def test_push_goes_to_the_notifier_with_oidc_of_the_invoker(tf: Terraform) -> None:
    push = one(tf.resource(*SUBSCRIPTION)["push_config"])
    endpoint = push["push_endpoint"]
    assert endpoint.startswith("${google_cloudfunctions2_function.notifier.service_config[0].uri}/")
    # The topic path in the URL is how functions-framework fills the CloudEvent source.
    assert endpoint.endswith(f"${{{TOPIC}.id}}")
    assert "no_wrapper" not in push, "functions-framework needs the wrapped push body"
    oidc = one(push["oidc_token"])
    assert oidc["service_account_email"] == PUSH_SA
    assert ref(oidc["audience"]) == "google_cloudfunctions2_function.notifier.service_config[0].uri"


# The app's own endpoints (infra/app_endpoints.tf) are called by phones over the internet: their
# Cloud Run services, and nothing else, are open to allUsers (the code checks the ID token).
PUBLIC_INVOKER = "app_endpoint_public"
PUBLIC_FILE = "app_endpoints.tf"


def test_only_the_push_identity_may_invoke_the_notifier(tf: Terraform) -> None:
    invokers = tf.of_type("google_cloud_run_v2_service_iam_member")
    assert set(invokers) - {PUBLIC_INVOKER} == {"push_invoker"}
    binding = invokers["push_invoker"]
    assert binding["role"] == "roles/run.invoker"
    assert binding["member"] == f"serviceAccount:{PUSH_SA}"
    assert (
        ref(binding["name"]) == "google_cloudfunctions2_function.notifier.service_config[0].service"
    )
    if PUBLIC_INVOKER in invokers:
        public = invokers[PUBLIC_INVOKER]
        assert public["for_each"] == "${google_cloudfunctions2_function.app_endpoint}"
        assert public["name"] == "${each.value.service_config[0].service}"
        assert (public["role"], public["member"]) == ("roles/run.invoker", "allUsers")
    for path in sorted((ROOT / "infra").glob("*.tf")):
        text = path.read_text(encoding="utf-8")
        if path.name != PUBLIC_FILE:
            assert "allUsers" not in text, path.name
        assert "allAuthenticatedUsers" not in text, path.name


def test_retry_and_dead_letter_wiring(tf: Terraform) -> None:
    sub = tf.resource(*SUBSCRIPTION)
    retry = one(sub["retry_policy"])
    assert retry["minimum_backoff"] == "${var.retry_minimum_backoff_seconds}s"
    assert retry["maximum_backoff"] == "${var.retry_maximum_backoff_seconds}s"
    dead = one(sub["dead_letter_policy"])
    assert ref(dead["dead_letter_topic"]) == f"{DEAD_LETTER_TOPIC}.id"
    assert dead["max_delivery_attempts"] == "${var.max_delivery_attempts}"
    assert sub["enable_message_ordering"] is True
    assert one(sub["expiration_policy"])["ttl"] == ""
    # Dead letters are kept somewhere they can be read.
    hold = tf.resource("google_pubsub_subscription", "dead_letter_hold")
    assert ref(hold["topic"]) == f"{DEAD_LETTER_TOPIC}.id"


def test_pubsub_service_agent_can_dead_letter(tf: Terraform) -> None:
    agent = tf.locals["pubsub_service_agent"]
    assert "@gcp-sa-pubsub.iam.gserviceaccount.com" in agent
    assert "data.google_project.this.number" in agent
    publisher = tf.resource("google_pubsub_topic_iam_member", "dead_letter_publisher")
    assert ref(publisher["topic"]) == f"{DEAD_LETTER_TOPIC}.name"
    assert publisher["role"] == "roles/pubsub.publisher"
    assert publisher["member"] == "${local.pubsub_service_agent}"
    subscriber = tf.resource(
        "google_pubsub_subscription_iam_member", "dead_letter_source_subscriber"
    )
    assert ref(subscriber["subscription"]) == "google_pubsub_subscription.notifier_push.name"
    assert subscriber["role"] == "roles/pubsub.subscriber"
    assert subscriber["member"] == "${local.pubsub_service_agent}"


def test_ack_deadline_covers_the_function_timeout(tf: Terraform) -> None:
    sub = tf.resource(*SUBSCRIPTION)
    assert sub["ack_deadline_seconds"] == "${var.notifier_timeout_seconds}"
    service = one(tf.resource(*NOTIFIER)["service_config"])
    assert service["timeout_seconds"] == "${var.notifier_timeout_seconds}"


# --- service accounts and roles -------------------------------------------------------------------


def project_roles(tf: Terraform, resource_name: str, member: str) -> set[str]:
    binding = tf.resource("google_project_iam_member", resource_name)
    assert binding["member"] == f"serviceAccount:{member}", resource_name
    if "for_each" in binding:
        local = ref(binding["for_each"]).removeprefix("local.")
        assert binding["role"] == "${each.value}"
        return roles_in(tf.locals[local])
    return {binding["role"]}


def test_connector_roles(tf: Terraform) -> None:
    roles = project_roles(tf, "connector", CONNECTOR_SA)
    assert roles == {
        "roles/datastore.user",
        "roles/logging.logWriter",
        "roles/monitoring.metricWriter",
    }
    secret = tf.resource("google_secret_manager_secret_iam_member", "connector_pbx_relays")
    assert secret["role"] == "roles/secretmanager.secretAccessor"
    assert secret["member"] == f"serviceAccount:{CONNECTOR_SA}"
    assert ref(secret["secret_id"]) == "google_secret_manager_secret.pbx_relays.secret_id"


def test_notifier_roles(tf: Terraform) -> None:
    roles = project_roles(tf, "notifier", NOTIFIER_SA)
    assert roles == {"roles/datastore.user", "roles/logging.logWriter"}
    fcm = tf.resource("google_project_iam_member", "notifier_fcm_sender")
    assert fcm["member"] == f"serviceAccount:{NOTIFIER_SA}"
    assert fcm["role"] == "${local.fcm_sender_role}"
    custom = tf.resource("google_project_iam_custom_role", "fcm_sender")
    assert custom["permissions"] == ["cloudmessaging.messages.create"]
    assert "google_project_iam_custom_role.fcm_sender[0].name" in tf.locals["fcm_sender_role"]


def test_workload_accounts_are_the_granted_ones(tf: Terraform) -> None:
    # Every member of every binding is one of our accounts or the Pub/Sub agent: no default
    # compute account, no user, no group.
    allowed = {
        f"serviceAccount:${{google_service_account.{name}.email}}"
        for name in tf.of_type("google_service_account")
    } | {"${local.pubsub_service_agent}"}
    for rtype, by_name in tf.resources.items():
        if not rtype.endswith("_iam_member"):
            continue
        for name, body in by_name.items():
            if (rtype, name) == ("google_cloud_run_v2_service_iam_member", PUBLIC_INVOKER):
                continue  # the app endpoints' public invoker, checked above
            assert body["member"] in allowed, f"{rtype}.{name}: {body['member']}"
    accounts = set(tf.of_type("google_service_account"))
    assert accounts - {"app_endpoints"} == {
        "connector",
        "notifier",
        "push_invoker",
        "notifier_build",
    }


def test_no_broad_roles(tf: Terraform) -> None:
    granted: set[str] = set()
    for rtype, by_name in tf.resources.items():
        if rtype.endswith("_iam_member"):
            for body in by_name.values():
                granted |= roles_in(body["role"]) if "${" in body["role"] else {body["role"]}
    for local in (
        "connector_project_roles",
        "notifier_project_roles",
        "notifier_build_project_roles",
    ):
        granted |= roles_in(tf.locals[local])
    broad = {r for r in granted if r in {"roles/owner", "roles/editor", "roles/viewer"}}
    broad |= {r for r in granted if r.endswith(".admin")}
    assert not broad, broad


# --- Firestore ------------------------------------------------------------------------------------


def test_dedupe_ttl_policy(tf: Terraform) -> None:
    ttl = tf.resource("google_firestore_field", "push_dedupe_ttl")
    assert ttl["collection"] == "push_dedupe"
    assert ttl["field"] == "expiresAt"
    assert "ttl_config" in ttl


def test_connector_heartbeats_expire_by_ttl_on_the_collection_the_code_writes(
    tf: Terraform,
) -> None:
    from functions.core.lease import INSTANCES

    ttl = tf.resource("google_firestore_field", "connector_instances_ttl")
    assert (ttl["collection"], ttl["field"]) == (INSTANCES, "expiresAt")
    assert "ttl_config" in ttl and "index_config" in ttl


def test_backend_rules_excerpt_closes_the_backend_collections() -> None:
    # The full comparison with infra/firestore.rules is in test_tenancy_and_rules.py.
    rules = (ROOT / "infra" / "firestore.rules.backend").read_text(encoding="utf-8")
    matched = set(
        re.findall(r"match /([a-z_]+)/\{document=\*\*\}\s*\{\s*allow read, write: if false;", rules)
    )
    assert matched == {
        "pbx_tenants",
        "push_dedupe",
        "relay_status",
        "relay_leases",
        "connector_instances",
        "relay_access",
    }
    for app_collection in ("users", "my_extensions", "fcm_tokens", "call_history"):
        assert f"match /{app_collection}/" not in rules


# --- terraform block ------------------------------------------------------------------------------


def test_remote_state_and_pinned_providers(tf: Terraform) -> None:
    block = one(tf.terraform, "terraform block")
    assert "gcs" in one(block["backend"])
    providers = one(block["required_providers"])
    assert providers["google"]["source"] == "hashicorp/google"
    assert providers["google"]["version"].startswith("~>")
    assert ">= 1.9" in block["required_version"]


def test_the_notifier_runs_as_many_threads_as_events_it_is_given(tf: Terraform) -> None:
    """functions-framework serves at most THREADS requests at once: it must equal Cloud
    Functions' per-instance concurrency, or events queue inside an instance the platform
    believes is free (bench/burst.py measured the setting)."""
    config = one(tf.resource(*NOTIFIER)["service_config"], "service_config")
    concurrency = config["max_instance_request_concurrency"]
    assert "var.notifier_concurrency" in concurrency
    assert config["environment_variables"]["THREADS"] == "${tostring(" + concurrency[2:-1] + ")}"
    assert config["available_cpu"] == "${var.notifier_cpu}"
    assert tf.variables["notifier_concurrency"]["default"] > 1
