"""infra/firestore.rules in Google's Firestore emulator, tried as the app's users would try them.

App users speak the Firestore REST API with the emulator's unsigned ID tokens (an anonymous
client sends no token); the backend is google-cloud-firestore's client, which sends `Bearer
owner` and, like the Admin SDK's service account in production, is not subject to rules.

The checks are tables: one row per (collection, actor, operation) with the exact status the
emulator must answer (200 allowed, 404 allowed but missing, 403 PERMISSION_DENIED). Every row
has its own users and documents (seeded once by the backend), so rows never disturb each other
and need no reset. The mutation check loosens the real rules file in several known ways, loads
each loosened version into a project of its own and requires the matching rows to notice.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from devtools.emulators import FirestoreEmulator

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES_PATH = ROOT / "infra" / "firestore.rules"
PROJECT = "demo-rules-test"
DENIED, OK, MISSING = 403, 200, 404

# The app's collections whose documents name their owner in `userId`.
USERID_COLLECTIONS = [
    "fcm_tokens",
    "call_forward_info",
    "my_extensions",
    "call_history",
    "main_numbers",
    "extensions",
    "contacts",
    "phonebook_contacts",
    "phonebooks",
    "device_approval_requests",
]
# Ids "{uid}_...": a signed-in user may learn that one of their own does not exist.
OWN_PREFIX_IDS = {"fcm_tokens", "call_forward_info"}
# The app's collections whose document id is the uid.
UID_COLLECTIONS = ["users", "user_notification_settings"]
# The backend's collections and subcollections (document paths); group = top-level collection.
BACKEND_DOCS = [
    "pbx_tenants/acme",
    "push_dedupe/call1",
    "push_dedupe/call1/versions/1",
    "relay_leases/lease1",
    "relay_leases/lease1/takeovers/marker1",
    "relay_status/status1",
    "connector_instances/session1",
    "relay_access/relay1",
]

# A few fields the app's documents really have, so that rows look like the app's writes.
FIELDS: dict[str, dict[str, Any]] = {
    "fcm_tokens": {"fcmToken": "tok-1", "platform": "Android", "isApproved": True},
    "call_forward_info": {"isEnabled": True, "destinationNumber": "01012345678"},
    "my_extensions": {"extension": "1010", "accountCode": "07045144801"},
    "call_history": {"callerNumber": "01099998888", "status": "missed", "cancelled": False},
    "users": {"companyId": "acme", "isActive": True, "amiServerId": 1},
    "user_notification_settings": {"pushEnabled": True, "soundEnabled": True},
}
BACKEND_FIELDS: dict[str, Any] = {
    "members": ["placeholder"],
    "numbers": ["07045144801"],
    "holder": "instance-a",
    "generation": 3,
}


# -- the emulator and the two kinds of client ------------------------------------------------


def _b64(part: Mapping[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


def id_token(uid: str, project: str) -> str:
    """An unsigned emulator ID token for `uid` (the emulator accepts alg "none")."""
    payload = {
        "sub": uid,
        "user_id": uid,
        "iss": f"https://securetoken.google.com/{project}",
        "aud": project,
        "iat": 0,
        "exp": 9999999999,
        "auth_time": 0,
        "firebase": {"sign_in_provider": "custom", "identities": {}},
    }
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(payload)}."


def encode(value: Any) -> dict[str, Any]:
    """A Python value as a Firestore REST `Value`."""
    if isinstance(value, bool):
        return {"booleanValue": value}
    if isinstance(value, int):
        return {"integerValue": str(value)}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [encode(v) for v in value]}}
    raise TypeError(f"no REST encoding for {value!r}")


@dataclass
class Answer:
    status: int
    body: Any


@dataclass
class RestClient:
    """An app client of one project: a signed-in user (`uid`) or anonymous (`uid=None`)."""

    host: str
    project: str

    def base(self) -> str:
        return f"http://{self.host}/v1/projects/{self.project}/databases/(default)/documents"

    def send(
        self,
        uid: str | None,
        method: str,
        path: str,
        body: Any = None,
        query: Sequence[tuple[str, str]] = (),
    ) -> Answer:
        url = self.base() + (path if path.startswith(":") else f"/{path}")
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if uid is not None:
            request.add_header("Authorization", f"Bearer {id_token(uid, self.project)}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return Answer(response.status, json.loads(response.read() or b"null"))
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw.decode(errors="replace")
            return Answer(exc.code, parsed)


@dataclass
class Site:
    """One project in the emulator: its rules, its REST clients and its backend client."""

    emulator: FirestoreEmulator
    project: str
    rest: RestClient = field(init=False)
    admin: firestore.Client = field(init=False)

    def __post_init__(self) -> None:
        self.rest = RestClient(self.emulator.host, self.project)
        self.admin = firestore.Client(project=self.project)

    def seed(self, checks: Sequence[Check]) -> None:
        """The backend writes every row's starting documents (bypassing the rules)."""
        docs = [doc for check in checks for doc in check.seed]
        for start in range(0, len(docs), 400):
            batch = self.admin.batch()
            for path, fields in docs[start : start + 400]:
                batch.set(self.admin.document(path), dict(fields))
            batch.commit()


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirestoreEmulator]:
    """This module's own emulator, started with infra/firestore.rules, on 127.0.0.1."""
    log = tmp_path_factory.mktemp("firestore-rules") / "emulator.log"
    emu = FirestoreEmulator(project=PROJECT, rules=RULES_PATH, log_path=log)
    assert emu.rules == RULES_PATH, "infra/firestore.rules is missing"
    emu.start(timeout=60)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FIRESTORE_EMULATOR_HOST", emu.host)  # the backend client finds it here
        try:
            yield emu
        finally:
            emu.stop()


