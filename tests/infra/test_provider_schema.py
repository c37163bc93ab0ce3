"""infra/*.tf against the google provider's schema (6.50.0), offline: every resource type, data
source, argument and nested block must exist there. `terraform validate` needs the providers
from the registry, which this repository's CI cannot reach; this check needs only the npm
package infra/check.sh installs (tests/infra/provider_schema.py says how it is read)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import hcl2
import pytest
from hcl2.utils import SerializationOptions

from . import provider_schema
from .conftest import INFRA
from .provider_schema import PROVIDER_VERSION, check_configuration, schema_of

EXPLICIT = SerializationOptions(strip_string_quotes=True, explicit_blocks=True, with_comments=False)
# Types of other providers infra/ uses (versions.tf): the google package cannot check them.
OTHER_PROVIDERS = {"archive_file"}


def parse_dir(directory: Path) -> dict[str, dict[str, Any]]:
    """Every *.tf in `directory` (app_endpoints.tf and any other new file included)."""
    files = sorted(directory.glob("*.tf"))
    assert files, f"no .tf files in {directory}"
    return {
        f.name: hcl2.loads(f.read_text(encoding="utf-8"), serialization_options=EXPLICIT)
        for f in files
    }


def test_package_is_the_pinned_providers_schema() -> None:
    assert provider_schema.installed_version().startswith("16.12.")
    assert provider_schema.generated_provider_version() == PROVIDER_VERSION
    versions = (INFRA / "versions.tf").read_text(encoding="utf-8")
    pinned = re.search(
        r'source\s*=\s*"hashicorp/google"\s*\n\s*(?:#.*\n\s*)*version\s*=\s*"([^"]+)"', versions
    )
    assert pinned, "infra/versions.tf pins no google provider version"
    # ~> 6.50 takes any 6.x >= 6.50: the schema checked is the lowest of them.
    assert pinned.group(1) == "~> 6.50", pinned.group(1)


def test_every_resource_argument_and_block_is_in_the_schema() -> None:
    docs = parse_dir(INFRA)
    errors = check_configuration(docs, OTHER_PROVIDERS)
    assert not errors, "not in the google provider 6.50.0 schema:\n" + "\n".join(errors)


def test_every_file_declares_something_checked() -> None:
    # A file the parser read as empty would pass the check above by checking nothing.
    docs = parse_dir(INFRA)
    checked = {name for name, doc in docs.items() if doc.get("resource") or doc.get("data")}
    assert {
        "connector.tf",
        "notifier.tf",
        "pubsub.tf",
        "monitoring.tf",
        "alerts.tf",
        "dashboard.tf",
    } <= checked, checked


def test_schema_reader_sees_nested_blocks() -> None:
    run = schema_of("google_cloud_run_v2_service")
    assert run is not None
    containers = run.blocks["template"].blocks["containers"]
    assert {"image", "name"} <= containers.attributes
    assert "limits" in containers.blocks["resources"].attributes  # a map argument, not a block
    assert "http_get" in containers.blocks["startup_probe"].blocks
    metric = schema_of("google_logging_metric")
    assert metric is not None and "value_extractor" in metric.attributes
    assert "linear_buckets" in metric.blocks["bucket_options"].blocks
    assert schema_of("google_project", data=True) is not None
    assert schema_of("google_no_such_thing") is None
    provider = schema_of("google")
    assert provider is not None and {"project", "region", "default_labels"} <= provider.attributes


BREAKAGES = {
    "a wrong argument": (
        "pubsub.tf",
        "  enable_message_ordering    = true\n",
        "  enable_message_ordering    = true\n  enable_message_odering     = true\n",
        "unknown argument 'enable_message_odering'",
    ),
    "a wrong nested block": (
        "connector.tf",
        "    scaling {\n",
        "    scailing {\n      min_instance_count = 1\n    }\n\n    scaling {\n",
        "unknown block 'scailing'",
    ),
    "a wrong argument deep inside": (
        "connector.tf",
        '          path = "/healthz"\n        }\n        initial_delay_seconds',
        '          path = "/healthz"\n          paht = "/"\n'
        "        }\n        initial_delay_seconds",
        "startup_probe.http_get: unknown argument 'paht'",
    ),
    "an argument written as a block": (
        "pubsub.tf",
        '  expiration_policy {\n    ttl = "" # never expires, even with no traffic\n  }\n',
        '  expiration_policy {\n    ttl = "" # never expires, even with no traffic\n  }\n'
        '  labels {\n    a = "b"\n  }\n',
        "unknown block 'labels' (an argument",
    ),
    "a wrong provider argument": (
        "versions.tf",
        "  region  = var.region\n",
        "  region  = var.region\n  regoin  = var.region\n",
        "provider google: unknown argument 'regoin'",
    ),
    "an unknown resource type": (
        "main.tf",
        'resource "google_project_service" "enabled" {',
        'resource "google_project_servce" "typo" {\n  project = "p"\n}\n\n'
        'resource "google_project_service" "enabled" {',
        "unknown resource type 'google_project_servce'",
    ),
}


@pytest.mark.parametrize("case", list(BREAKAGES))
def test_the_check_fails_on(case: str, tmp_path: Path) -> None:
    file_name, old, new, expected = BREAKAGES[case]
    copy = tmp_path / "infra"
    shutil.copytree(INFRA, copy, ignore=shutil.ignore_patterns(".build", ".terraform"))
    text = (copy / file_name).read_text(encoding="utf-8")
    assert old in text, f"{case}: the text to break is no longer in {file_name}"
    (copy / file_name).write_text(text.replace(old, new, 1), encoding="utf-8")
    errors = check_configuration(parse_dir(copy), OTHER_PROVIDERS)
    assert any(expected in e for e in errors), (case, errors)


def test_dynamic_blocks_are_checked(tmp_path: Path) -> None:
    # A google resource with a dynamic block whose content has a wrong argument.
    (tmp_path / "x.tf").write_text(
        'resource "google_storage_bucket" "b" {\n'
        '  name     = "b"\n  location = "EU"\n'
        '  dynamic "lifecycle_rule" {\n    for_each = [1]\n    content {\n'
        '      action {\n        type = "Delete"\n      }\n'
        "      condition {\n        age  = 1\n        agee = 2\n      }\n"
        "    }\n  }\n}\n",
        encoding="utf-8",
    )
    errors = check_configuration(parse_dir(tmp_path), OTHER_PROVIDERS)
    assert errors == [
        "x.tf: google_storage_bucket.b.lifecycle_rule.condition: unknown argument 'agee'"
    ]


def test_a_type_of_an_unexpected_provider_is_reported(tmp_path: Path) -> None:
    (tmp_path / "x.tf").write_text('resource "random_id" "r" {\n  byte_length = 4\n}\n')
    errors = check_configuration(parse_dir(tmp_path), OTHER_PROVIDERS)
    assert errors == ["x.tf: random_id.r: type of another provider, not checked"]
