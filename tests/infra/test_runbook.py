"""docs/runbook.md names every log line an operator may see: each constant message of a log call
in functions/ (found with ast, as `grep log.` would) appears there in backquotes, and every alert
section the alert policies link exists (tests/infra/test_monitoring.py)."""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import ROOT

FUNCTIONS = ROOT / "functions"
RUNBOOK = ROOT / "docs" / "runbook.md"
LEVELS = {"debug", "info", "warning", "error", "exception", "critical", "log"}


def log_messages(root: Path = FUNCTIONS) -> dict[str, str]:
    """{message: 'file:line'} of every log call whose message is a string constant."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*.py")):
        if path.name == "log.py" and path.parent == root:
            continue  # the formatter itself
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in {"log", "logger"}
                and node.func.attr in LEVELS
            ):
                continue
            args = node.args[1:] if node.func.attr == "log" else node.args
            if args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str):
                found.setdefault(args[0].value, f"{path.relative_to(root.parent)}:{node.lineno}")
    return found


def test_every_log_message_is_in_the_runbook() -> None:
    messages = log_messages()
    assert len(messages) > 40, "the log call scan found too little: is it still reading functions/?"
    runbook = RUNBOOK.read_text(encoding="utf-8")
    missing = {m: where for m, where in messages.items() if f"`{m}`" not in runbook}
    assert not missing, "log lines docs/runbook.md does not explain:\n" + "\n".join(
        f"  {where}: {m!r}" for m, where in sorted(missing.items(), key=lambda kv: kv[1])
    )


def test_the_scan_finds_each_form_of_log_call(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(
        "log.info('a', extra=fields(x=1))\n"
        "log.log(logging.WARNING, 'b')\n"
        "logger.exception('c')\n"
        "log.info(message)\n"  # not a constant: not found
        "other.info('d')\n",
        encoding="utf-8",
    )
    assert set(log_messages(tmp_path)) == {"a", "b", "c"}
