"""The connector's live `users` listener on Google's Firestore emulator."""

from __future__ import annotations

import threading

from functions.connector.adapters.relay_directory import UsersRelayWatcher
from tests.support import eventually


def test_a_listener_the_client_library_gave_up_is_started_again(db):
    seen: list[set[str]] = []
    changed = threading.Event()

    def on_change(desired) -> None:
        seen.append(set(desired))
        changed.set()

    watcher = UsersRelayWatcher(db, (), on_change)
    watcher.start()
    try:
        eventually(lambda: seen, 10)  # the first (empty) snapshot
        assert watcher.ensure_listening() is False  # alive: nothing to do
        # What the library does when it ends a listener on an error it does not retry.
        watcher._watch.close()
        db.collection("users").document("a").set(
            {"websocketServerUrl": "127.0.0.1", "websocketServerPort": 7101}
        )
        changed.clear()
        assert not changed.wait(1.0)  # the dead listener hears nothing
        assert watcher.ensure_listening() is True
        eventually(lambda: seen[-1] == {"127.0.0.1:7101"}, 10)
        assert watcher.restarts == 1
    finally:
        watcher.stop()
