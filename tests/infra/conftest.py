"""Parsed Terraform (python-hcl2), cloudbuild.yaml and helpers shared by the infra tests.

These tests run offline: they read infra/*.tf as text, never call terraform or Google Cloud.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml
from hcl2.utils import SerializationOptions

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"

HCL_OPTIONS = SerializationOptions(
    strip_string_quotes=True, explicit_blocks=False, with_comments=False
)


@dataclass
class Terraform:
    """infra/*.tf merged: resources[type][name], data[type][name], locals, variables, outputs."""

    resources: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    data: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    terraform: list[dict[str, Any]] = field(default_factory=list)
    text: str = ""

    def resource(self, rtype: str, name: str) -> dict[str, Any]:
        assert name in self.resources.get(rtype, {}), f"missing resource {rtype}.{name}"
        return self.resources[rtype][name]

    def of_type(self, rtype: str) -> dict[str, dict[str, Any]]:
        return self.resources.get(rtype, {})


def load_terraform(directory: Path = INFRA) -> Terraform:
    tf = Terraform()
    files = sorted(directory.glob("*.tf"))
    assert files, f"no .tf files in {directory}"
    for path in files:
        text = path.read_text(encoding="utf-8")
        tf.text += text
        doc = hcl2.loads(text, serialization_options=HCL_OPTIONS)
        for block in doc.get("resource", []):
            for rtype, by_name in block.items():
                for name, body in by_name.items():
                    assert name not in tf.resources.get(rtype, {}), f"duplicate {rtype}.{name}"
                    tf.resources.setdefault(rtype, {})[name] = body
        for block in doc.get("data", []):
            for dtype, by_name in block.items():
                for name, body in by_name.items():
                    tf.data.setdefault(dtype, {})[name] = body
        for block in doc.get("locals", []):
            tf.locals.update(block)
        for block in doc.get("variable", []):
            tf.variables.update(block)
        for block in doc.get("output", []):
            tf.outputs.update(block)
        tf.terraform.extend(doc.get("terraform", []))
    return tf


def one(blocks: Any, what: str = "block") -> dict[str, Any]:
    """The single nested block hcl2 returns as a one-element list."""
    assert isinstance(blocks, list) and len(blocks) == 1, f"expected exactly one {what}"
    return blocks[0]


def ref(expr: Any) -> str:
    """'${google_x.y.attr}' -> 'google_x.y.attr' (a plain reference, nothing else)."""
    assert isinstance(expr, str), f"not an expression: {expr!r}"
    m = re.fullmatch(r"\$\{([^{}]+)\}", expr)
    assert m, f"not a plain reference: {expr!r}"
    return m.group(1)


def roles_in(expr: str) -> set[str]:
    """Role names listed in an expression such as '${toset([\"roles/a\", ...])}'."""
    return set(re.findall(r"roles/[A-Za-z0-9_.]+", expr))


@pytest.fixture(scope="session")
def tf() -> Terraform:
    return load_terraform()


@pytest.fixture(scope="session")
def cloudbuild() -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc
