"""The connector's relays in directory mode (TenantRelayWatcher), fed snapshots as the Firestore
listener would: credentials from the directory or Secret Manager, failures left out and retried.
Secret Manager has no emulator: a reader that answers from a dict stands in for it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pytest

from functions.connector.adapters.relay_directory import (
    SECRET_REFRESH_SECONDS,
    SECRET_RETRY_SECONDS,
    TenantRelayWatcher,
)
from functions.connector.adapters.secrets import SecretUnavailable, split_credentials

SECRET = "projects/demo/secrets/acme-relay/versions/latest"


@dataclass
class Snap:
    id: str
    data: dict[str, Any]
    update_time: int = 1

    def to_dict(self) -> dict[str, Any]:
        return self.data


class Secrets:
    def __init__(self, values: dict[str, tuple[str, str]]) -> None:
        self.values = values
        self.reads = 0

    def credentials(self, name: str) -> tuple[str, str]:
        self.reads += 1
        if name not in self.values:
            raise SecretUnavailable(f"{name}: NotFound")
        return self.values[name]


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def watcher(secrets: Secrets, clock: Clock | None = None):
    published: list[dict] = []
    w = TenantRelayWatcher(
        None, (), published.append, region="KR", secrets=secrets, clock=clock or Clock()
    )
    return w, published


def tenant(**pbx: Any) -> Snap:
    entry = {"relay": "wss://pbx.acme.example:7099", "serverId": 1, **pbx}
    return Snap("acme", {"pbx": [entry], "numbers": ["070-4514-4801"], "members": ["kim"]})


def test_inline_credentials_are_used_as_given():
    w, published = watcher(Secrets({}))
    w._apply([tenant(authId="acme", authPassword="pw")])
    spec = published[-1]["pbx.acme.example:7099"]
    assert (spec.auth_id, spec.auth_password, spec.tls) == ("acme", "pw", True)


def test_a_secret_managers_credentials_are_used_and_re_read_for_rotation():
    secrets = Secrets({SECRET: ("acme", "from-secret")})
    clock = Clock()
    w, published = watcher(secrets, clock)
    w._apply([tenant(authSecret=SECRET)])
    assert published[-1]["pbx.acme.example:7099"].auth_password == "from-secret"
    secrets.values[SECRET] = ("acme", "rotated")
    clock.now = SECRET_REFRESH_SECONDS - 1
    w.tick()
    assert published[-1]["pbx.acme.example:7099"].auth_password == "from-secret"
    clock.now = SECRET_REFRESH_SECONDS + 1
    w.tick()
    assert published[-1]["pbx.acme.example:7099"].auth_password == "rotated"


def test_an_unreadable_secret_leaves_only_that_relay_out_logged_once_and_retried(caplog):
    secrets = Secrets({})
    clock = Clock()
    w, published = watcher(secrets, clock)
    other = Snap(
        "bravo",
        {"pbx": [{"relay": "ws://pbx.bravo.example"}], "numbers": ["02-555-1234"], "members": []},
    )
    with caplog.at_level(logging.ERROR, logger="connector.relays"):
        w._apply([tenant(authSecret=SECRET), other])
        w._apply([tenant(authSecret=SECRET), other])  # another change: not logged again
    assert set(published[-1]) == {"pbx.bravo.example:7099"}
    failures = [r for r in caplog.records if "credentials unavailable" in r.getMessage()]
    assert len(failures) == 1
    assert "NotFound" in failures[0].fields["reason"]
    secrets.values[SECRET] = ("acme", "now-there")
    clock.now = SECRET_RETRY_SECONDS + 1
    w.tick()
    assert published[-1]["pbx.acme.example:7099"].auth_password == "now-there"


def test_a_bad_tenant_is_skipped_and_the_others_are_connected(caplog):
    w, published = watcher(Secrets({}))
    broken = Snap("broken", {"pbx": [{"relay": "pbx.example:7099", "serverId": "x"}]})
    with caplog.at_level(logging.ERROR):
        w._apply([broken, tenant()])
        w._apply([broken, tenant()])
    assert set(published[-1]) == {"pbx.acme.example:7099"}
    skipped = [r for r in caplog.records if r.getMessage() == "pbx_tenants document skipped"]
    assert len(skipped) == 1 and skipped[0].fields["path"] == "pbx_tenants/broken"
    broken.update_time = 2  # the admin edits it (still broken): reported again
    w._apply([broken, tenant()])
    assert len([r for r in caplog.records if r.getMessage() == "pbx_tenants document skipped"]) == 2


@pytest.mark.parametrize("payload", [b"no-colon-s3cret", b":s3cret", b"s3cret:", b""])
def test_a_secret_that_is_not_id_and_password_is_refused_without_its_value(payload):
    with pytest.raises(SecretUnavailable, match="id:password") as err:
        split_credentials(SECRET, payload)
    assert "s3cret" not in str(err.value)


def test_a_password_may_hold_colons():
    assert split_credentials(SECRET, b"acme:pw:with:colons\n") == ("acme", "pw:with:colons")
