"""docs/benchmarks.md from a run's results: the machine, a table per benchmark (figure, target,
baseline, ratio, pass/fail), notes, and the ranked proposals the numbers drove."""

from __future__ import annotations

from typing import Any

from bench.findings import FINDINGS


def _num(value: Any, unit: str = "") -> str:
    if value is None:
        return "–"
    if unit == "×" or (isinstance(value, float) and abs(value) < 10):
        text = f"{value:.2f}"
    elif abs(value) >= 1000:
        text = f"{value:,.0f}"
    else:
        text = f"{value:.1f}"
    return f"{text} {unit}".strip()


def _verdict(passed: bool | None) -> str:
    return {True: "**pass**", False: "**FAIL**", None: ""}[passed]


def _table(result: dict[str, Any]) -> list[str]:
    lines = [
        "| figure | value | target | baseline | ratio | pass/fail |",
        "|---|---:|---|---:|---:|---|",
    ]
    for row in result["rows"]:
        base = _num(row["baseline"], row["unit"] if row["unit"] != "×" else "")
        if row["baseline_label"] and row["baseline"] is not None:
            base = f"{base} ({row['baseline_label']})"
        note = f" — {row['note']}" if row.get("note") else ""
        lines.append(
            f"| {row['label']}{note} | {_num(row['value'], row['unit'])} | {row['target'] or '–'} "
            f"| {base} | {_num(row['ratio'], '×') if row['ratio'] is not None else '–'} "
            f"| {_verdict(row['passed'])} |"
        )
    return lines


def _machine(run: dict[str, Any]) -> list[str]:
    m = run["machine"]
    packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    quick = " (quick sizes)" if run["quick"] else ""
    return [
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), "
        f"{m['memory_gib']} GiB memory, {m['os']}",
        f"- {m['python']}, Node {m['node']}; RLIMIT_NOFILE {m['nofile_limit']}",
        f"- Packages: {packages}",
        f"- Run: {run['started']}, {run['seconds']:.0f} s{quick}; "
        f"load average before {run['load_before']}, after {run['load_after']} (the machine may "
        "be shared: a load above ~0.5 before the run means other work competed for the 2 cores)",
    ]


def render(payload: dict[str, Any]) -> str:
    run = payload["run"]
    results = payload["results"]
    out = [
        "# Benchmarks",
        "",
        "Written by `python -m bench` (issue 6); do not edit by hand. `python -m bench NAME` "
        "reruns one benchmark and keeps the others' last figures; `python -m bench --quick` is "
        "the smoke run (tiny sizes, tests/test_bench_smoke.py). Each benchmark runs against a "
        "baseline in the same run; targets are reported here, never asserted by `make test`.",
        "",
        *_machine(run),
        "",
        "## Summary",
        "",
        "| benchmark | targets met | ran |",
        "|---|---|---|",
    ]
    for result in results.values():
        verdicts = [r["passed"] for r in result["rows"] if r["passed"] is not None]
        met = f"{sum(verdicts)}/{len(verdicts)}" if not result.get("error") else "error"
        out.append(f"| {result['title']} | {met} | {result.get('ran', run['started'])} |")
    for result in results.values():
        out += ["", f"## {result['title']}", ""]
        if result.get("error"):
            out += [f"**Broke:** `{result['error']}`", ""]
            continue
        if result["method"]:
            out += [f"Method: {result['method']}", ""]
        if result["baseline"]:
            out += [f"Baseline: {result['baseline']}.", ""]
        out += _table(result)
        if result["notes"]:
            out += ["", *[f"- {note}" for note in result["notes"]]]
        out += ["", f"({result['seconds']:.0f} s)"]
    out += ["", "## What the numbers drove", ""]
    out += [
        "Proposals for the owners of functions/ (this harness changes no product code). Each was "
        "measured: a prototype in the benchmark's own process (bench/prototypes.py, the same run) "
        "or a profile (py-spy / pyinstrument / cProfile), as said. Ranked by measured gain. Those "
        "the product has since adopted say so; their figures above are already the new code's.",
        "",
        "| # | where | measured share | proposed change | measured gain |",
        "|---|---|---|---|---|",
    ]
    proposals = [p for r in results.values() for p in r.get("proposals", [])]
    proposals += FINDINGS
    proposals.sort(key=lambda p: -float(p["rank_hint"]))
    for index, p in enumerate(proposals, 1):
        evidence = f" ({p['evidence']})" if p.get("evidence") else ""
        adopted = next((note for key, note in ADOPTED.items() if key in str(p["where"])), "")
        change = f"{p['change']} **Adopted:** {adopted}" if adopted else p["change"]
        out.append(f"| {index} | {p['where']} | {p['share']} | {change} | {p['gain']}{evidence} |")
    out += ["", "### Choices already made by measurement", ""]
    out += [f"- {line}" for line in CHOICES]
    return "\n".join(out) + "\n"


