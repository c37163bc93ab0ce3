#!/usr/bin/env bash
# Every offline infrastructure check, in one script (called by `make test`):
#   1. terraform fmt -check -recursive infra      (skipped with a message when terraform is absent)
#   2. checkov on infra/ (Terraform) and the Dockerfile: no failed check; suppressions only
#      inline with a reason (#checkov:skip=CKV_...:reason)
#   3. pytest tests/infra with the MAIN .venv (python-hcl2 wiring tests, cloudbuild.yaml checks,
#      and every resource, argument and block of infra/*.tf against the google provider 6.50.0
#      schema from the npm package @cdktf/provider-google, installed below with npm ci)
# checkov lives in its own virtualenv (.venv-infra), installed from requirements-infra.txt;
# python-hcl2 and PyYAML are installed into .venv when missing there (see requirements-infra.txt).
# Exits non-zero when any check fails. `terraform validate` needs the providers: Cloud Build runs it.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
started=$SECONDS
failed=()

REQ=requirements-infra.txt
INFRA_VENV=.venv-infra
MAIN_PY=.venv/bin/python
TEST_ONLY_RE='^(python-hcl2|PyYAML)=='

say() { printf '== infra/check.sh: %s\n' "$*"; }
# pip on this machine warns about every missing local index folder: keep real errors only.
quiet_pip() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

# --- virtualenvs -----------------------------------------------------------------------------
if [ ! -x "$INFRA_VENV/bin/python" ]; then
  say "creating $INFRA_VENV"
  "${PYTHON:-python3}" -m venv "$INFRA_VENV" || { say "cannot create $INFRA_VENV"; exit 2; }
fi
want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [ "$(cat "$INFRA_VENV/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  say "installing checkov into $INFRA_VENV (first run: about a minute)"
  grep -vE "$TEST_ONLY_RE" "$REQ" >"$INFRA_VENV/requirements.txt"
  quiet_pip "$INFRA_VENV/bin/pip" install --quiet --disable-pip-version-check \
    -r "$INFRA_VENV/requirements.txt" || { say "pip install into $INFRA_VENV failed"; exit 2; }
  echo "$want" >"$INFRA_VENV/.requirements.sha256"
fi

if [ ! -x "$MAIN_PY" ]; then
  say "$MAIN_PY not found: create the main virtualenv first (pip install -r requirements-dev.txt)"
  exit 2
fi
if ! "$MAIN_PY" -c "import yaml; from hcl2.utils import SerializationOptions" 2>/dev/null; then
  say "installing python-hcl2 and PyYAML into .venv (add them to requirements-dev.txt)"
  grep -E "$TEST_ONLY_RE" "$REQ" >"${TMPDIR:-/tmp}/check-sh-test-reqs.$$.txt"
  quiet_pip "$MAIN_PY" -m pip install --quiet --disable-pip-version-check \
    -r "${TMPDIR:-/tmp}/check-sh-test-reqs.$$.txt"
  rc=$?
  rm -f "${TMPDIR:-/tmp}/check-sh-test-reqs.$$.txt"
  [ $rc -eq 0 ] || { say "pip install into .venv failed"; exit 2; }
fi

# The provider schema for tests/infra/test_provider_schema.py: npm ci from the lock file, into
# tests/infra/schema/node_modules (ignored by git); skipped when the pinned version is there.
SCHEMA=tests/infra/schema
schema_want=$(sed -n 's/.*"@cdktf\/provider-google": "\([^"]*\)".*/\1/p' "$SCHEMA/package.json")
schema_have=$(sed -n 's/^  "version": "\([^"]*\)".*/\1/p' \
  "$SCHEMA/node_modules/@cdktf/provider-google/package.json" 2>/dev/null)
if [ "$schema_have" != "$schema_want" ]; then
  if ! command -v npm >/dev/null 2>&1 && [ -n "${CI:-}" ] && [ "$(id -u)" = 0 ]; then
    # A CI image without Node (Cloud Build's tests step): Debian's npm is enough.
    say "npm not found: installing Debian's npm"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; } ||
      { say "apt-get install npm failed"; exit 2; }
  fi
  if ! command -v npm >/dev/null 2>&1; then
    say "npm not found: it installs the provider schema (apt-get install npm)"
    exit 2
  fi
  say "installing @cdktf/provider-google $schema_want (the provider schema) into $SCHEMA"
  (cd "$SCHEMA" && npm ci --silent --no-audit --no-fund --ignore-scripts >/dev/null) ||
    { say "npm ci in $SCHEMA failed"; exit 2; }
fi

# --- 1. terraform fmt --------------------------------------------------------------------------
if command -v terraform >/dev/null 2>&1; then
  say "terraform fmt -check -recursive infra"
  # An empty CLI config silences the warning about a missing ~/.terraformrc.
  if ! TF_CLI_CONFIG_FILE="${TF_CLI_CONFIG_FILE:-/dev/null}" terraform fmt -check -recursive -diff infra; then
    say "terraform fmt: files above need 'terraform fmt -recursive infra'"
    failed+=("terraform fmt")
  fi
else
  say "terraform not found: skipping terraform fmt -check (Cloud Build's tf-validate step runs it)"
fi

# --- 2. checkov ----------------------------------------------------------------------------------
checkov() {
  # --skip-download: no calls to the Bridgecrew/Prisma platform; offline and quiet.
  "$INFRA_VENV/bin/checkov" --compact --quiet --skip-download "$@"
}
say "checkov: infra/ (terraform)"
checkov --directory infra --framework terraform || failed+=("checkov terraform")
say "checkov: Dockerfile"
checkov --file Dockerfile --framework dockerfile || failed+=("checkov dockerfile")

# --- 3. python-hcl2 and cloudbuild.yaml tests -------------------------------------------------
say "pytest tests/infra (main .venv)"
"$MAIN_PY" -m pytest -q tests/infra || failed+=("pytest tests/infra")

elapsed=$((SECONDS - started))
if [ ${#failed[@]} -gt 0 ]; then
  say "FAILED (${elapsed}s): ${failed[*]}"
  exit 1
fi
say "all infra checks passed (${elapsed}s)"
