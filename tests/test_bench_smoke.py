"""The benchmark harness keeps working: `python -m bench --quick` runs every benchmark at tiny
sizes against the real local parts (Google's Firestore and Pub/Sub emulators included) and
produces numbers. Timing targets are NOT asserted here (issue 6: they do not belong in `make
test`); only that each benchmark ran, measured, and that what it counts arrived: a benchmark whose
calls, pushes or relay connections went missing measured nothing worth reading."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import BENCHMARKS
from bench.report import render

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench")
    report, raw = out / "benchmarks.md", out / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", str(report), "--json", str(raw)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"report": report.read_text(), "raw": json.loads(raw.read_text())}


@pytest.mark.timeout(320)
def test_every_benchmark_runs_and_measures(quick_run):
    results = quick_run["raw"]["results"]
    assert set(results) == set(BENCHMARKS)
    for name, result in results.items():
        assert not result["error"], (name, result["error"])
        numbers = [row["value"] for row in result["rows"] if row["value"] is not None]
        assert numbers and all(value >= 0 for value in numbers), name
        assert any(row["target"] for row in result["rows"]), f"{name} states no target"
        assert any(row["baseline"] is not None for row in result["rows"]), f"{name}: no baseline"


# Rows that count things (not timings): every call delivered, every push, every relay connected.
COUNTED_UNITS = {"calls", "pushes", "relays"}


@pytest.mark.timeout(320)
def test_everything_a_benchmark_counts_arrived(quick_run):
    counted = [
        (name, row)
        for name, result in quick_run["raw"]["results"].items()
        for row in result["rows"]
        if row["unit"] in COUNTED_UNITS and row["target"]
    ]
    assert {name for name, _ in counted} >= {"e2e", "coldstart", "scale"}
    missing = [(name, row["label"], row["value"], row["target"]) for name, row in counted]
    assert all(row["passed"] for _, row in counted), missing


@pytest.mark.timeout(320)
def test_e2e_takes_the_pubsub_emulator_path_and_measures_its_floor(quick_run):
    raw = quick_run["raw"]["results"]["e2e"]["raw"]
    for phase in ("push", "floor", "pubsub", "pubsub_floor"):
        assert raw[phase]["complete_calls"] == raw[phase]["calls"] > 0, phase
    # each device rung once through Pub/Sub: the notifier's ledger holds on redeliveries
    assert raw["pubsub"]["pushes"] == 3 * raw["pubsub"]["calls"]
    assert "connector" in raw["push"]["cpu_ms_per_call"]
    assert "listen_responses" in raw["push"]
    assert raw["push"]["listen_control"] >= 1  # the Listen probe does see a `users` write


@pytest.mark.timeout(320)
def test_the_report_has_the_machine_a_table_per_benchmark_and_the_proposals(quick_run):
    report = quick_run["report"]
    assert "## Machine" in report and "Python" in report and "websockets" in report
    for result in quick_run["raw"]["results"].values():
        assert f"## {result['title']}" in report
    assert report.count("| figure | value | target | baseline | ratio | pass/fail |") == len(
        BENCHMARKS
    )
    assert "## What the numbers drove" in report
    assert "## What changed with Google's emulators" in report
    assert "Emulators: " in report and "cloud-firestore-emulator" in report


@pytest.mark.timeout(320)
def test_coldstart_times_the_shipped_notifier_and_its_proposal_reads_as_adopted(quick_run):
    result = quick_run["raw"]["results"]["coldstart"]
    # the prototype (messaging service without firebase-admin's httpx client) is fcm_sender.py's
    # `_messaging_service` now: only the shipped notifier starts, 3 pushes per counted start
    assert not any("prototype" in row["label"] for row in result["rows"])
    assert "prototype" not in result["raw"]
    pushes = next(row for row in result["rows"] if row["unit"] == "pushes")
    assert pushes["value"] == 3 * len(result["raw"]["starts"]) > 0
    (proposal,) = [p for p in result["proposals"] if "_MessagingService" in p["where"]]
    line = next(x for x in quick_run["report"].splitlines() if proposal["where"] in x)
    assert "**Adopted:**" in line and "2958842" in line


def test_every_adopted_note_finds_its_proposal_in_the_last_full_run():
    """report.py matches an adopted note to a proposal by its `where`: a note that matches none
    would silently vanish from docs/benchmarks.md (bench/results.json is the full run it shows;
    quick runs leave some comparison variants out)."""
    from bench.findings import FINDINGS
    from bench.report import ADOPTED

    results = json.loads((ROOT / "bench" / "results.json").read_text())["results"]
    wheres = [str(p["where"]) for r in results.values() for p in r.get("proposals", [])]
    wheres += [str(f["where"]) for f in FINDINGS]
    assert [key for key in ADOPTED if not any(key in where for where in wheres)] == []


@pytest.mark.timeout(320)
def test_the_mix_has_one_ringing_call_per_200_frames():
    from bench.mix import build_frames, describe

    mix = describe(build_frames(2_000))
    assert mix["frames"] == 2_000
    assert mix["ringing"] == 10


def test_report_renders_a_broken_benchmark_without_failing():
    payload = {
        "run": {
            "started": "t",
            "seconds": 1.0,
            "quick": True,
            "load_before": [0],
            "load_after": [0],
            "machine": {
                "cpu": "x",
                "cores": 2,
                "usable_cores": 2,
                "memory_gib": 1,
                "os": "L",
                "python": "P",
                "java": "j",
                "emulators": {"cloud-firestore-emulator": "1"},
                "packages": {},
                "nofile_limit": [1, 1],
            },
        },
        "results": {
            "ingest": {"name": "ingest", "title": "1. Ingest", "error": "boom", "rows": []}
        },
    }
    assert "**Broke:** `boom`" in render(payload)
