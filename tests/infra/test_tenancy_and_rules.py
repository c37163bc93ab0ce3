"""Tenancy settings, relay credentials in Secret Manager and Terraform-managed Firestore rules.

Each check_* function reads one thing from the parsed Terraform (python-hcl2) or the rules files;
test_* runs it on the real files, and test_each_check_fails_when_its_subject_is_broken runs it on
copies with one deliberate breakage each (the check must then fail), so no check passes by
checking nothing. Tests marked needs_terraform also evaluate validations and expressions with
the terraform binary (no providers needed) and are skipped where it is not installed.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from functions.adapters.relay_access import RELAY_ACCESS
from functions.connector.adapters.relay_status import RELAY_STATUS
from functions.core.lease import INSTANCES, LEASES
from functions.core.tenancy import TENANTS
from functions.notifier.adapters.ledger_store import LEDGER
from functions.settings import TENANCY_MODES, load_settings

from .conftest import INFRA, Terraform, load_terraform, one, ref

CONNECTOR_SA_MEMBER = "serviceAccount:${google_service_account.connector.email}"
RULESET = ("google_firebaserules_ruleset", "firestore")
RELEASE = ("google_firebaserules_release", "firestore")
RELAY_SECRETS = ("google_secret_manager_secret_iam_member", "connector_relay_credentials")
MANAGED_COUNT = "${var.manage_firestore_rules ? 1 : 0}"
BACKEND_COLLECTIONS = {TENANTS, LEDGER, LEASES, RELAY_STATUS, INSTANCES, RELAY_ACCESS}

TERRAFORM = shutil.which("terraform")
needs_terraform = pytest.mark.skipif(
    TERRAFORM is None, reason="terraform is not installed (Cloud Build's tf-validate step has it)"
)


@dataclass
class Sources:
    tf: Terraform
    rules: str  # infra/firestore.rules
    backend: str  # infra/firestore.rules.backend


def load_sources(directory: Path = INFRA) -> Sources:
    return Sources(
        tf=load_terraform(directory),
        rules=(directory / "firestore.rules").read_text(encoding="utf-8"),
        backend=(directory / "firestore.rules.backend").read_text(encoding="utf-8"),
    )


@pytest.fixture(scope="module")
def src() -> Sources:
    return load_sources()


def connector_env(tf: Terraform) -> dict[str, dict]:
    template = one(tf.resource("google_cloud_run_v2_service", "connector")["template"])
    return {e["name"]: e for e in one(template["containers"])["env"]}


def notifier_env(tf: Terraform) -> dict[str, str]:
    function = tf.resource("google_cloudfunctions2_function", "notifier")
    return one(function["service_config"])["environment_variables"]


def lifecycle(body: dict) -> dict:
    blocks = body.get("lifecycle", [])
    return one(blocks, "lifecycle") if blocks else {}


def validations(tf: Terraform, variable: str) -> list[str]:
    return [str(v["condition"]) for v in tf.variables[variable].get("validation", [])]


# --- Firestore rules: only behind manage_firestore_rules --------------------------------------


def check_rules_resources_exist_only_behind_the_variable(s: Sources) -> None:
    variable = s.tf.variables["manage_firestore_rules"]
    assert variable["type"] == "bool"
    assert variable["default"] is False, "Terraform must not replace the app's rules by default"
    description = variable["description"]
    assert "REPLACES" in description, "the variable must warn that it replaces the app's rules"
    assert "firestore.rules.backend" in description, "and say what to do when it is off"
    rules_resources = {
        (rtype, name)
        for rtype, by_name in s.tf.resources.items()
        if rtype.startswith("google_firebaserules_")
        for name in by_name
    }
    assert rules_resources == {RULESET, RELEASE}, rules_resources
    for rtype, name in rules_resources:
        body = s.tf.resource(rtype, name)
        assert body.get("count") == MANAGED_COUNT, f"{rtype}.{name} is not behind the variable"
        assert "for_each" not in body


def check_ruleset_source_is_infra_firestore_rules(s: Sources) -> None:
    ruleset = s.tf.resource(*RULESET)
    source = one(ruleset["source"], "source")
    rules_file = one(source["files"], "files")
    assert rules_file["content"] == '${file("${path.module}/firestore.rules")}'
    assert rules_file["name"] == "firestore.rules"
    assert source.get("language", "FIREBASE_RULES") == "FIREBASE_RULES"
    assert ref(ruleset["project"]) == "var.project_id"
    # A new ruleset exists before the release leaves the old one (which cannot be deleted while
    # a release points at it).
    assert lifecycle(ruleset).get("create_before_destroy") is True
    # The file is the complete rules file, not the backend excerpt.
    assert s.rules.lstrip().startswith("rules_version = '2';")
    assert "service cloud.firestore" in s.rules


def check_release_is_cloud_firestore_of_the_ruleset(s: Sources) -> None:
    release = s.tf.resource(*RELEASE)
    assert ref(release["project"]) == "var.project_id"
    assert ref(release["name"]) == "local.firestore_rules_release"
    assert release["ruleset_name"] == (
        "projects/${var.project_id}/rulesets/${google_firebaserules_ruleset.firestore[0].name}"
    )
    name = s.tf.locals["firestore_rules_release"]
    # (default) -> cloud.firestore (what the provider documents); a named database -> its own.
    assert re.fullmatch(
        r'\$\{var\.firestore_database == "\(default\)" \? "cloud\.firestore" : '
        r'"cloud\.firestore/\$\{var\.firestore_database\}"\}',
        name,
    ), name
    # A replaced release leaves the database without rules in between; a second release of the
    # same name cannot be created first (see firestore.tf).
    assert "replace_triggered_by" not in lifecycle(release)
    assert "create_before_destroy" not in lifecycle(release)


def check_rules_api_enabled_when_managed(s: Sources) -> None:
    apis = s.tf.locals["apis"]
    assert apis.startswith("${setunion(["), apis
    assert 'var.manage_firestore_rules ? ["firebaserules.googleapis.com"] : []' in apis
    assert apis.count("firebaserules.googleapis.com") == 1, "only behind the variable"
    enabled = s.tf.resource("google_project_service", "enabled")
    assert enabled["for_each"] == "${local.apis}"
    for key in (RULESET, RELEASE):
        assert "${google_project_service.enabled}" in s.tf.resource(*key)["depends_on"], key


def test_rules_resources_exist_only_behind_the_variable(src: Sources) -> None:
    check_rules_resources_exist_only_behind_the_variable(src)


def test_ruleset_source_is_infra_firestore_rules(src: Sources) -> None:
    check_ruleset_source_is_infra_firestore_rules(src)
    assert (INFRA / "firestore.rules").is_file()


def test_release_is_cloud_firestore_of_the_ruleset(src: Sources) -> None:
    check_release_is_cloud_firestore_of_the_ruleset(src)


def test_rules_api_enabled_when_managed(src: Sources) -> None:
    check_rules_api_enabled_when_managed(src)


# --- backend rules excerpt == backend part of the complete file ------------------------------

DENY_BLOCK = re.compile(
    r"match /([a-z_]+)/\{document=\*\*\}\s*\{\s*allow read, write: if false;\s*\}", re.M
)


def backend_blocks(text: str) -> dict[str, str]:
    return {m.group(1): " ".join(m.group(0).split()) for m in DENY_BLOCK.finditer(text)}


def check_backend_rules_match_the_complete_file(s: Sources) -> None:
    excerpt = backend_blocks(s.backend)
    assert set(excerpt) == BACKEND_COLLECTIONS, set(excerpt) ^ BACKEND_COLLECTIONS
    complete = backend_blocks(s.rules)
    assert {c: complete.get(c) for c in BACKEND_COLLECTIONS} == excerpt
    for text in (s.backend, s.rules):
        for collection in BACKEND_COLLECTIONS:
            # One rule per collection, recursive: a {docId} rule would leave the subcollections
            # (push_dedupe/{id}/versions/{n}, relay_leases/{id}/takeovers/{t}) to other rules.
            matches = re.findall(rf"match /{collection}/\{{[^}}]*\}}", text)
            assert matches == [f"match /{collection}/{{document=**}}"], (collection, matches)
    for app_collection in ("users", "my_extensions", "fcm_tokens", "call_history"):
        assert f"match /{app_collection}/" not in s.backend, app_collection
        assert f"match /{app_collection}/" in s.rules, app_collection
    assert "allow read, write: if true" not in s.backend
    assert "request.auth" not in re.sub(r"//.*", "", s.backend), "the excerpt allows nothing"


def test_backend_rules_match_the_complete_file(src: Sources) -> None:
    check_backend_rules_match_the_complete_file(src)


# --- TENANCY and RELAY_ALLOWED_NETWORKS -------------------------------------------------------


def check_tenancy_reaches_both_workloads(s: Sources) -> None:
    assert connector_env(s.tf)["TENANCY"]["value"] == "${var.tenancy}"
    assert notifier_env(s.tf).get("TENANCY") == "${var.tenancy}"
    variable = s.tf.variables["tenancy"]
    assert variable["type"] == "string"
    assert variable["default"] == "directory" == TENANCY_MODES[0]


def check_tenancy_validation_is_the_codes_modes(s: Sources) -> None:
    modes = None
    for condition in validations(s.tf, "tenancy"):
        m = re.fullmatch(r"\$\{contains\(\[([^\]]*)\], var\.tenancy\)\}", condition)
        if m:
            modes = json.loads(f"[{m.group(1)}]")
    assert modes is not None, "tenancy has no contains([...], var.tenancy) validation"
    assert sorted(modes) == sorted(TENANCY_MODES), modes


def check_relay_allowed_networks_reach_the_connector(s: Sources) -> None:
    env = connector_env(s.tf)["RELAY_ALLOWED_NETWORKS"]
    assert env["value"] == '${join(",", var.relay_allowed_networks)}'
    assert "RELAY_ALLOWED_NETWORKS" not in notifier_env(s.tf)
    variable = s.tf.variables["relay_allowed_networks"]
    assert variable["type"] == "${list(string)}"
    assert variable["default"] == []
    conditions = " ".join(validations(s.tf, "relay_allowed_networks"))
    assert "can(cidrhost(n, 0))" in conditions, "each entry must be validated as a CIDR"
    assert '!can(regex("/0+$", n))' in conditions, "an allow-everything /0 must be refused"


def test_tenancy_reaches_both_workloads(src: Sources) -> None:
    check_tenancy_reaches_both_workloads(src)


def test_tenancy_validation_is_the_codes_modes(src: Sources) -> None:
    check_tenancy_validation_is_the_codes_modes(src)


def test_relay_allowed_networks_reach_the_connector(src: Sources) -> None:
    check_relay_allowed_networks_reach_the_connector(src)


# --- relay credentials: Secret Manager, per secret, connector only ----------------------------

SECRET_ID_SAMPLES = {
    "callpush-relay-acme": True,
    "relay_2": True,
    "user:password": False,
    "projects/p/secrets/s": False,
    "projects/p/secrets/s/versions/latest": False,
    "wss://user:pass@relay.example.com:7099": False,
    "": False,
}


def check_relay_secrets_are_granted_per_secret_to_the_connector(s: Sources) -> None:
    binding = s.tf.resource(*RELAY_SECRETS)
    assert binding["for_each"] == "${toset(var.relay_credential_secrets)}"
    assert ref(binding["secret_id"]) == "each.value"
    assert ref(binding["project"]) == "var.project_id"
    assert binding["role"] == "roles/secretmanager.secretAccessor"
    assert binding["member"] == CONNECTOR_SA_MEMBER
    connector = s.tf.resource("google_cloud_run_v2_service", "connector")
    assert (
        "${google_secret_manager_secret_iam_member.connector_relay_credentials}"
        in (connector["depends_on"])
    ), "a new revision must not start before it may read the credentials"
    # Not project-wide: no project binding of any Secret Manager role, to anyone.
    project_roles = " ".join(
        [body["role"] for body in s.tf.of_type("google_project_iam_member").values()]
        + [s.tf.locals[name] for name in s.tf.locals if name.endswith("_project_roles")]
    )
    assert "secretmanager" not in project_roles, project_roles
    accessors = {
        name
        for name, body in s.tf.of_type("google_secret_manager_secret_iam_member").items()
        if body["role"] == "roles/secretmanager.secretAccessor"
    }
    assert accessors == {"connector_pbx_relays", "connector_relay_credentials"}
    assert "secretmanager.googleapis.com" in s.tf.locals["apis"]


def check_relay_secret_ids_are_validated(s: Sources) -> None:
    variable = s.tf.variables["relay_credential_secrets"]
    assert variable["type"] == "${list(string)}"
    assert variable["default"] == []
    patterns = [
        m.group(1)
        for condition in validations(s.tf, "relay_credential_secrets")
        if (m := re.search(r'can\(regex\("([^"]+)", s\)\)', condition))
    ]
    assert len(patterns) == 1, "relay_credential_secrets needs a secret-ID validation"
    pattern = patterns[0].encode().decode("unicode_escape")
    for sample, ok in SECRET_ID_SAMPLES.items():
        assert bool(re.fullmatch(pattern, sample)) is ok, (pattern, sample)


def test_relay_secrets_are_granted_per_secret_to_the_connector(src: Sources) -> None:
    check_relay_secrets_are_granted_per_secret_to_the_connector(src)


def test_relay_secret_ids_are_validated(src: Sources) -> None:
    check_relay_secret_ids_are_validated(src)


# --- breakages each check must notice ---------------------------------------------------------

Check = Callable[[Sources], None]


@dataclass(frozen=True)
class Breakage:
    id: str
    check: Check
    file: str  # in infra/
    old: str  # exact text, must occur once
    new: str


RULESET_HEAD = 'resource "google_firebaserules_ruleset" "firestore" {\n'
RELEASE_HEAD = 'resource "google_firebaserules_release" "firestore" {\n'
COUNT_LINE = "  count = var.manage_firestore_rules ? 1 : 0\n"
RULES_FILE = 'file("${path.module}/firestore.rules")'
RULESET_NAME_LINE = (
    '  ruleset_name = "projects/${var.project_id}/rulesets/'
    '${google_firebaserules_ruleset.firestore[0].name}"\n'
)
TENANCY_CONTAINS = 'contains(["directory", "user_documents"], var.tenancy)'
SECRET_ID_CONDITION = 'can(regex("^[A-Za-z0-9_-]{1,255}$", s))'
RELAY_SECRETS_HEAD = (
    "  for_each = toset(var.relay_credential_secrets)\n\n"
    "  project   = var.project_id\n"
    "  secret_id = "
)
ACCESSOR_LINES = (
    '  role      = "roles/secretmanager.secretAccessor"\n  member    = "serviceAccount:'
)
CONNECTOR_ROLES_END = '    "roles/monitoring.metricWriter",\n  ])\n\n  notifier_project_roles'

BREAKAGES = [
    Breakage(
        "ruleset-always",
        check_rules_resources_exist_only_behind_the_variable,
        "firestore.tf",
        RULESET_HEAD + COUNT_LINE,
        RULESET_HEAD + "  count = 1\n",
    ),
    Breakage(
        "release-always",
        check_rules_resources_exist_only_behind_the_variable,
        "firestore.tf",
        RELEASE_HEAD + COUNT_LINE,
        RELEASE_HEAD,
    ),
    Breakage(
        "no-warning",
        check_rules_resources_exist_only_behind_the_variable,
        "variables.tf",
        "WARNING: true REPLACES the rules",
        "true deploys the rules",
    ),
    Breakage(
        "managed-by-default",
        check_rules_resources_exist_only_behind_the_variable,
        "variables.tf",
        'by hand."\n  type        = bool\n  default     = false\n',
        'by hand."\n  type        = bool\n  default     = true\n',
    ),
    Breakage(
        "second-release",
        check_rules_resources_exist_only_behind_the_variable,
        "firestore.tf",
        RELEASE_HEAD,
        'resource "google_firebaserules_release" "storage" {\n'
        '  name         = "firebase.storage"\n'
        '  ruleset_name = "x"\n'
        "}\n\n" + RELEASE_HEAD,
    ),
    Breakage(
        "ruleset-from-excerpt",
        check_ruleset_source_is_infra_firestore_rules,
        "firestore.tf",
        RULES_FILE,
        'file("${path.module}/firestore.rules.backend")',
    ),
    Breakage(
        "ruleset-inline",
        check_ruleset_source_is_infra_firestore_rules,
        "firestore.tf",
        RULES_FILE,
        '"service cloud.firestore {}"',
    ),
    Breakage(
        "ruleset-destroyed-first",
        check_ruleset_source_is_infra_firestore_rules,
        "firestore.tf",
        "    create_before_destroy = true\n",
        "    create_before_destroy = false\n",
    ),
    Breakage(
        "release-name",
        check_release_is_cloud_firestore_of_the_ruleset,
        "firestore.tf",
        '"(default)" ? "cloud.firestore" :',
        '"(default)" ? "firestore" :',
    ),
    Breakage(
        "release-other-ruleset",
        check_release_is_cloud_firestore_of_the_ruleset,
        "firestore.tf",
        "rulesets/${google_firebaserules_ruleset.firestore[0].name}",
        "rulesets/default",
    ),
    Breakage(
        "release-replaced",
        check_release_is_cloud_firestore_of_the_ruleset,
        "firestore.tf",
        RULESET_NAME_LINE,
        RULESET_NAME_LINE
        + "  lifecycle {\n"
        + "    replace_triggered_by = [google_firebaserules_ruleset.firestore[0]]\n"
        + "  }\n",
    ),
    Breakage(
        "rules-api-missing",
        check_rules_api_enabled_when_managed,
        "main.tf",
        ', var.manage_firestore_rules ? ["firebaserules.googleapis.com"] : [])',
        ", [])",
    ),
    Breakage(
        "rules-api-always",
        check_rules_api_enabled_when_managed,
        "main.tf",
        '    "fcm.googleapis.com",\n',
        '    "fcm.googleapis.com",\n    "firebaserules.googleapis.com",\n',
    ),
    Breakage(
        "backend-without-tenants",
        check_backend_rules_match_the_complete_file,
        "firestore.rules.backend",
        "    match /pbx_tenants/{document=**} {\n      allow read, write: if false;\n    }\n",
        "",
    ),
    Breakage(
        "backend-top-level-only",
        check_backend_rules_match_the_complete_file,
        "firestore.rules.backend",
        "match /push_dedupe/{document=**}",
        "match /push_dedupe/{docId}",
    ),
    Breakage(
        "complete-file-top-level-only",
        check_backend_rules_match_the_complete_file,
        "firestore.rules",
        "match /relay_leases/{document=**}",
        "match /relay_leases/{docId}",
    ),
    Breakage(
        "backend-opened",
        check_backend_rules_match_the_complete_file,
        "firestore.rules.backend",
        "    match /relay_status/{document=**} {\n      allow read, write: if false;\n",
        "    match /relay_status/{document=**} {\n      allow read: if request.auth != null;\n",
    ),
    Breakage(
        "notifier-without-tenancy",
        check_tenancy_reaches_both_workloads,
        "notifier.tf",
        "      TENANCY                   = var.tenancy\n",
        "",
    ),
    Breakage(
        "connector-fixed-tenancy",
        check_tenancy_reaches_both_workloads,
        "connector.tf",
        'name  = "TENANCY"\n        value = var.tenancy',
        'name  = "TENANCY"\n        value = "directory"',
    ),
    Breakage(
        "tenancy-default",
        check_tenancy_reaches_both_workloads,
        "variables.tf",
        '  type        = string\n  default     = "directory"',
        '  type        = string\n  default     = "user_documents"',
    ),
    Breakage(
        "tenancy-unvalidated",
        check_tenancy_validation_is_the_codes_modes,
        "variables.tf",
        TENANCY_CONTAINS,
        "length(var.tenancy) > 0",
    ),
    Breakage(
        "tenancy-other-mode",
        check_tenancy_validation_is_the_codes_modes,
        "variables.tf",
        TENANCY_CONTAINS,
        'contains(["directory", "user_documents", "open"], var.tenancy)',
    ),
    Breakage(
        "networks-not-joined",
        check_relay_allowed_networks_reach_the_connector,
        "connector.tf",
        'value = join(",", var.relay_allowed_networks)',
        'value = ""',
    ),
    Breakage(
        "networks-unvalidated",
        check_relay_allowed_networks_reach_the_connector,
        "variables.tf",
        "can(cidrhost(n, 0)) && ",
        "",
    ),
    Breakage(
        "networks-allow-all",
        check_relay_allowed_networks_reach_the_connector,
        "variables.tf",
        '!can(regex("/0+$", n))',
        "true",
    ),
    Breakage(
        "secrets-project-wide",
        check_relay_secrets_are_granted_per_secret_to_the_connector,
        "iam.tf",
        CONNECTOR_ROLES_END,
        CONNECTOR_ROLES_END.replace("  ])", '    "roles/secretmanager.secretAccessor",\n  ])'),
    ),
    Breakage(
        "secrets-to-notifier",
        check_relay_secrets_are_granted_per_secret_to_the_connector,
        "iam.tf",
        RELAY_SECRETS_HEAD + "each.value\n" + ACCESSOR_LINES + "${google_service_account.connector",
        RELAY_SECRETS_HEAD + "each.value\n" + ACCESSOR_LINES + "${google_service_account.notifier",
    ),
    Breakage(
        "secrets-one-fixed",
        check_relay_secrets_are_granted_per_secret_to_the_connector,
        "iam.tf",
        RELAY_SECRETS_HEAD + "each.value\n",
        RELAY_SECRETS_HEAD + "google_secret_manager_secret.pbx_relays.secret_id\n",
    ),
    Breakage(
        "secrets-binding-gone",
        check_relay_secrets_are_granted_per_secret_to_the_connector,
        "iam.tf",
        '"google_secret_manager_secret_iam_member" "connector_relay_credentials"',
        '"google_secret_manager_secret_iam_member" "connector_relay_creds"',
    ),
    Breakage(
        "secrets-api-missing",
        check_relay_secrets_are_granted_per_secret_to_the_connector,
        "main.tf",
        '    "secretmanager.googleapis.com",\n',
        "",
    ),
    Breakage(
        "secrets-before-grant",
        check_relay_secrets_are_granted_per_secret_to_the_connector,
        "connector.tf",
        "    google_secret_manager_secret_iam_member.connector_relay_credentials,\n",
        "",
    ),
    Breakage(
        "secret-ids-any",
        check_relay_secret_ids_are_validated,
        "variables.tf",
        SECRET_ID_CONDITION,
        'can(regex("^.+$", s))',
    ),
    Breakage(
        "secret-ids-unvalidated",
        check_relay_secret_ids_are_validated,
        "variables.tf",
        "alltrue([for s in var.relay_credential_secrets : " + SECRET_ID_CONDITION + "])",
        "true",
    ),
]


def copy_infra(target: Path) -> None:
    for path in INFRA.glob("*.tf"):
        shutil.copy(path, target / path.name)
    for name in ("firestore.rules", "firestore.rules.backend"):
        shutil.copy(INFRA / name, target / name)


@pytest.mark.parametrize("breakage", [pytest.param(b, id=b.id) for b in BREAKAGES])
def test_each_check_fails_when_its_subject_is_broken(tmp_path: Path, breakage: Breakage) -> None:
    copy_infra(tmp_path)
    path = tmp_path / breakage.file
    text = path.read_text(encoding="utf-8")
    # An exact, single match: rewording the files breaks this test loudly instead of letting a
    # breakage silently test nothing.
    found = text.count(breakage.old)
    assert found == 1, f"breakage text found {found} times in {breakage.file}"
    breakage.check(load_sources(tmp_path))  # the unbroken copy passes
    path.write_text(text.replace(breakage.old, breakage.new), encoding="utf-8")
    with pytest.raises(AssertionError):
        breakage.check(load_sources(tmp_path))


def test_every_check_has_a_breakage() -> None:
    checks = {
        value for name, value in globals().items() if name.startswith("check_") and callable(value)
    }
    broken = {b.check for b in BREAKAGES}
    assert checks == broken, sorted(c.__name__ for c in checks ^ broken)


# --- evaluated by terraform itself (validations, expressions) -----------------------------------


def variable_block(name: str) -> str:
    text = (INFRA / "variables.tf").read_text(encoding="utf-8")
    m = re.search(rf'^variable "{name}" \{{\n.*?^\}}\n', text, re.M | re.S)
    assert m, f"variable {name} not found in variables.tf"
    return m.group(0)


def terraform(workdir: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    assert TERRAFORM
    env = {**os.environ, "TF_CLI_CONFIG_FILE": os.devnull, "TF_IN_AUTOMATION": "1"}
    return subprocess.run(
        [TERRAFORM, *args],
        cwd=workdir,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def var_arg(name: str, value: object) -> str:
    # -var takes a string variable's value literally and parses any other as HCL (JSON is HCL).
    return f"{name}={value if isinstance(value, str) else json.dumps(value)}"


def accepts(workdir: Path, variable: str, value: object) -> bool:
    """Whether terraform accepts `value` for `variable` (its real block, validations included)."""
    (workdir / "main.tf").write_text(variable_block(variable), encoding="utf-8")
    result = terraform(
        workdir, "plan", "-input=false", "-no-color", "-var", var_arg(variable, value)
    )
    if result.returncode == 0:
        return True
    assert "Invalid value for variable" in result.stderr, result.stderr
    return False


def evaluate(workdir: Path, variables: dict[str, object], expression: str) -> object:
    """The value of an HCL expression ('${...}' as python-hcl2 gives it) with these variables."""
    (workdir / "main.tf").write_text(
        "".join(variable_block(name) for name in variables), encoding="utf-8"
    )
    m = re.fullmatch(r"\$\{(.*)\}", expression, re.S)
    assert m, expression
    args = ["console"]
    for name, value in variables.items():
        args += ["-var", var_arg(name, value)]
    result = terraform(workdir, *args, stdin=f"jsonencode({m.group(1)})\n")
    assert result.returncode == 0, result.stderr
    return json.loads(json.loads(result.stdout.strip()))


@needs_terraform
def test_tenancy_validation_accepts_the_two_modes_only(tmp_path: Path) -> None:
    for mode in TENANCY_MODES:
        assert accepts(tmp_path, "tenancy", mode), mode
    for bad in ("Directory", "tenants", "", "directory,user_documents"):
        assert not accepts(tmp_path, "tenancy", bad), bad


@needs_terraform
def test_relay_allowed_networks_validation_and_value(tmp_path: Path, src: Sources) -> None:
    good = ["10.8.0.0/24", "fd00::/64", "192.168.1.7/32"]
    assert accepts(tmp_path, "relay_allowed_networks", good)
    assert accepts(tmp_path, "relay_allowed_networks", [])
    for bad in (
        "10.0.0.5",
        "10.0.0.0/33",
        " 10.0.0.0/8",
        "10.0.0.0/8,10.1.0.0/16",
        "0.0.0.0/0",
        "::/0",
        "relay.example.com/24",
    ):
        assert not accepts(tmp_path, "relay_allowed_networks", [bad]), bad
    # The connector gets the very networks the operator listed.
    expression = connector_env(src.tf)["RELAY_ALLOWED_NETWORKS"]["value"]
    value = evaluate(tmp_path, {"relay_allowed_networks": good}, expression)
    assert isinstance(value, str)
    settings = load_settings({"GOOGLE_CLOUD_PROJECT": "p", "RELAY_ALLOWED_NETWORKS": value})
    assert settings.relay_allowed_networks == tuple(
        ipaddress.ip_network(n, strict=False) for n in good
    )
    empty = evaluate(tmp_path, {"relay_allowed_networks": []}, expression)
    assert empty == ""
    settings = load_settings({"GOOGLE_CLOUD_PROJECT": "p", "RELAY_ALLOWED_NETWORKS": empty})
    assert settings.relay_allowed_networks == ()


@needs_terraform
def test_relay_secret_ids_validation(tmp_path: Path) -> None:
    for sample, ok in SECRET_ID_SAMPLES.items():
        assert accepts(tmp_path, "relay_credential_secrets", [sample]) is ok, sample
    assert accepts(tmp_path, "relay_credential_secrets", [])
    assert not accepts(tmp_path, "relay_credential_secrets", ["a", "a"])


@needs_terraform
def test_release_name_and_apis_evaluated(tmp_path: Path, src: Sources) -> None:
    name = src.tf.locals["firestore_rules_release"]
    assert evaluate(tmp_path, {"firestore_database": "(default)"}, name) == "cloud.firestore"
    assert evaluate(tmp_path, {"firestore_database": "tenant-db"}, name) == (
        "cloud.firestore/tenant-db"
    )
    apis = src.tf.locals["apis"]
    off = evaluate(tmp_path, {"manage_firestore_rules": False}, apis)
    on = evaluate(tmp_path, {"manage_firestore_rules": True}, apis)
    assert isinstance(off, list) and isinstance(on, list)
    assert "secretmanager.googleapis.com" in off
    assert "firebaserules.googleapis.com" not in off
    assert set(on) - set(off) == {"firebaserules.googleapis.com"}
