"""infra/app_endpoints.tf against the run contract, offline (python-hcl2, as tests/infra reads
Terraform): both functions under the names, entry points and region the app calls, on their own
service account with the least it needs, public only at the IAM level, with the settings the
code reads."""

from __future__ import annotations

import re

import pytest

from functions.settings import NOTIFIER_ENV_VARS, NOTIFIER_RUNTIME_ENV_VARS
from tests.infra.conftest import ROOT, Terraform, load_terraform, one, ref, roles_in

NAMES = {"cancelIncomingCallNotification", "sendIncomingCallNotification"}
SA = "serviceAccount:${google_service_account.app_endpoints.email}"


@pytest.fixture(scope="module")
def tf() -> Terraform:
    return load_terraform()


def functions(tf: Terraform) -> dict:
    return tf.resource("google_cloudfunctions2_function", "app_endpoint")


def test_both_functions_are_named_and_placed_as_the_app_calls_them(tf: Terraform) -> None:
    fn = functions(tf)
    assert set(tf.locals["app_endpoints"]) == NAMES
    assert fn["for_each"] == "${local.app_endpoints}" and fn["name"] == "${each.key}"
    assert fn["location"] == "${var.app_endpoints_region}"
    assert tf.variables["app_endpoints_region"]["default"] == "asia-northeast3"
    assert one(tf.variables["app_endpoints_region"]["validation"])["condition"]
    build = one(fn["build_config"])
    assert build["runtime"] == "python311" and build["entry_point"] == "${each.key}"
    assert ref(one(one(build["source"])["storage_source"])["object"]) == (
        "google_storage_bucket_object.notifier_source.name"
    )


def test_the_entry_points_are_http_targets_of_main_py() -> None:
    main = (ROOT / "main.py").read_text(encoding="utf-8")
    for name in NAMES:
        assert re.search(rf"@functions_framework\.http\s+def {name}\(", main), name


def test_they_run_as_their_own_account_with_the_least_it_needs(tf: Terraform) -> None:
    service = one(functions(tf)["service_config"])
    assert service["service_account_email"] == "${google_service_account.app_endpoints.email}"
    roles = tf.resource("google_project_iam_member", "app_endpoints")
    assert roles["member"] == SA and roles["role"] == "${each.value}"
    assert roles_in(tf.locals["app_endpoints_project_roles"]) == {
        "roles/datastore.user",
        "roles/logging.logWriter",
    }
    fcm = tf.resource("google_project_iam_member", "app_endpoints_fcm_sender")
    assert fcm["member"] == SA and fcm["role"] == "${local.fcm_sender_role}"
    granted = {
        body["role"]
        for rtype, by_name in tf.resources.items()
        if rtype.endswith("_iam_member")
        for body in by_name.values()
        if body["member"] == SA
    }
    assert granted == {"${each.value}", "${local.fcm_sender_role}"}


def test_only_they_are_public_and_only_for_invocation(tf: Terraform) -> None:
    public = {
        (rtype, name): body
        for rtype, by_name in tf.resources.items()
        if rtype.endswith("_iam_member")
        for name, body in by_name.items()
        if body["member"] in {"allUsers", "allAuthenticatedUsers"}
    }
    assert set(public) == {("google_cloud_run_v2_service_iam_member", "app_endpoint_public")}
    binding = public[("google_cloud_run_v2_service_iam_member", "app_endpoint_public")]
    assert binding["role"] == "roles/run.invoker"
    assert binding["for_each"] == "${google_cloudfunctions2_function.app_endpoint}"
    assert binding["name"] == "${each.value.service_config[0].service}"


def test_they_get_the_settings_the_code_reads(tf: Terraform) -> None:
    service = one(functions(tf)["service_config"])
    assert set(service["environment_variables"]) == set(NOTIFIER_ENV_VARS)
    notifier = one(tf.resource("google_cloudfunctions2_function", "notifier")["service_config"])
    shared = {  # THREADS follows the notifier's own concurrency (functions-framework reads it)
        k: v
        for k, v in notifier["environment_variables"].items()
        if k not in NOTIFIER_RUNTIME_ENV_VARS
    }
    assert service["environment_variables"] == shared
