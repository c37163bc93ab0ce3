"""The google provider's schema, read offline from the npm package @cdktf/provider-google.

That package is generated from the provider's own schema (16.12.x = google provider 6.50.0, the
version infra/versions.tf pins). For every resource and data source it ships
lib/<name>/index.js, whose `synthesizeHclAttributes()` (the resource) and
`<struct>ToHclTerraform(struct)` functions (each nested block) list every argument by its
Terraform name with `isBlock: true|false`; a block's entry names the function of its own struct.
That is all a check of names needs, so no terraform binary and no registry are involved.

infra/check.sh installs the package with `npm ci` into tests/infra/schema/node_modules.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parent / "schema"
PACKAGE = SCHEMA_DIR / "node_modules" / "@cdktf" / "provider-google"
PROVIDER_VERSION = "6.50.0"

# Terraform's own meta-arguments, allowed on every resource / data source.
RESOURCE_META = {"count", "for_each", "depends_on", "provider"}
RESOURCE_META_BLOCKS = {"lifecycle", "provisioner", "connection"}
DATA_META_BLOCKS = {"lifecycle"}

_ENTRY = re.compile(r"^\s{8,}(\w+): \{\s*\n\s*value: (.*?),\s*\n\s*isBlock: (true|false),", re.M)
_FUNCTION = re.compile(r"^function (\w+)ToHclTerraform\(struct\) \{\n(.*?)^\}", re.M | re.S)
_SYNTH = re.compile(r"synthesizeHclAttributes\(\) \{\n(.*?)^    \}", re.M | re.S)
_STRUCT_FN = re.compile(r"(?<![.\w])(\w+)ToHclTerraform\b")


class SchemaMissing(AssertionError):
    pass


@dataclass
class Block:
    """Arguments (attributes) and nested blocks of one schema level."""

    attributes: set[str] = field(default_factory=set)
    blocks: dict[str, Block] = field(default_factory=dict)


def installed_version() -> str:
    manifest = PACKAGE / "package.json"
    if not manifest.is_file():
        raise SchemaMissing(
            f"{PACKAGE} is not installed: run `bash infra/check.sh` (it runs npm ci in "
            f"{SCHEMA_DIR.relative_to(SCHEMA_DIR.parents[2])})"
        )
    return str(json.loads(manifest.read_text(encoding="utf-8"))["version"])


def generated_provider_version() -> str:
    manifest = json.loads((PACKAGE / "package.json").read_text(encoding="utf-8"))
    return str(manifest["cdktf"]["provider"]["version"])


def _module_dir(tf_type: str, *, data: bool) -> Path:
    # google_logging_metric -> lib/logging-metric; data google_project -> lib/data-google-project;
    # the provider block itself (type "google") -> lib/provider
    if tf_type == "google":
        return PACKAGE / "lib" / "provider"
    stem = tf_type.removeprefix("google_").replace("_", "-")
    return PACKAGE / "lib" / (f"data-google-{stem}" if data else stem)


def _parse_level(body: str, functions: dict[str, str], seen: tuple[str, ...]) -> Block:
    level = Block()
    for name, value, is_block in _ENTRY.findall(body):
        if is_block == "false":
            level.attributes.add(name)
            continue
        structs = [fn for fn in _STRUCT_FN.findall(value) if fn in functions]
        assert len(structs) == 1, f"cannot tell the struct of block {name!r}: {value!r}"
        struct = structs[0]
        # Recursive schemas (a block containing itself) stop at the second visit.
        level.blocks[name] = (
            Block()
            if struct in seen
            else _parse_level(functions[struct], functions, (*seen, struct))
        )
    return level


@cache
def schema_of(tf_type: str, *, data: bool = False) -> Block | None:
    """The schema of a resource (or data source) type; None when the provider has no such type."""
    installed_version()
    index = _module_dir(tf_type, data=data) / "index.js"
    if not index.is_file():
        return None
    text = index.read_text(encoding="utf-8")
    if f'tfResourceType = "{tf_type}"' not in text:
        return None
    functions = {m.group(1): m.group(2) for m in _FUNCTION.finditer(text)}
    synth = _SYNTH.search(text)
    assert synth, f"{index}: no synthesizeHclAttributes()"
    return _parse_level(synth.group(1), functions, ())


# --- walking the configuration -------------------------------------------------------------------


def _is_block(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, dict) and v.get("__is_block__") for v in value)
    )


def check_body(body: dict[str, Any], schema: Block, where: str) -> list[str]:
    """Every argument and block of `body` (python-hcl2, explicit_blocks=True) against `schema`."""
    errors: list[str] = []
    for key, value in body.items():
        if key == "__is_block__":
            continue
        if key == "dynamic":
            # dynamic "name" { for_each = ...; content { ... } } generates blocks called name.
            for dyn in value:
                for name, spec in dyn.items():
                    if name == "__is_block__":
                        continue
                    if name not in schema.blocks:
                        errors.append(f"{where}: unknown block {name!r} (dynamic)")
                        continue
                    for content in spec.get("content", []):
                        errors += check_body(content, schema.blocks[name], f"{where}.{name}")
            continue
        if _is_block(value):
            if key not in schema.blocks:
                hint = " (an argument: write `key = ...`)" if key in schema.attributes else ""
                errors.append(f"{where}: unknown block {key!r}{hint}")
                continue
            for item in value:
                errors += check_body(item, schema.blocks[key], f"{where}.{key}")
        elif key not in schema.attributes:
            hint = " (a block: write `key { ... }`)" if key in schema.blocks else ""
            errors.append(f"{where}: unknown argument {key!r}{hint}")
    return errors


def check_configuration(docs: dict[str, dict[str, Any]], other_providers: set[str]) -> list[str]:
    """All resources and data sources of parsed files {file name: document}. The package knows
    the google provider only: a type of another provider must be named in `other_providers`."""
    errors: list[str] = []
    for file_name, doc in sorted(docs.items()):
        for section, data in (("resource", False), ("data", True)):
            for block in doc.get(section, []):
                for tf_type, by_name in block.items():
                    if tf_type == "__is_block__":
                        continue
                    for name, body in by_name.items():
                        if name == "__is_block__":
                            continue
                        where = f"{file_name}: {'data.' if data else ''}{tf_type}.{name}"
                        if not tf_type.startswith("google_"):
                            if tf_type not in other_providers:
                                errors.append(f"{where}: type of another provider, not checked")
                            continue
                        schema = schema_of(tf_type, data=data)
                        if schema is None:
                            kind = "data source" if data else "resource type"
                            errors.append(f"{where}: unknown {kind} {tf_type!r}")
                            continue
                        errors += check_body(_without_meta(body, data), schema, where)
        for block in doc.get("provider", []):
            for name, body in block.items():
                if name == "__is_block__" or not name.startswith("google"):
                    continue
                schema = schema_of("google")
                assert schema is not None, "the package has no provider schema"
                config = {k: v for k, v in body.items() if k != "alias"}
                errors += check_body(config, schema, f"{file_name}: provider {name}")
    return errors


def _without_meta(body: dict[str, Any], data: bool) -> dict[str, Any]:
    meta_blocks = DATA_META_BLOCKS if data else RESOURCE_META_BLOCKS
    return {k: v for k, v in body.items() if k not in RESOURCE_META and k not in meta_blocks}