@pytest.fixture(scope="module")
def site(emulator: FirestoreEmulator) -> Site:
    emulator.reset(PROJECT)
    # The rules the emulator started with, loaded again explicitly: the tables run against
    # exactly the file's text, as the mutation check's projects do.
    emulator.load_rules(RULES_PATH.read_text(), PROJECT)
    main = Site(emulator, PROJECT)
    main.seed(ALL_CHECKS)
    return main


# -- the tables ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One request and the status the rules must give it."""

    name: str  # pytest id
    group: str  # the collection the row is about (what a mutation selects by)
    actor: str | None  # uid of the signed-in caller; None = anonymous
    op: str  # get | list | query | create | update | delete
    path: str  # a document path (get, create, update, delete) or a collection path (list, query)
    expect: int  # OK, MISSING (allowed, no such document) or DENIED
    seed: tuple[tuple[str, Mapping[str, Any]], ...] = ()  # documents the backend writes first
    data: Mapping[str, Any] | None = None  # fields written by create / update
    mask: tuple[str, ...] = ()  # update: only these fields (empty = the whole document)
    where: tuple[str, str, Any] | None = None  # query: (field, REST operator, value)


def run(rest: RestClient, check: Check) -> Answer:
    if check.op == "get":
        return rest.send(check.actor, "GET", check.path)
    if check.op == "list":
        return rest.send(check.actor, "GET", check.path, query=[("pageSize", "50")])
    if check.op == "query":
        parent, _, collection_id = check.path.rpartition("/")
        structured: dict[str, Any] = {"from": [{"collectionId": collection_id}]}
        if check.where is not None:
            field_path, op, value = check.where
            structured["where"] = {
                "fieldFilter": {
                    "field": {"fieldPath": field_path},
                    "op": op,
                    "value": encode(value),
                }
            }
        target = f"{parent}:runQuery" if parent else ":runQuery"
        return rest.send(check.actor, "POST", target, {"structuredQuery": structured})
    fields = {"fields": {k: encode(v) for k, v in (check.data or {}).items()}}
    if check.op == "create":
        collection, _, doc_id = check.path.rpartition("/")
        return rest.send(check.actor, "POST", collection, fields, query=[("documentId", doc_id)])
    if check.op == "update":
        params = [("currentDocument.exists", "true")]
        params += [("updateMask.fieldPaths", name) for name in check.mask]
        return rest.send(check.actor, "PATCH", check.path, fields, query=params)
    if check.op == "delete":
        return rest.send(check.actor, "DELETE", check.path)
    raise ValueError(check.op)


