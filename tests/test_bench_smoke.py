"""The benchmark harness keeps working: `python -m bench --quick` runs every benchmark at tiny
sizes against the real local parts and produces numbers. Timing targets are NOT asserted here
(issue 6: they do not belong in `make test`); only that each benchmark ran and measured."""

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
                "node": "n",
                "packages": {},
                "nofile_limit": [1, 1],
            },
        },
        "results": {
            "ingest": {"name": "ingest", "title": "1. Ingest", "error": "boom", "rows": []}
        },
    }
    assert "**Broke:** `boom`" in render(payload)
