"""The notifier's recipient lookup (functions.notifier.adapters.firestore_directory), keeping the
users who listen to the relay in the app (`dcmiwsEnabled`): the notifier skips them because the
app rings on the device holding the relay connection, and sendIncomingCallNotification is how
that device asks for their other devices to ring. Every other rule (tenancy, suspension, pushes
off, device filters) is the notifier's, unchanged."""

from __future__ import annotations

from functions.core.recipients import Doc
from functions.notifier.adapters.firestore_directory import FirestoreDirectory

DCMIWS_FIELD = "dcmiwsEnabled"


class DcmiwsDirectory(FirestoreDirectory):
    def _get_docs(
        self, user_ids: list[str], forward_ids: list[str]
    ) -> tuple[dict[str, Doc | None], dict[str, Doc | None], dict[str, Doc | None]]:
        users, settings, forwards = super()._get_docs(user_ids, forward_ids)
        kept = {
            uid: None if doc is None else {k: v for k, v in doc.items() if k != DCMIWS_FIELD}
            for uid, doc in users.items()
        }
        return kept, settings, forwards