def verdict(check: Check, answer: Answer) -> str | None:
    """None when the answer is the expected one, else what went wrong."""
    if answer.status != check.expect:
        return f"{check.name}: expected {check.expect}, got {answer.status} {answer.body!r:.300}"
    if check.expect == DENIED:
        status = (
            answer.body.get("error", {}).get("status") if isinstance(answer.body, dict) else None
        )
        if status != "PERMISSION_DENIED":
            return f"{check.name}: 403 without PERMISSION_DENIED: {answer.body!r:.300}"
    return None


class Rows:
    """Builds rows; every row gets users and documents of its own (alice7, bob7, doc7...)."""

    def __init__(self) -> None:
        self.checks: list[Check] = []

    def users(self) -> tuple[str, str]:
        n = len(self.checks)
        return f"alice{n}", f"bob{n}"

    def add(self, **kwargs: Any) -> None:
        self.checks.append(Check(**kwargs))


def userid_doc_id(collection: str, owner: str, n: int) -> str:
    if collection == "fcm_tokens":
        return f"{owner}_device{n}_Android"
    if collection == "call_forward_info":
        return f"{owner}_10{n}"
    return f"doc{n}"


def userid_rows(rows: Rows, collection: str) -> None:
    """Owner-only documents that name their owner in `userId`."""
    base = FIELDS.get(collection, {"name": "x"})

    def row(
        label: str,
        actor: str,
        op: str,
        expect: int,
        *,
        stored: bool = True,
        data: Mapping[str, Any] | None = None,
        mask: tuple[str, ...] = (),
        constrained: bool = True,  # query: `where userId == <owner>`
    ) -> None:
        owner, other = rows.users()
        n = len(rows.checks)
        doc_path = f"{collection}/{userid_doc_id(collection, owner, n)}"
        uid = {"owner": owner, "other": other, "anon": None}[actor]
        seed = ((doc_path, {**base, "userId": owner}),) if stored else ()
        written = None
        if data is not None:
            written = {k: {"<owner>": owner, "<other>": other}.get(v, v) for k, v in data.items()}
        where = None
        if op == "query" and constrained:
            where = ("userId", "EQUAL", owner)
        rows.add(
            name=f"{collection}:{actor}:{label}",
            group=collection,
            actor=uid,
            op=op,
            path=collection if op in ("list", "query") else doc_path,
            expect=expect,
            seed=seed,
            data=written,
            mask=mask,
            where=where,
        )

    own = {**base, "userId": "<owner>"}
    row("get", "owner", "get", OK)
    row("create", "owner", "create", OK, stored=False, data=own)
    row("create-without-userId", "owner", "create", DENIED, stored=False, data=base)
    row("create-naming-another-user", "owner", "create", DENIED, stored=False,
        data={**base, "userId": "<other>"})  # fmt: skip
    row("update-whole-doc-keeping-userId", "owner", "update", OK, data={**own, "note": "edited"})
    row("update-one-field", "owner", "update", OK, data={"note": "edited"}, mask=("note",))
    row("update-changing-userId", "owner", "update", DENIED, data={**base, "userId": "<other>"})
    row("update-changing-only-userId", "owner", "update", DENIED, data={"userId": "<other>"},
        mask=("userId",))  # fmt: skip
    row("update-dropping-userId", "owner", "update", DENIED, data=base)
    row("delete", "owner", "delete", OK)
    row("query-own", "owner", "query", OK)
    row("query-unconstrained", "owner", "query", DENIED, constrained=False)
    row("list-collection", "owner", "list", DENIED)
    row("get-missing", "owner", "get", MISSING if collection in OWN_PREFIX_IDS else DENIED,
        stored=False)  # fmt: skip

    row("get", "other", "get", DENIED)
    row("update", "other", "update", DENIED, data={**own, "note": "hijacked"})
    row("update-taking-over-userId", "other", "update", DENIED, data={**base, "userId": "<other>"})
    row("delete", "other", "delete", DENIED)
    row("create-naming-the-victim", "other", "create", DENIED, stored=False, data=own)
    row("query-the-victims-docs", "other", "query", DENIED)
    if collection in OWN_PREFIX_IDS:
        row("get-missing-under-the-victims-uid", "other", "get", DENIED, stored=False)

    row("get", "anon", "get", DENIED)
    row("get-missing", "anon", "get", DENIED, stored=False)
    row("create", "anon", "create", DENIED, stored=False, data=own)
    row("update", "anon", "update", DENIED, data={**own, "note": "x"})
    row("delete", "anon", "delete", DENIED)
    row("query", "anon", "query", DENIED)


