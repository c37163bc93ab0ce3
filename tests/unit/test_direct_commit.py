"""The ring path's raw writes (functions/notifier/adapters/direct_commit.py) are the writes the
google-cloud-firestore client would send for the same create or update (issue 17, cost per
call): compared message by message with its own `_helpers.pbs_for_create` / `pbs_for_update`."""

from __future__ import annotations

import datetime

import pytest
from google.api_core.datetime_helpers import DatetimeWithNanoseconds as ValueNanos
from google.cloud.firestore_v1 import DELETE_FIELD, SERVER_TIMESTAMP, _helpers
from google.cloud.firestore_v1.base_client import BaseClient
from hypothesis import given, settings
from hypothesis import strategies as st
from proto.datetime_helpers import DatetimeWithNanoseconds

from functions.notifier.adapters.direct_commit import create_write, update_write

PATH = "projects/p/databases/(default)/documents/push_dedupe/abc"
UTC = datetime.UTC
KST = datetime.timezone(datetime.timedelta(hours=9))
LEDGER_RECORD = {
    "relay": "127.0.0.1:7200",
    "serverId": 1,
    "linkedid": "1762257300.0",
    "state": "ringing",
    "devices": {
        "u1|tok-a": {"user": "u1", "token": "t" * 150, "state": "claimed", "at": 1.7e9},
        "u2|tok-b": {"user": "u2", "token": "b", "state": "sent", "at": 1762257300.25},
    },
    "ring": {"kind": "ringing", "caller_name": "김철수", "test": False, "occurred_at": 1.7e9},
    "version": 1,
    "expiresAt": datetime.datetime(2026, 12, 3, 1, 2, 3, 456789, tzinfo=UTC),
    "empty": {},
    "none": None,
    "list": [1, "a", None, [], {"x": 1.5}],
}
HISTORY = {
    "userId": "u1",
    "callerNumber": "01026132471",
    "timestamp": datetime.datetime(2026, 12, 1, 9, 0, 0, 1, tzinfo=KST),
    "naive": datetime.datetime(2026, 12, 1, 9, 0, 0),
    "nanos": ValueNanos(2026, 12, 1, 9, 0, 0, nanosecond=123456789, tzinfo=UTC),
    "proto_nanos": DatetimeWithNanoseconds(2026, 12, 1, 9, 0, 0, nanosecond=5, tzinfo=UTC),
    "before_epoch": datetime.datetime(1969, 7, 20, 20, 17, 40, 5, tzinfo=UTC),
    "createdAt": SERVER_TIMESTAMP,
    "cancelled": False,
    "recipientUserIds": ["u1", "u2"],
    "tuple": ("a", 2),
    "bytes": b"\x00\xff",
    "big": 2**62,
    "negative": -3,
}


def library_create(values):
    [pb] = _helpers.pbs_for_create(PATH, values)
    return pb._pb


def library_update(values, when):
    option = BaseClient.write_option(last_update_time=when)
    [pb] = _helpers.pbs_for_update(PATH, values, option)
    return pb._pb


@pytest.mark.parametrize("values", [LEDGER_RECORD, HISTORY, {}], ids=["ledger", "history", "empty"])
def test_creates_are_the_clients_own(values):
    assert create_write(PATH, values) == library_create(values)


UPDATE_TIME = DatetimeWithNanoseconds(2026, 12, 1, 9, 0, 0, nanosecond=987654321, tzinfo=UTC)


@pytest.mark.parametrize(
    "changes",
    [
        {"devices": LEDGER_RECORD["devices"], "state": "over", "version": 2},
        {"closing": DELETE_FIELD, "state": "answered"},
        {"cancelled": True, "cancelledAt": SERVER_TIMESTAMP, "cancelledBy": "ring_timeout"},
        {"b": 1, "a": 2, "c": DELETE_FIELD},
    ],
    ids=["values", "delete", "server-time", "order"],
)
def test_updates_are_the_clients_own(changes):
    assert update_write(PATH, changes, UPDATE_TIME) == library_update(changes, UPDATE_TIME)


def test_a_plain_datetime_precondition_too():
    when = datetime.datetime(2026, 12, 1, 9, 0, 0, 123456, tzinfo=UTC)
    assert update_write(PATH, {"a": 1}, when) == library_update({"a": 1}, when)


def test_what_it_does_not_write_raises_instead_of_writing_something_else():
    with pytest.raises(TypeError):
        create_write(PATH, {"set": {1, 2}})
    with pytest.raises(TypeError):
        update_write(PATH, {"nested.path": 1}, UPDATE_TIME)  # a dotted path means nesting
    with pytest.raises(ValueError):
        create_write(PATH, {"gone": DELETE_FIELD})
    with pytest.raises(ValueError):
        update_write(PATH, {}, UPDATE_TIME)
    for bad in ({"a": {"": 1}}, {"a": {1: 1}}, {"": 1}):  # the client refuses these too
        with pytest.raises(ValueError):
            create_write(PATH, bad)
        with pytest.raises((ValueError, TypeError)):
            library_create(bad)


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=4)
    | st.datetimes(timezones=st.just(UTC)),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(min_size=1, max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.from_regex(r"[a-z][a-zA-Z0-9_]{0,6}", fullmatch=True), values, max_size=5)
)
def test_random_documents_encode_as_the_client_does(doc):
    assert create_write(PATH, doc) == library_create(doc)
    if doc:
        assert update_write(PATH, doc, UPDATE_TIME) == library_update(doc, UPDATE_TIME)
