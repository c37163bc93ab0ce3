"""Recognising a lost write race on Firestore."""

from __future__ import annotations

from google.api_core import exceptions


def lost_race(exc: BaseException) -> bool:
    """Another writer committed first: a create/update precondition failed (AlreadyExists,
    NotFound, FailedPrecondition for a stale update time) or the transaction was aborted. A
    failing rollback after it raises its own error with this one as context, so the chain is
    searched."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(
            seen,
            exceptions.AlreadyExists
            | exceptions.NotFound
            | exceptions.FailedPrecondition
            | exceptions.Aborted,
        ):
            return True
        seen = seen.__context__
    return False
