"""cloudbuild.yaml (graph, tags, deploy), the connector Dockerfile and .dockerignore."""

from __future__ import annotations

import re
from typing import Any

from .conftest import ROOT, Terraform

# --- cloudbuild.yaml ------------------------------------------------------------------------------


def steps_by_id(cloudbuild: dict[str, Any]) -> dict[str, dict[str, Any]]:
    steps = cloudbuild["steps"]
    ids = [s.get("id") for s in steps]
    assert all(ids), "every step needs an id (waitFor refers to them)"
    assert len(ids) == len(set(ids)), f"duplicate step ids: {ids}"
    return {s["id"]: s for s in steps}


def step_text(step: dict[str, Any]) -> str:
    return " ".join(str(a) for a in step.get("args", []))


def ancestors(steps: dict[str, dict[str, Any]], step_id: str) -> set[str]:
    """Steps that must finish before step_id (transitively, through waitFor)."""
    order = list(steps)
    seen: set[str] = set()
    todo = [step_id]
    while todo:
        current = todo.pop()
        wait = steps[current].get("waitFor")
        # No waitFor: the step waits for every step defined before it.
        parents = order[: order.index(current)] if wait is None else [w for w in wait if w != "-"]
        for parent in parents:
            assert parent in steps, f"{current} waits for unknown step {parent}"
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen


def test_independent_steps_start_in_parallel(cloudbuild: dict[str, Any]) -> None:
    steps = steps_by_id(cloudbuild)
    for step_id in ("lint", "tests", "tf-validate", "build"):
        assert steps[step_id].get("waitFor") == ["-"], f"{step_id} should start at once"
        assert ancestors(steps, step_id) == set(), step_id


def test_tests_and_lint_run_before_push_and_deploy(cloudbuild: dict[str, Any]) -> None:
    steps = steps_by_id(cloudbuild)
    for gated in ("push", "deploy"):
        before = ancestors(steps, gated)
        assert {"lint", "tests", "tf-validate", "build", "guard"} <= before, (gated, before)
    assert "push" in ancestors(steps, "deploy")
    assert "fetch-tfvars" in ancestors(steps, "deploy")


def test_tests_step_runs_the_project_suite(cloudbuild: dict[str, Any]) -> None:
    tests = step_text(steps_by_id(cloudbuild)["tests"])
    assert tests.rstrip().endswith("make test")
    # `make install` compiles functions/core/_raw_gate.c: a compiler, libc and Python headers
    installed = set(tests.split("apt-get install", 1)[1].split(">/dev/null", 1)[0].split())
    assert {"gcc", "libc6-dev", "python3-dev"} <= installed, installed
    lint = step_text(steps_by_id(cloudbuild)["lint"])
    assert "ruff check" in lint


def test_image_is_tagged_by_commit_and_deployed_by_commit(cloudbuild: dict[str, Any]) -> None:
    steps = steps_by_id(cloudbuild)
    build = steps["build"]
    assert build["args"][0] == "build"
    tags = [a for a in build["args"] if str(a).startswith("--tag=")]
    assert "--tag=${_IMAGE}:$COMMIT_SHA" in tags
    assert "--tag=${_IMAGE}:$SHORT_SHA" in tags
    assert not any(t.endswith(":latest") for t in tags)
    assert steps["push"]["args"][:2] == ["push", "--all-tags"]
    deploy = step_text(steps["deploy"])
    assert "apply" in deploy and "-auto-approve" in deploy
    assert '-var="connector_image_tag=$COMMIT_SHA"' in deploy
    assert '-var="project_id=$PROJECT_ID"' in deploy
    # The operator's settings, then the commit and project, which win over them.
    assert deploy.index("-var-file=/workspace/operator.tfvars") < deploy.index("-var=")
    fetch = step_text(steps["fetch-tfvars"])
    assert "/workspace/operator.tfvars" in fetch and "infra/" not in fetch
    assert '-backend-config="bucket=${_TF_STATE_BUCKET}"' in deploy


def test_image_name_matches_the_terraform_repository(
    cloudbuild: dict[str, Any], tf: Terraform
) -> None:
    subs = cloudbuild["substitutions"]
    assert (
        subs["_IMAGE"] == "${_REGION}-docker.pkg.dev/${PROJECT_ID}/${_NAME_PREFIX}-images/connector"
    )
    # The Terraform side builds the same path from the same three inputs.
    assert tf.locals["connector_image"] == (
        "${var.region}-docker.pkg.dev/${var.project_id}/"
        "${google_artifact_registry_repository.images.repository_id}/connector:${var.connector_image_tag}"
    )
    assert subs["_REGION"] == tf.variables["region"]["default"]
    assert subs["_NAME_PREFIX"] == tf.variables["name_prefix"]["default"]
    deploy = step_text(steps_by_id(cloudbuild)["deploy"])
    assert '-var="region=${_REGION}"' in deploy
    assert '-var="name_prefix=${_NAME_PREFIX}"' in deploy


