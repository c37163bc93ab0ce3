"""The ring path's two Firestore commits, encoded straight to protobuf.

A ringing call costs the notifier two commits: the ledger claim before the first FCM request and
the ring's results with the history after the pushes (ring_commit.py). Through the
google-cloud-firestore client each one builds its writes with proto-plus wrappers and runs
api_core's retry, timeout and logging layers: 0.76 ms of CPU for one `create` of a ledger
record against the emulator, of which the gRPC call itself is 0.26 ms (bench/burst.py measures
the call). Here the same writes are built with the client's own protobuf classes (the raw
message types behind its proto-plus ones) and sent over the client's own gRPC channel with its
request metadata, so credentials, emulator mode and the endpoint are the client's.

What it writes is what the client would write: tests/unit/test_direct_commit.py compares each
write with the client's own (`_helpers.pbs_for_create` / `pbs_for_update`) for every value the
notifier stores. Errors are the client's too (google.api_core exceptions, from the gRPC
status), retried like the client's commit (ResourceExhausted, ServiceUnavailable) but within
COMMIT_DEADLINE: a ring cannot wait a minute.

Only what the ring path needs: plain values, maps and lists, datetimes, SERVER_TIMESTAMP at the
top level, DELETE_FIELD in updates of top-level fields. Anything else raises TypeError, which is
a bug in the caller, never data: the values come from the notifier's own records.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from google.api_core import exceptions, gapic_v1, retry
from google.api_core.datetime_helpers import DatetimeWithNanoseconds as ValueNanos
from google.cloud import firestore
from google.cloud.firestore_v1 import DELETE_FIELD, SERVER_TIMESTAMP
from google.cloud.firestore_v1.types import document, write
from google.cloud.firestore_v1.types import firestore as firestore_types
from proto.datetime_helpers import DatetimeWithNanoseconds

WritePb = write.Write.pb()
CommitRequestPb = firestore_types.CommitRequest.pb()
CommitResponsePb = firestore_types.CommitResponse.pb()
_TransformPb = write.DocumentTransform.FieldTransform.pb()
_REQUEST_TIME = write.DocumentTransform.FieldTransform.ServerValue.REQUEST_TIME
_NULL = document.Value.pb()().null_value  # 0: NULL_VALUE
_SIMPLE_FIELD = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*\Z")  # a field path that needs no quoting
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
COMMIT_TIMEOUT = 10.0  # seconds per attempt
COMMIT_DEADLINE = 20.0  # seconds for all attempts (the client's own: 60)
_RETRY = retry.Retry(
    initial=0.1,
    maximum=2.0,
    multiplier=1.3,
    predicate=retry.if_exception_type(exceptions.ResourceExhausted, exceptions.ServiceUnavailable),
    timeout=COMMIT_DEADLINE,
)


def _timestamp(target: Any, when: datetime.datetime, nanos_of: type = ValueNanos) -> None:
    """As the client encodes a datetime: naive means UTC, and only `nanos_of` (api_core's
    DatetimeWithNanoseconds in a value, proto-plus's in a precondition) keeps nanoseconds."""
    if isinstance(when, nanos_of):
        target.CopyFrom(when.timestamp_pb())  # type: ignore[attr-defined]
        return
    aware = when if when.tzinfo is not None else when.replace(tzinfo=datetime.UTC)
    delta = aware - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    seconds, micros = divmod(micros, 1_000_000)
    target.seconds = seconds
    target.nanos = micros * 1000


def encode_into(target: Any, value: object) -> None:
    """Set the raw `Value` message `target` to `value`, as `_helpers.encode_value` would."""
    kind = type(value)
    if kind is str:
        target.string_value = value
    elif value is None:
        target.null_value = _NULL
    elif kind is bool:
        target.boolean_value = value
    elif kind is int:
        target.integer_value = value
    elif kind is float:
        target.double_value = value
    elif isinstance(value, Mapping):
        fields = target.map_value.fields
        target.map_value.SetInParent()  # an empty map is still a map
        for key, item in value.items():
            if not key or type(key) is not str:
                raise ValueError(f"a map key must be a non-empty string: {key!r}")
            encode_into(fields[key], item)
    elif kind is list or kind is tuple:
        target.array_value.SetInParent()
        values = target.array_value.values
        for item in value:  # type: ignore[attr-defined]
            encode_into(values.add(), item)
    elif isinstance(value, datetime.datetime):
        _timestamp(target.timestamp_value, value)
    elif isinstance(value, bool):
        target.boolean_value = bool(value)
    elif isinstance(value, int):
        target.integer_value = int(value)
    elif isinstance(value, float):
        target.double_value = float(value)
    elif isinstance(value, str):
        target.string_value = str(value)
    elif kind is bytes:
        target.bytes_value = value
    else:
        raise TypeError(f"direct_commit cannot encode {kind.__name__}")


def _fields(doc: Any, values: Mapping[str, object]) -> list[str]:
    """Encode `values` into the document's fields; returns the top-level SERVER_TIMESTAMP
    fields (transforms) and leaves DELETE_FIELD ones out."""
    fields = doc.fields
    stamped = []
    for key, value in values.items():
        if not key or type(key) is not str:
            raise ValueError(f"a field name must be a non-empty string: {key!r}")
        if value is SERVER_TIMESTAMP:
            stamped.append(key)
        elif value is DELETE_FIELD:
            continue
        else:
            encode_into(fields[key], value)
    return stamped


def _field_path(key: str) -> str:
    if not _SIMPLE_FIELD.match(key):
        raise TypeError(f"direct_commit writes simple top-level field names only: {key!r}")
    return key


def _stamp(pb: Any, stamped: list[str]) -> None:
    for key in sorted(stamped):
        pb.update_transforms.append(
            _TransformPb(field_path=_field_path(key), set_to_server_value=_REQUEST_TIME)
        )


def create_write(path: str, values: Mapping[str, object]) -> Any:
    """`DocumentReference.create(values)`'s write for the document at `path` (full name)."""
    if any(value is DELETE_FIELD for value in values.values()):
        raise ValueError("Cannot apply DELETE_FIELD in a create request.")
    pb = WritePb()
    pb.update.name = path
    _stamp(pb, _fields(pb.update, values))
    pb.current_document.exists = False
    return pb


def update_write(
    path: str, changes: Mapping[str, object], last_update_time: datetime.datetime
) -> Any:
    """`batch.update(ref, changes, option=write_option(last_update_time=...))`'s write, for
    top-level fields."""
    if not changes:
        raise ValueError("Cannot update with an empty document.")
    pb = WritePb()
    pb.update.name = path
    stamped = _fields(pb.update, changes)
    pb.update_mask.field_paths.extend(  # sorted, as the client sends them
        sorted(_field_path(key) for key, value in changes.items() if value is not SERVER_TIMESTAMP)
    )
    _timestamp(pb.current_document.update_time, last_update_time, DatetimeWithNanoseconds)
    _stamp(pb, stamped)
    return pb


class DirectCommit:
    """Commits raw writes over a firestore.Client's channel."""

    def __init__(self, client: firestore.Client) -> None:
        self.client = client
        self.database = client._database_string
        transport = client._firestore_api._transport
        self._commit = transport.grpc_channel.unary_unary(
            "/google.firestore.v1.Firestore/Commit",
            request_serializer=CommitRequestPb.SerializeToString,
            response_deserializer=CommitResponsePb.FromString,
        )
        # as the client's own commit sends: resource prefix (and the emulator's owner
        # token), routing header, client library versions
        self._metadata = (
            *client._rpc_metadata,
            gapic_v1.routing_header.to_grpc_metadata((("database", self.database),)),
            client._client_info.to_grpc_metadata(),
        )
        self.commits = 0

    def path(self, ref: firestore.DocumentReference) -> str:
        return ref._document_path

    def commit(self, writes: Sequence[Any]) -> list[DatetimeWithNanoseconds]:
        """Commit the writes atomically; each write's update time."""
        request = CommitRequestPb(database=self.database)
        request.writes.extend(writes)
        response = _RETRY(self._send)(request)
        self.commits += 1
        return [
            DatetimeWithNanoseconds.from_timestamp_pb(r.update_time) for r in response.write_results
        ]

    def create(self, ref: firestore.DocumentReference, values: Mapping[str, object]) -> Any:
        """`ref.create(values)`: its update time."""
        return self.commit([create_write(self.path(ref), values)])[0]

    def _send(self, request: Any) -> Any:
        try:
            return self._commit(request, metadata=self._metadata, timeout=COMMIT_TIMEOUT)
        except grpc.RpcError as exc:
            raise exceptions.from_grpc_error(exc) from exc
