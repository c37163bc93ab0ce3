"""User-documents mode: the order relay settings are tried in, what is probed, who qualifies."""

from __future__ import annotations

from functions.adapters.relay_access import RelayAccessReader
from functions.core.recipients import Device, Recipient, Selection
from functions.core.relay_candidates import (
    REFUSED,
    UNPROVEN,
    RelayAccess,
    access_of,
    access_skip_reason,
    attempt_order,
    candidate_key,
    filter_by_access,
    probe_targets,
    relay_candidates,
)
from functions.core.relays import RelaySpec, relay_from_url

HOST = "pbx.example"


def spec(password: str = "", auth_id: str = "id", *, tls: bool = False, port: int = 7099):
    if not password:
        auth_id = ""
    return RelaySpec(HOST, port, tls, "", auth_id, password)


RIGHT, WRONG, NONE = spec("right"), spec("wrong"), spec()


def test_the_settings_most_users_share_come_first_then_the_lowest_user_id():
    by_user = {"aaa-lee": WRONG, "kim": RIGHT, "park": RIGHT, "0-mallory": NONE}
    (relay,) = relay_candidates((), by_user).values()
    assert [c.spec for c in relay.candidates] == [RIGHT, NONE, WRONG]
    assert [c.users for c in relay.candidates] == [("kim", "park"), ("0-mallory",), ("aaa-lee",)]
    # deterministic: the same whatever order the documents came in
    assert relay_candidates((), dict(reversed(list(by_user.items())))) == {relay.endpoint: relay}


def test_a_tie_goes_to_the_lowest_user_id_so_a_wrong_password_may_be_tried_first():
    (relay,) = relay_candidates((), {"kim": RIGHT, "aaa-lee": WRONG}).values()
    assert [c.users for c in relay.candidates] == [("aaa-lee",), ("kim",)]


def test_pbx_relays_come_first_and_users_with_the_same_settings_join_them():
    static = relay_from_url(f"ws://{HOST}:7099", auth_id="id", auth_password="right")
    (relay,) = relay_candidates([static], {"kim": WRONG, "lee": WRONG, "park": RIGHT}).values()
    assert relay.candidates[0].static and relay.candidates[0].users == ("park",)
    assert relay.candidates[1].users == ("kim", "lee")


def test_scheme_and_endpoint_make_distinct_candidates_and_relays():
    by_user = {"a": RIGHT, "b": spec("right", tls=True), "c": spec("right", port=7100)}
    relays = relay_candidates((), by_user)
    assert set(relays) == {f"{HOST}:7099", f"{HOST}:7100"}
    assert len(relays[f"{HOST}:7099"].candidates) == 2


def test_candidates_are_bounded_and_the_rest_unproven():
    by_user = {f"u{i:02}": spec(f"pw{i}") for i in range(20)}
    (relay,) = relay_candidates((), by_user, limit=16).values()
    assert len(relay.candidates) == 16
    assert relay.dropped_users == ("u16", "u17", "u18", "u19")
    access = access_of(relay, {c.key: True for c in relay.candidates})
    assert "u19" in access.unproven and access_skip_reason(access, "u19") == UNPROVEN


def test_attempt_order_puts_the_accepted_settings_first_and_the_refused_last():
    (relay,) = relay_candidates((), {"a": WRONG, "b": NONE, "c": RIGHT}).values()
    cands = relay.candidates  # a (wrong), b (none), c (right): one user each
    assert attempt_order(cands, {}, None) == list(cands)
    results = {WRONG_KEY: False, RIGHT_KEY: True}
    assert [c.spec for c in attempt_order(cands, results, RIGHT_KEY)] == [RIGHT, NONE, WRONG]
    # accepted by a probe but not in use: before the unknown ones
    assert [c.spec for c in attempt_order(cands, results, None)] == [RIGHT, NONE, WRONG]
    everything_refused = {c.key: False for c in cands}
    assert attempt_order(cands, everything_refused, None) == list(cands)  # all again, in order


WRONG_KEY, RIGHT_KEY, NONE_KEY = candidate_key(WRONG), candidate_key(RIGHT), candidate_key(NONE)


def test_probes_go_to_every_unknown_setting_once():
    (relay,) = relay_candidates((), {"a": WRONG, "b": NONE, "c": RIGHT}).values()
    cands = relay.candidates
    assert [c.spec for c in probe_targets(cands, {RIGHT_KEY: True}, RIGHT_KEY)] == [WRONG, NONE]
    assert probe_targets(cands, {RIGHT_KEY: True, WRONG_KEY: False}, RIGHT_KEY, {NONE_KEY}) == []


def test_access_lists_accepted_refused_and_unproven_users():
    (relay,) = relay_candidates((), {"kim": RIGHT, "lee": WRONG, "mallory": NONE}).values()
    access = access_of(relay, {RIGHT_KEY: True, WRONG_KEY: False})
    assert access == RelayAccess(
        frozenset({"kim"}), frozenset({"lee"}), frozenset({"mallory"}), open=False
    )
    assert [access_skip_reason(access, u) for u in ("kim", "lee", "mallory", "nobody")] == [
        "",
        REFUSED,
        UNPROVEN,
        UNPROVEN,
    ]


def test_a_relay_that_accepts_no_credentials_is_open_and_everyone_qualifies():
    (relay,) = relay_candidates((), {"kim": RIGHT, "lee": NONE}).values()
    access = access_of(relay, {RIGHT_KEY: True, NONE_KEY: True})
    assert access.open
    assert access_skip_reason(access, "anyone") == ""
    # credentials accepted do not make a relay open
    assert not access_of(relay, {RIGHT_KEY: True, NONE_KEY: False}).open


def test_filter_by_access_keeps_the_accepted_and_says_why_for_the_others():
    def recipient(uid: str) -> Recipient:
        return Recipient(uid, "1010", devices=(Device(f"d-{uid}", f"t-{uid}"),))

    selection = Selection([recipient("kim"), recipient("lee"), recipient("new")])
    access = RelayAccess(frozenset({"kim"}), frozenset({"lee"}))
    filter_by_access(selection, access)
    assert [r.user_id for r in selection.recipients] == ["kim"]
    assert {(s.subject, s.reason) for s in selection.skipped} == {
        ("lee", REFUSED),
        ("new", UNPROVEN),
    }


class _Snap:
    def __init__(self, doc):
        self.exists = doc is not None
        self._doc = doc

    def to_dict(self):
        return self._doc


class _FakeFirestore:
    """collection(...).document(id).get() over a dict, counting reads."""

    def __init__(self, docs):
        self.docs, self.reads = docs, 0

    def collection(self, name):
        assert name == "relay_access"
        return self

    def document(self, doc_id):
        self._id = doc_id
        return self

    def get(self):
        self.reads += 1
        return _Snap(self.docs.get(self._id))


def test_the_notifiers_copy_of_relay_access_is_cached_per_relay_for_the_window():
    now = [0.0]
    store = _FakeFirestore({"pbx.example:7099": {"users": ["kim"], "refused": ["lee", 3]}})
    reader = RelayAccessReader(store, cache_seconds=10, clock=lambda: now[0])
    access = reader.get("pbx.example:7099")
    assert access == RelayAccess(frozenset({"kim"}), frozenset({"lee"}))  # bad entries ignored
    assert reader.get("pbx.example:7099") is access and store.reads == 1
    assert reader.get("other:7099") is None and store.reads == 2  # no record: None
    store.docs["pbx.example:7099"] = {"users": [], "open": True}
    now[0] = 10.0  # the window has passed: read again
    assert reader.get("pbx.example:7099").open and store.reads == 3