def uid_rows(rows: Rows, collection: str) -> None:
    """Documents whose id is the owner's uid."""
    base = FIELDS[collection]

    def row(label: str, actor: str, op: str, expect: int, *, stored: bool = True,
            data: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        owner, other = rows.users()
        uid = {"owner": owner, "other": other, "anon": None}[actor]
        path = f"{collection}/{owner}"
        rows.add(
            name=f"{collection}:{actor}:{label}",
            group=collection,
            actor=uid,
            op=op,
            path=collection if op == "list" else path,
            expect=expect,
            seed=((path, base),) if stored else (),
            data=data,
        )

    row("get", "owner", "get", OK)
    row("get-missing", "owner", "get", MISSING, stored=False)
    row("create", "owner", "create", OK, stored=False, data=base)
    row("update", "owner", "update", OK, data={**base, "isActive": False})
    row("delete", "owner", "delete", OK)
    row("list-collection", "owner", "list", DENIED)
    row("get", "other", "get", DENIED)
    row("get-missing", "other", "get", DENIED, stored=False)
    row("create-the-victims-doc", "other", "create", DENIED, stored=False, data=base)
    row("update", "other", "update", DENIED, data={**base, "companyId": "evil"})
    row("delete", "other", "delete", DENIED)
    row("get", "anon", "get", DENIED)
    row("create", "anon", "create", DENIED, stored=False, data=base)
    row("update", "anon", "update", DENIED, data=base)
    row("delete", "anon", "delete", DENIED)


def backend_rows(rows: Rows, doc_path: str) -> None:
    """Closed to every client: a signed-in user who owns nothing here, and anonymous."""
    group = doc_path.split("/", 1)[0]
    collection = doc_path.rpartition("/")[0]
    label = doc_path.replace("/", ".")
    ops = ("get", "get-missing", "list", "query", "query-mine", "create", "update", "delete")
    for actor in ("signed-in", "anon"):
        for op in ops:
            user, _ = rows.users()
            path = f"{doc_path}-{len(rows.checks)}"
            # a document naming the caller, as a curious client would hope to find
            mine = {**BACKEND_FIELDS, "userId": user, "members": [user]}
            where = None
            if op == "query-mine":
                where = ("members", "ARRAY_CONTAINS", user) if group == "pbx_tenants" else (
                    "userId", "EQUAL", user)  # fmt: skip
            rows.add(
                name=f"{label}:{actor}:{op}",
                group=group,
                actor=user if actor == "signed-in" else None,
                op={"get-missing": "get", "query-mine": "query"}.get(op, op),
                path=collection if op in ("list", "query", "query-mine") else path,
                expect=DENIED,
                seed=((path, mine),) if op not in ("create", "get-missing") else (),
                data=mine if op in ("create", "update") else None,
                where=where,
            )


def default_rows(rows: Rows) -> None:
    """Anything no rule names, even under a user's own document."""
    for label, template in (
        ("unlisted_collection", "unlisted_collection/doc{n}"),
        ("users-subcollection", "users/{owner}/private/doc{n}"),
    ):
        for op in ("get", "create", "update", "delete"):
            owner, _ = rows.users()
            path = template.format(owner=owner, n=len(rows.checks))
            rows.add(
                name=f"{label}:owner:{op}",
                group="default",
                actor=owner,
                op=op,
                path=path,
                expect=DENIED,
                seed=((path, {"userId": owner}),) if op != "create" else (),
                data={"userId": owner} if op in ("create", "update") else None,
            )


def build() -> list[Check]:
    rows = Rows()
    for collection in UID_COLLECTIONS:
        uid_rows(rows, collection)
    for collection in USERID_COLLECTIONS:
        userid_rows(rows, collection)
    for doc_path in BACKEND_DOCS:
        backend_rows(rows, doc_path)
    default_rows(rows)
    names = [c.name for c in rows.checks]
    assert len(names) == len(set(names)), "duplicate row names"
    return rows.checks


ALL_CHECKS = build()
APP_CHECKS = [c for c in ALL_CHECKS if c.group in UID_COLLECTIONS + USERID_COLLECTIONS]
BACKEND_CHECKS = [c for c in ALL_CHECKS if c.group not in UID_COLLECTIONS + USERID_COLLECTIONS]


def _ids(check: Check) -> str:
    return check.name


@pytest.mark.parametrize("check", APP_CHECKS, ids=_ids)
def test_app_collections_are_owner_only(site: Site, check: Check) -> None:
    problem = verdict(check, run(site.rest, check))
    assert problem is None, problem


@pytest.mark.parametrize("check", BACKEND_CHECKS, ids=_ids)
def test_backend_collections_and_everything_unlisted_are_closed(site: Site, check: Check) -> None:
    problem = verdict(check, run(site.rest, check))
    assert problem is None, problem


def test_an_owner_query_returns_the_owners_documents_only(site: Site) -> None:
    """An allowed `where userId == uid` query answers with the caller's documents (and the
    emulator's 200 is a real answer, not an empty stream)."""
    site.admin.document("call_history/mine-1").set({"userId": "carol", "status": "missed"})
    site.admin.document("call_history/theirs-1").set({"userId": "dave", "status": "missed"})
    check = Check(
        name="call_history:owner:query-own-contents",
        group="call_history",
        actor="carol",
        op="query",
        path="call_history",
        expect=OK,
        where=("userId", "EQUAL", "carol"),
    )
    answer = run(site.rest, check)
    assert answer.status == OK, answer.body
    names = [
        item["document"]["name"].rsplit("/", 2)[-1] for item in answer.body if "document" in item
    ]
    assert names == ["mine-1"]


# -- the backend is not bound by the rules --------------------------------------------------------


ADMIN_PATHS = BACKEND_DOCS + [f"{c}/admin-doc" for c in UID_COLLECTIONS + USERID_COLLECTIONS]


@pytest.mark.parametrize("doc_path", ADMIN_PATHS)
def test_the_backend_reads_and_writes_every_collection(site: Site, doc_path: str) -> None:
    ref = site.admin.document(doc_path)
    ref.set({"userId": "alice", **BACKEND_FIELDS})
    assert ref.get().to_dict()["userId"] == "alice"
    ref.update({"userId": "bob"})  # the userId pin binds clients, not the backend
    assert ref.get().get("userId") == "bob"
    listed = [s.id for s in ref.parent.where(filter=FieldFilter("userId", "==", "bob")).stream()]
    assert ref.id in listed
    ref.delete()
    assert not ref.get().exists


# -- the mutation check: would these tests notice a loosened rules file? ----------------------


@dataclass(frozen=True)
class Loosening:
    name: str
    block: str  # the match line whose block is edited ("" = the whole file)
    old: str
    new: str
    groups: tuple[str, ...]  # whose rows must notice


USERID_PIN = "allow update: if ownsStored() && keepsUserId();"
CLOSED = "allow read, write: if false;"
LOOSENINGS = [
    Loosening("fcm_tokens update without the userId pin", "match /fcm_tokens/{docId} {",
              USERID_PIN, "allow update: if ownsStored();", ("fcm_tokens",)),
    Loosening("my_extensions update without the userId pin", "match /my_extensions/{docId} {",
              USERID_PIN, "allow update: if ownsStored();", ("my_extensions",)),
    Loosening("call_history update without the userId pin", "match /call_history/{docId} {",
              USERID_PIN, "allow update: if ownsStored();", ("call_history",)),
    Loosening("call_history readable by any signed-in user", "match /call_history/{docId} {",
              "allow read: if ownsStored();", "allow read: if signedIn();", ("call_history",)),
    Loosening("fcm_tokens listable by any signed-in user", "match /fcm_tokens/{docId} {",
              "allow list: if ownsStored();", "allow list: if signedIn();", ("fcm_tokens",)),
    Loosening("fcm_tokens: any missing id readable (no uid prefix)", "match /fcm_tokens/{docId} {",
              "ownsStored() || ownMissing(docId);", "ownsStored() || resource == null;",
              ("fcm_tokens",)),
    Loosening("contacts created under any userId", "match /contacts/{docId} {",
              "allow create: if createsOwn();", "allow create: if signedIn();", ("contacts",)),
    Loosening("users readable by any signed-in user", "match /users/{uid} {",
              "allow read, write: if isUser(uid);",
              "allow read: if signedIn();\n      allow write: if isUser(uid);", ("users",)),
    Loosening("pbx_tenants open to signed-in reads", "match /pbx_tenants/{document=**} {",
              CLOSED, "allow read: if signedIn();\n      allow write: if false;", ("pbx_tenants",)),
    Loosening("push_dedupe versions subcollection readable", "",
              "    // Which connector instance holds each relay",
              "    match /push_dedupe/{id}/versions/{n} {\n      allow read: if signedIn();\n"
              "    }\n\n    // Which connector instance holds each relay", ("push_dedupe",)),
    Loosening("relay_leases takeovers writable", "",
              "    // Relay connection health",
              "    match /relay_leases/{id}/takeovers/{t} {\n      allow write: if signedIn();\n"
              "    }\n\n    // Relay connection health", ("relay_leases",)),
    Loosening("default rule open to signed-in users (the merge trap)", "match /{document=**} {",
              CLOSED, "allow read, write: if signedIn();",
              ("default", "pbx_tenants", "push_dedupe", "relay_leases", "relay_status",
               "connector_instances", "relay_access")),
]  # fmt: skip


def loosen(source: str, loosening: Loosening) -> str:
    """The rules text with one loosening; fails loudly when the file no longer reads as the
    loosening expects (reworded rules need the loosening reworded too)."""
    start, end = 0, len(source)
    if loosening.block:
        assert source.count(loosening.block) == 1, f"block {loosening.block!r} not found once"
        start = source.index(loosening.block)
        end = source.index("\n    }\n", start)  # the block's closing brace
    part = source[start:end]
    assert part.count(loosening.old) == 1, f"{loosening.old!r} not found once in its block"
    changed = source[:start] + part.replace(loosening.old, loosening.new) + source[end:]
    assert changed != source
    return changed


def run_all(site: Site, checks: Sequence[Check]) -> list[tuple[Check, Answer]]:
    site.seed(checks)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda check: run(site.rest, check), checks))
    return list(zip(checks, answers, strict=True))


