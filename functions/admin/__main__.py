"""`python -m functions.admin` (console script `makecall-admin`): the admin CLI.

Works against the emulator (FIRESTORE_EMULATOR_HOST) or a real project (GOOGLE_CLOUD_PROJECT,
Application Default Credentials), with the same settings the services read (TENANCY,
RELAY_ALLOWED_NETWORKS, DEFAULT_REGION, PBX_RELAYS, CALL_EVENTS_TOPIC / CALL_EVENTS_PUSH_URL).
Exit codes: 0 fine, 1 a finding (doctor: something stops a phone from ringing; apply: refused;
explain / ring: nobody rings), 2 could not run. docs/admin.md shows every command.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from functions.admin import render
from functions.admin.doctor import ERROR, diagnose, exit_code, ordered
from functions.admin.documents import TENANTS
from functions.log import JsonFormatter
from functions.settings import Settings, SettingsError, load_settings

OK, FINDING, CANNOT_RUN = 0, 1, 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m functions.admin", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    doctor = sub.add_parser("doctor", help="what stops a phone from ringing")
    doctor.add_argument("--json", action="store_true")
    doctor.add_argument("--live", action="store_true", help="also try each relay's upgrade")
    explain = sub.add_parser("explain", help="who would be rung for a call, and who not")
    explain.add_argument("number")
    explain.add_argument("--relay", required=True, help="ws[s]://host:port or host:port")
    explain.add_argument("--server-id", type=int, default=1)
    explain.add_argument("--json", action="store_true")
    tenants = sub.add_parser("tenants", help="list pbx_tenants")
    tenants.add_argument("--json", action="store_true")
    tenant = sub.add_parser("tenant", help="show, apply or import tenants")
    actions = tenant.add_subparsers(dest="action", required=True)
    show = actions.add_parser("show")
    show.add_argument("tenant_id")
    show.add_argument("--yaml", action="store_true", help="as a file for `tenant apply`")
    show.add_argument("--json", action="store_true")
    apply = actions.add_parser("apply")
    apply.add_argument("file", type=Path)
    apply.add_argument("--dry-run", action="store_true")
    apply.add_argument("--json", action="store_true")
    imp = actions.add_parser("import")
    imp.add_argument("--from-users", action="store_true", required=True)
    imp.add_argument("--company")
    imp.add_argument("--apply", action="store_true")
    imp.add_argument("--json", action="store_true")
    ring = sub.add_parser("ring", help="a test call through the configured pipeline")
    ring.add_argument("number")
    ring.add_argument("--relay", required=True)
    ring.add_argument("--server-id", type=int, default=1)
    ring.add_argument("--wait", type=float, default=10.0, help="seconds to wait for each step")
    ring.add_argument("--json", action="store_true")
    relays = sub.add_parser("relays", help="every relay's state, from relay_status")
    relays.add_argument("--json", action="store_true")
    return p


def main(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    out: TextIO | None = None,
) -> int:
    args = parser().parse_args(argv)
    out = out or sys.stdout
    _log_to_stderr()
    try:
        settings = load_settings(env)
    except SettingsError as exc:
        print(f"cannot run: {exc}", file=sys.stderr)
        return CANNOT_RUN
    try:
        from functions.admin.firestore_reader import client

        return COMMANDS[args.command](args, settings, client(settings.project), out)
    except Exception as exc:  # Firestore unreachable, no credentials, ...: say so, exit 2
        print(f"cannot run: {type(exc).__name__}: {exc}"[:400], file=sys.stderr)
        return CANNOT_RUN


def _log_to_stderr() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter({"component": "admin"}))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)


# doctor


def cmd_doctor(args: argparse.Namespace, settings: Settings, db: Any, out: TextIO) -> int:
    from functions.admin.firestore_reader import read_documents

    documents = read_documents(db)
    problems = diagnose(documents, settings)
    live: list[dict[str, Any]] | None = None
    if args.live:
        from functions.admin.live_checks import live_report

        found, results = live_report(documents, settings)
        problems = ordered(problems + found)
        live = [
            {"relay": r.url, "endpoint": r.endpoint, "ok": r.ok, "answer": r.answer}
            for r in results
        ]
    errors = sum(p.severity == ERROR for p in problems)
    summary = {"errors": errors, "warnings": len(problems) - errors, "tenancy": settings.tenancy}
    if args.json:
        body: dict[str, Any] = {"problems": [p.as_dict() for p in problems], "summary": summary}
        if live is not None:
            body["live"] = live
        render.print_json(body, out)
        return exit_code(problems)
    con = render.console(out)
    out.write(render.problem_lines(problems))
    if live is not None:
        rows = [(r["relay"], "accepted" if r["ok"] else r["answer"]) for r in live]
        con.print(render.table("Relays tried (--live)", ("relay", "answer"), rows))
    verdict = "some phones will not ring" if errors else "nothing stops a phone from ringing"
    con.print(
        f"{summary['errors']} error(s), {summary['warnings']} warning(s) "
        f"(TENANCY={settings.tenancy}): {verdict}"
    )
    return exit_code(problems)


# explain


def cmd_explain(args: argparse.Namespace, settings: Settings, db: Any, out: TextIO) -> int:
    from functions.admin.explain import explain

    answer = explain(db, settings, args.number, args.relay, args.server_id)
    code = OK if answer.rings else FINDING
    if args.json:
        render.print_json(answer.as_dict(), out)
        return code
    con = render.console(out)
    con.print(
        f"call from {answer.relay} server {answer.server_id} to {answer.number} "
        f"(normalized {answer.normalized or 'not a phone number'}), TENANCY={answer.tenancy}"
    )
    con.print(
        render.table(
            "Rings",
            ("user", "extension", "devices"),
            [(r["user"], r["extension"], ", ".join(r["devices"])) for r in answer.rings],
        )
    )
    con.print(
        render.table(
            "Not rung", ("user", "reason"), [(n["user"], n["reason"]) for n in answer.not_rung]
        )
    )
    if answer.skipped_devices:
        rows = [(d["device"], d["reason"]) for d in answer.skipped_devices]
        con.print(render.table("Devices not pushed", ("device", "reason"), rows))
    for note in answer.notes:
        con.print(f"note: {note}")
    return code


# tenants


def cmd_tenants(args: argparse.Namespace, settings: Settings, db: Any, out: TextIO) -> int:
    from functions.admin.firestore_reader import read_documents

    documents = read_documents(db)
    problems = diagnose(documents, settings)
    rows = []
    for tenant_id, doc in sorted(documents.pbx_tenants.items()):
        path = f"{TENANTS}/{tenant_id}"
        pbx = doc.get("pbx") if isinstance(doc.get("pbx"), list) else []
        rows.append(
            {
                "id": tenant_id,
                "name": doc.get("name", ""),
                "active": doc.get("active", True),
                "pbx": [
                    f"{e.get('relay')} #{e.get('serverId', 1)}" for e in pbx if isinstance(e, dict)
                ],
                "numbers": len(doc.get("numbers") or []),
                "members": len(doc.get("members") or []),
                "suspended": len(doc.get("suspended") or []),
                "errors": sum(p.path == path and p.severity == ERROR for p in problems),
                "warnings": sum(p.path == path and p.severity != ERROR for p in problems),
            }
        )
    if args.json:
        render.print_json({"tenants": rows}, out)
        return OK
    columns = ("id", "name", "active", "pbx", "numbers", "members", "errors")
    table_rows = [[", ".join(r[c]) if c == "pbx" else r[c] for c in columns] for r in rows]
    render.console(out).print(render.table("pbx_tenants", columns, table_rows, keep=4))
    return OK


def cmd_tenant(args: argparse.Namespace, settings: Settings, db: Any, out: TextIO) -> int:
    return {"show": _tenant_show, "apply": _tenant_apply, "import": _tenant_import}[args.action](
        args, settings, db, out
    )


def _tenant_show(args: argparse.Namespace, settings: Settings, db: Any, out: TextIO) -> int:
    from functions.admin.firestore_reader import read_document
    from functions.admin.tenant_files import redact, to_yaml

    doc = read_document(db, TENANTS, args.tenant_id)
    if doc is None:
        print(f"no such tenant: {TENANTS}/{args.tenant_id}", file=sys.stderr)
        return FINDING
    if args.json:
        render.print_json({"id": args.tenant_id, **redact(doc)}, out)
    else:
        out.write(to_yaml(args.tenant_id, doc))
    return OK


def _tenant_apply(args: argparse.Namespace, settings: Settings, db: Any, out: TextIO) -> int:
    from functions.admin.firestore_reader import read_documents
    from functions.admin.tenant_files import TenantFileError, load_tenants, plan_apply

    try:
        tenants = load_tenants(args.file.read_text(encoding="utf-8"))
    except (OSError, TenantFileError) as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return FINDING
    documents = read_documents(db)
    plans = []
    for tenant_id, doc in tenants:
        try:
            plan = plan_apply(documents, settings, tenant_id, doc)
        except TenantFileError as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return FINDING
        plans.append(plan)
        documents = documents.with_tenant(tenant_id, plan.doc)  # later tenants see earlier
    refused = any(plan.refused for plan in plans)
    write = not refused and not args.dry_run
    if write:
        batch = db.batch()
        for plan in plans:
            if not plan.unchanged:
                batch.set(db.collection(TENANTS).document(plan.tenant_id), plan.doc)
        batch.commit()
    if args.json:
        render.print_json(
            {
                "tenants": [
                    {
                        "path": plan.path,
                        "diff": plan.diff,
                        "refused": [p.as_dict() for p in plan.refused],
                        "problems": [p.as_dict() for p in plan.problems],
                    }
                    for plan in plans
                ],
                "written": write,
            },
            out,
        )
        return FINDING if refused else OK
    con = render.console(out)
    for plan in plans:
        out.write(plan.diff or f"{plan.path}: unchanged\n")
        if plan.refused:
            out.write(f"refused, {plan.path}:\n{render.problem_lines(plan.refused)}")
        if plan.problems:
            out.write(f"after the change, {plan.path}:\n{render.problem_lines(plan.problems)}")
    if refused:
        con.print("refused: nothing written")
    elif args.dry_run:
        con.print("dry run: nothing written")
    else:
        con.print(f"written: {', '.join(p.path for p in plans if not p.unchanged) or 'nothing'}")
    return FINDING if refused else OK


def _tenant_import(args: argparse.Namespace, settings: Settings, db: Any, out: TextIO) -> int:
    from functions.admin.firestore_reader import read_documents
    from functions.admin.tenant_files import propose_from_users, redact, to_yaml

    documents = read_documents(db)
    proposal = propose_from_users(documents, settings, args.company)
    existing = {t for t in proposal.tenants if t in documents.pbx_tenants}
    to_write = {
        t: doc
        for t, doc in proposal.tenants.items()
        if t not in proposal.conflicted and t not in existing
    }
    if args.apply and to_write:
        batch = db.batch()
        for tenant_id, doc in to_write.items():
            batch.set(db.collection(TENANTS).document(tenant_id), doc)
        batch.commit()
    written = sorted(to_write) if args.apply else []
    if args.json:
        render.print_json(
            {
                "tenants": {t: redact(d) for t, d in proposal.tenants.items()},
                "conflicts": proposal.conflicts,
                "existing": sorted(existing),
                "notes": proposal.notes,
                "written": written,
            },
            out,
        )
        return FINDING if proposal.conflicts else OK
    con = render.console(out)
    for tenant_id, doc in proposal.tenants.items():
        state = (
            "conflict: not written"
            if tenant_id in proposal.conflicted
            else "exists: use `tenant apply`"
            if tenant_id in existing
            else "written"
            if tenant_id in written
            else "proposed"
        )
        out.write(f"# {TENANTS}/{tenant_id} ({state})\n{to_yaml(tenant_id, doc)}---\n")
    for conflict in proposal.conflicts:
        con.print(f"conflict: {conflict}")
    for note in proposal.notes:
        con.print(f"note: {note}")
    if not args.apply:
        con.print("proposal only: add --apply to write the tenants without conflicts")
    return FINDING if proposal.conflicts else OK


# ring, relays


def cmd_ring(args: argparse.Namespace, settings: Settings, db: Any, out: TextIO) -> int:
    from functions.admin.ring import ring

    result = ring(db, settings, args.number, args.relay, args.server_id, wait=args.wait)
    if args.json:
        render.print_json(result.as_dict(), out)
        return OK if result.ok else FINDING
    con = render.console(out)
    if not result.sent:
        reasons = ", ".join(f"{n['user']}: {n['reason']}" for n in result.explanation.not_rung)
        con.print(f"nobody would ring ({reasons or 'no owner'}); no test call sent")
        return FINDING
    con.print(f"test call {result.linkedid} via {result.transport}")
    rows = [(d["user"], d["device"], d["push"]) for d in result.devices]
    con.print(render.table("Pushed", ("user", "device", "incoming push"), rows))
    latency = f"{result.latency_ms:.0f} ms" if result.latency_ms is not None else "not all served"
    con.print(f"every expected device served {latency} after publishing")
    if result.missing:
        con.print(f"never served: {', '.join(result.missing)}")
    con.print(
        f"call ended: {'yes' if result.ended else 'no'}; cancel sent to "
        f"{len(result.cancelled)} device(s)"
    )
    return OK if result.ok else FINDING


def cmd_relays(args: argparse.Namespace, settings: Settings, db: Any, out: TextIO) -> int:
    from functions.admin.firestore_reader import read_documents
    from functions.admin.relays import relay_rows

    rows = relay_rows(db, settings, read_documents(db))
    if args.json:
        render.print_json({"relays": rows}, out)
        return OK
    columns = ("endpoint", "state", "since", "lastEventAt", "pbxLink", "lastError")
    table_rows = [[render.short_time(r.get(c)) for c in columns] for r in rows]
    render.console(out).print(render.table("relay_status", columns, table_rows, keep=4))
    return OK


COMMANDS = {
    "doctor": cmd_doctor,
    "explain": cmd_explain,
    "tenants": cmd_tenants,
    "tenant": cmd_tenant,
    "ring": cmd_ring,
    "relays": cmd_relays,
}


def console_script() -> None:
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
