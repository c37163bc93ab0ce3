"""`python -m bench [NAME ...] [--quick]`: run the benchmarks (all by default), print a summary,
and write docs/benchmarks.md (full runs) with the machine's description.

    python -m bench                   # everything, full sizes (~8 minutes), writes the docs
    python -m bench ingest fanout     # chosen ones; other sections keep their last figures
    python -m bench --quick           # tiny sizes (~1 minute), writes nothing unless --output
    python -m bench --list

Targets are reported, never asserted: the exit code is non-zero only when a benchmark broke.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

from bench.common import ROOT, BenchResult, machine
from bench.report import render

BENCHMARKS = {
    "ingest": "bench.ingest",
    "e2e": "bench.e2e",
    "fanout": "bench.fanout",
    "coldstart": "bench.coldstart",
    "scale": "bench.scale",
    "burst": "bench.burst",
}
DOCS = ROOT / "docs" / "benchmarks.md"
RESULTS = ROOT / "bench" / "results.json"


def _tree() -> str:
    """Which code ran: BENCH_TREE when the caller says (e.g. an exported commit), else git's
    HEAD and what differs from it, bench/'s own files apart from the product's."""
    if explicit := os.environ.get("BENCH_TREE"):
        return explicit
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
        status = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    changed = [line[3:] for line in status.stdout.splitlines() if line.strip()]
    harness = [p for p in changed if p.startswith("bench/") or p == "docs/benchmarks.md"]
    product = [p for p in changed if p not in harness]
    text = head.stdout.strip()
    if harness:
        text += " + uncommitted bench/ changes"
    if product:
        shown = ", ".join(product[:5]) + (
            f" and {len(product) - 5} more" if len(product) > 5 else ""
        )
        text += f" + uncommitted changes to {shown}"
    return text


def _tree_during(before: str) -> str:
    after = _tree()
    if after == before:
        return before
    return f"{before} at the start; {after} at the end (the work tree changed during the run)"


def _run_one(name: str, quick: bool) -> BenchResult:
    started = time.perf_counter()
    try:
        result: BenchResult = importlib.import_module(BENCHMARKS[name]).run(quick=quick)
    except Exception as exc:
        result = BenchResult(name, name, error=f"{type(exc).__name__}: {exc}")
        traceback.print_exc()
    result.seconds = time.perf_counter() - started
    return result


def _summary(result: BenchResult) -> str:
    lines = [f"== {result.title}  ({result.seconds:.0f} s)"]
    if result.error:
        lines.append(f"   ERROR {result.error}")
    for row in result.rows:
        verdict = {True: "PASS", False: "FAIL", None: "    "}[row.passed]
        value = "–" if row.value is None else f"{row.value:,.1f}"
        base = "" if row.baseline is None else f"  (baseline {row.baseline:,.1f})"
        lines.append(f"   {verdict} {row.label}: {value} {row.unit} {row.target}{base}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--output", type=Path, help="markdown report (default: docs, full runs)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(BENCHMARKS))
        return 0
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)
    tree_before = _tree()
    load_before = os.getloadavg()
    started = time.time()
    results = []
    for name in names:
        result = _run_one(name, args.quick)
        print(_summary(result), flush=True)
        results.append(result)
    run_info = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "quick": args.quick,
        "tree": _tree_during(tree_before),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "machine": machine(),
    }
    payload = {"run": run_info, "results": {r.name: r.to_json() for r in results}}
    if args.json:
        args.json.write_text(json.dumps(payload, indent=1, default=str))
    output = args.output or (None if args.quick else DOCS)
    if output is not None:
        merged = payload
        if not args.quick and output == DOCS:
            merged = _merge_with_last(payload)
            RESULTS.write_text(json.dumps(merged, indent=1, default=str) + "\n")
        output.write_text(render(merged))
        print(f"wrote {output}")
    return 1 if any(r.error for r in results) else 0


def _merge_with_last(payload: dict) -> dict:
    """Benchmarks not run this time keep their last figures (each says when it ran)."""
    for result in payload["results"].values():
        result["ran"] = payload["run"]["started"]
    if not RESULTS.exists():
        return payload
    try:
        last = json.loads(RESULTS.read_text())
    except ValueError:
        return payload
    results = dict(last.get("results", {}))
    results.update(payload["results"])
    ordered = {name: results[name] for name in BENCHMARKS if name in results}
    return {"run": payload["run"], "results": ordered}


if __name__ == "__main__":
    sys.exit(main())