CAUGHT: dict[str, list[str]] = {}  # loosening -> the rows that noticed it (printed with -s)


@pytest.mark.parametrize("loosening", LOOSENINGS, ids=lambda m: m.name)
def test_each_loosening_of_the_rules_is_caught(
    emulator: FirestoreEmulator, loosening: Loosening
) -> None:
    source = RULES_PATH.read_text()
    project = f"demo-rules-mutant-{LOOSENINGS.index(loosening)}"
    emulator.load_rules(loosen(source, loosening), project)
    mutant = Site(emulator, project)
    checks = [c for c in ALL_CHECKS if c.group in loosening.groups]
    assert checks, f"no rows for {loosening.groups}"
    results = run_all(mutant, checks)
    # A loosening is caught when a request the rules must refuse is now let through (not merely
    # when something breaks: a rules file that fails to compile would break every row).
    let_through = [c.name for c, a in results if c.expect == DENIED and a.status != DENIED]
    CAUGHT[loosening.name] = let_through
    print(f"\n{loosening.name}: caught by {let_through}")
    assert let_through, f"no row noticed: {loosening.name}"
    # ...and what the owner may do still works, so the mutant is the same file, loosened.
    broken = [c.name for c, a in results if c.expect != DENIED and verdict(c, a)]
    assert not broken, broken


def test_the_unloosened_file_passes_the_same_harness(emulator: FirestoreEmulator) -> None:
    """Control for the mutation check: the real file, loaded the same way into a fresh project,
    gives every row its expected answer."""
    emulator.load_rules(RULES_PATH.read_text(), "demo-rules-control")
    control = Site(emulator, "demo-rules-control")
    problems = [p for c, a in run_all(control, ALL_CHECKS) if (p := verdict(c, a))]
    assert not problems, problems