def test_every_user_substitution_is_defined(cloudbuild: dict[str, Any]) -> None:
    text = (ROOT / "cloudbuild.yaml").read_text(encoding="utf-8")
    used = set(re.findall(r"\$\{?(_[A-Z0-9_]+)", text))
    assert used <= set(cloudbuild["substitutions"]), used - set(cloudbuild["substitutions"])
    assert cloudbuild["options"]["dynamicSubstitutions"] is True
    # A user-specified build service account needs an explicit logging mode.
    assert cloudbuild["options"]["logging"] == "CLOUD_LOGGING_ONLY"


def test_shell_variables_are_escaped_from_substitution(cloudbuild: dict[str, Any]) -> None:
    # Cloud Build would replace $(...) and $VAR itself; shell syntax must be written $$.
    builtins = {"PROJECT_ID", "COMMIT_SHA", "SHORT_SHA", "BUILD_ID", "PROJECT_NUMBER", "LOCATION"}
    for step in cloudbuild["steps"]:
        for arg in step.get("args", []):
            for m in re.finditer(r"(?<!\$)\$(\(|\{?[A-Za-z_][A-Za-z0-9_]*)", str(arg)):
                token = m.group(1).lstrip("{")
                assert token != "(", f"{step['id']}: unescaped $( in {arg!r}"
                assert token in builtins or token.startswith("_"), f"{step['id']}: ${token}"


def test_terraform_validate_runs_in_the_pipeline(cloudbuild: dict[str, Any]) -> None:
    validate = step_text(steps_by_id(cloudbuild)["tf-validate"])
    assert "terraform fmt -check -recursive infra" in validate
    assert "init -backend=false" in validate
    assert "validate" in validate


# --- Dockerfile -----------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    out = []
    for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last:]


def test_dockerfile_base_is_pinned_slim_python_311() -> None:
    froms = [rest for word, rest in dockerfile_instructions() if word == "FROM"]
    # a build stage with a compiler for the raw gate, then the slim runtime image
    assert len(froms) == 2
    build, runtime = froms
    assert re.fullmatch(r"python:3\.11\.\d+-[a-z]+(@sha256:[0-9a-f]{64})? AS build", build), build
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", runtime), froms
    assert build.split("-")[0] == runtime.split("-")[0], "both stages on the same Python"


def test_the_image_gets_the_compiled_raw_gate_built_from_pyproject() -> None:
    instructions = dockerfile_instructions()
    build = instructions[: len(instructions) - len(final_stage())]
    runs = " ".join(rest for word, rest in build if word == "RUN")
    assert "pip install --no-cache-dir --no-deps --target /built ." in runs
    assert ("COPY", "pyproject.toml ./") in build
    assert ("COPY", "--from=build /src/_raw_gate.*.so ./functions/core/") in final_stage()
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'name = "functions.core._raw_gate"' in pyproject
    assert 'sources = ["functions/core/_raw_gate.c"]' in pyproject


def test_dockerfile_runs_the_connector_as_non_root() -> None:
    instructions = dockerfile_instructions()
    users = [rest for word, rest in instructions if word == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    cmd_index = max(i for i, (w, _) in enumerate(instructions) if w == "CMD")
    user_index = max(i for i, (w, _) in enumerate(instructions) if w == "USER")
    assert user_index < cmd_index
    assert instructions[cmd_index][1] == '["python", "-m", "functions.connector"]'
    env_text = " ".join(rest for word, rest in instructions if word == "ENV")
    assert "PORT" not in env_text, "Cloud Run sets PORT"


def test_image_gets_runtime_dependencies_only() -> None:
    instructions = final_stage()
    runs = [rest for word, rest in instructions if word == "RUN"]
    assert "pip install --no-cache-dir -r requirements.txt" in runs
    copies = [rest for word, rest in instructions if word in {"COPY", "ADD"}]
    assert copies == [
        "requirements.txt ./",
        "functions/ ./functions/",
        "--from=build /src/_raw_gate.*.so ./functions/core/",
    ], copies
    code = " ".join(rest for _, rest in instructions)
    assert "requirements-dev" not in code and "requirements-infra" not in code
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    rules = [r.strip() for r in ignore if r.strip() and not r.startswith("#")]
    assert rules[0] == "*", ".dockerignore should be a whitelist"
    assert set(r for r in rules if r.startswith("!")) == {
        "!requirements.txt",
        "!pyproject.toml",  # the build stage's extension definition
        "!functions/",
    }
    assert "**/*.so" in rules, "a developer's .so never enters the image; it is built there"
