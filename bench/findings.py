"""Proposals from profiles taken while building the harness (not re-measured on every run; each
says how it was measured, so it can be repeated). Same fields as bench.common.Proposal.

The profiles below were taken on the npm Firestore emulator (@firestore-emulator/server), before
the switch to Google's emulators (devtools/emulators.py) and before the ledger's precondition
writes; their milliseconds are history, the proposals' directions still hold.

Profile of the notifier under the end-to-end load (py-spy 0.4.3 `record --idle -r 500` on the
gunicorn worker, 20 calls at 2 calls/s after 3 warm-up calls, same stack as bench/e2e.py): 89 ms
of wall time per ringing event in `handle_cloud_event`, split as
FirestoreDirectory.recipients_for 39% (35 ms: the `my_extensions` query 11 ms, then the
`fcm_tokens` query 18 ms in parallel with the batched get), LedgerStore.claim_ring 13% (11 ms,
a transaction: begin + get + commit), FcmSender.send 14% (12 ms for 3 pushes),
LedgerStore.finish_ring 23% (20 ms) and HistoryStore.record_incoming 10% (9 ms); the last two
run after the pushes left, so they cost capacity, not latency. CPU per call (from /proc, 200
calls at 20 calls/s, repeated by every e2e run): notifier 37-42 ms, Firestore emulator 19-42 ms,
connector 4-5 ms (19-22 ms when it shares the notifier's emulator), fake FCM 2-3 ms: 60-90 ms
of CPU per call on 2 cores, so 20 calls/s keeps both cores 60-90% busy and requests queue
behind each other (the e2e p99 of hundreds of ms, while the floor's p99 is ~10 ms).
"""

from __future__ import annotations

FINDINGS: list[dict[str, object]] = [
    {
        "rank_hint": 2.5,
        "where": "functions/notifier/adapters/firestore_directory.py "
        "`FirestoreDirectory.recipients_for`",
        "share": "39% of the notifier's wall time per ringing event (35 ms of 89 ms), 3 Firestore "
        "round trips, and about a third of the emulator's CPU per call",
        "change": "cache the directory per (dialled number, relay, server id): keep it fresh with "
        "on_snapshot listeners on `my_extensions`/`fcm_tokens`/`users` (or a ≤ 30 s TTL with a "
        "re-read on a dead-token answer); a ringing event then does no lookup",
        "gain": "bounded by the profile: −35 ms of the ~64 ms unloaded e2e latency and ~1/3 of "
        "the stack's CPU per call; not prototyped (needs invalidation design)",
        "evidence": "py-spy --idle on the gunicorn worker, see bench/findings.py",
    },
    {
        "rank_hint": 1.4,
        "where": "functions/notifier/adapters/ledger_store.py "
        "`LedgerStore.claim_ring` / `finish_ring`",
        "share": "claim 13% (11 ms, before the pushes), finish 23% (20 ms, after): two "
        "read-modify-write transactions per ringing event",
        "change": "claim with one precondition write (`create()` of the ledger document, "
        "falling back to the transaction only when it exists: a redelivery or a second "
        "connector) and batch finish_ring with the history writes into one commit",
        "gain": "bounded by the profile: −2 round trips on the critical path (~7 ms) and ~15 ms "
        "of worker time per call; not prototyped",
        "evidence": "py-spy --idle, as above",
    },
    {
        "rank_hint": 1.2,
        "where": "e2e stack: the Firestore emulator's Listen stream (test stand-in; was "
        "node_modules/@firestore-emulator/server `v1Listen`, retired)",
        "share": "with the npm emulator: connector CPU 19.2 ms per call when it shared the "
        "notifier's emulator vs 3.5 ms with its own (run of 2026-11-27 04:22): its Listen "
        "re-sent the whole `users` query after every write anywhere. Google's emulator sends "
        "a listener only changes to its query (e2e notes measure it each run)",
        "change": "none left to make: with Google's emulator the connector shares the "
        "notifier's emulator in bench/e2e.py, as in tests/integration, `make dev` and "
        "production; the e2e run keeps checking it (a `users` listener counting Listen "
        "responses during the calls, with one `users` write after them as a positive control, "
        "and connector CPU per call with and without the notifier's writes)",
        "gain": "~16 ms connector CPU per call in local runs with the npm emulator, gone with "
        "the switch; production Firestore never had it",
        "evidence": "/proc CPU per process: npm emulator, 300 calls at 20 calls/s; Google's "
        "emulator 1.19.9, 4 alternating phases of 300 calls (shared 2.4 / 2.4 ms, own "
        "2.3 / 2.5 ms) and 0 Listen responses to a `users` listener during those 1,200 calls",
    },
]