# Proposals the product adopted (matched on the proposal's `where`), and how.
ADOPTED = {
    "recipients_for": "a 10 s cache per (number, relay, server id), RECIPIENT_CACHE_SECONDS; a "
    "dead token leaves it at once. End to end p50 went from 32 ms to under 15 ms in this harness.",
    "_validate": "amiws' all-string dict is used as it is (frames.py), and frames that cannot "
    "change a call are dropped before validation and tracking: first on the event name, read "
    "from the raw bytes with one compiled search and compared as bytes with the tracker's "
    "`wanted` set (RTCP, NewCallerid, VarSet with no call waiting for its number, anything "
    "while no call is in progress, ...), then on the parsed Uniqueid/Linkedid/DestLinkedid and "
    "a Newchannel's context (CallTracker.needs); RelayClient awaits only when a frame gave "
    "call events. Connector/bare: 0.58-0.68x before any of it, 0.80-0.81x with the first "
    "byte-search prefilter (2026-11-26), 0.74-0.83x on later runs, 0.79-0.84x after this one "
    "on the same compact sorted-key frames, ~0.87x on frames in amiws' own layout (2026-11-27).",
    "claim_ring": "a call's first claim is one commit of two creates (the record and its "
    "version-1 marker), the transaction only when the record exists (LedgerStore._create): end "
    "to end p50 of all 3 pushes 13.4-15.2 ms before, 11.2 ms after (runs of 2026-11-27); "
    "finish_ring is unchanged (after the pushes).",
    "firebase-admin's FCM HTTP client": "FcmSender sends through AiohttpFcmClient "
    "(functions/adapters/fcm_transport.py); firebase-admin's httpx client is kept as the "
    "comparison row.",
}

CHOICES = [
    "Relay leases: one heartbeat document per connector instance instead of renewing every "
    "relay's lease (functions/adapters/relay_leases.py, docs/leases.md) — py-spy put most of the "
    "idle samples in per-lease renewals; idle CPU with 1,000 relays went from 20.5% of a core "
    "(batched per-lease renewals, run of 2026-11-26 23:53) to under 5% (scale rows above).",
    "relay_status writes: at most twice the even share of a 30 s refresh per 2 s check, most "
    "overdue first, in commits of 25 with pauses between (functions/adapters/relay_status.py), "
    "and idle relays compared by a fingerprint instead of a full report — with 1,000 relays "
    "the counter refreshes fell due together, ~0.25 ms of CPU each under the GIL stalled the "
    "loop, and scale p99 was 155-224 ms (runs of 2026-11-27 01:17 and 02:43); 9-11 ms after.",
    "JSON library: orjson for relay frames (frames.py) — it parses a whole 700-byte frame in "
    "~2 µs, less than three Python byte searches over it cost; so the connector reads only the "
    "event name unparsed (one compiled search) and lets orjson do the rest for the frames "
    "whose name could matter (ingest rows, in-process on_frame vs orjson.loads).",
    "Client reuse: one long-lived asyncio loop (BackgroundLoop) so the FCM client and its "
    "connections survive across events — the fan-out cold vs warm rows show what a fresh "
    "client would cost per event.",
    "HTTP client for FCM: aiohttp under firebase-admin (fcm_transport.py) — the fan-out rows "
    "compare it with firebase-admin's httpx client over HTTP/1.1 and over HTTP/2 in the same run.",
    "Lazy imports: the notifier imports its modules at start-up and builds clients on the "
    "first event (fork safety); coldstart's importtime note shows google.cloud.firestore is "
    "the largest import, which the bare baseline pays too, so lazy imports cannot move the "
    "ratio; the first event's client set-up can.",
    "Concurrency: one FCM request per device, all concurrent (send_each_async), up to 500 "
    "keep-alive connections so a fan-out never waits for a free one.",
]
