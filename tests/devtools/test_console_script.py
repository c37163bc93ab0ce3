"""The admin CLI as a command (issue 15: "and a console script of the same name"): `make install`
installs the project into .venv, so `functions.admin` and `makecall-admin` are on its PATH."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("name", ["functions.admin", "makecall-admin"])
def test_the_admin_cli_is_a_command(name):
    script = Path(sys.executable).parent / name
    assert script.exists(), f"{script} missing: `make install` installs the project (-e .)"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for command in ("doctor", "explain", "tenants", "tenant", "ring", "relays"):
        assert command in done.stdout
