"""What `doctor --live` tries: the settings the connector would use per relay. Secret Manager
cannot run here: a SecretReader stand-in (the connector's own interface) answers for it."""

from __future__ import annotations

from functions.admin.documents import Documents
from functions.admin.live_checks import attempts
from functions.connector.adapters.secrets import SecretUnavailable
from functions.settings import load_settings

SECRET = "projects/p/secrets/relay/versions/latest"


class Secrets:
    def __init__(self, value: tuple[str, str] | None) -> None:
        self.value = value
        self.asked: list[str] = []

    def credentials(self, version_name: str) -> tuple[str, str]:
        self.asked.append(version_name)
        if self.value is None:
            raise SecretUnavailable(f"{version_name}: PermissionDenied")
        return self.value


def tenants(**pbx: str) -> Documents:
    return Documents.of(
        {
            "pbx_tenants": {
                "b": {"pbx": [{"relay": "ws://relay.example:7099", "authId": "other", **pbx}]},
                "a": {"pbx": [{"relay": "ws://relay.example:7099", "authSecret": SECRET}]},
            }
        }
    )


def test_directory_mode_uses_the_lowest_tenant_ids_entry_with_its_secret():
    secrets = Secrets(("ops", "pw"))
    planned, problems = attempts(tenants(), load_settings({"GOOGLE_CLOUD_PROJECT": "p"}), secrets)
    assert problems == []
    (attempt,) = planned
    assert (attempt.spec.auth_id, attempt.spec.auth_password) == ("ops", "pw")
    assert attempt.paths == ("pbx_tenants/a", "pbx_tenants/b")
    assert secrets.asked == [SECRET]


def test_an_unreadable_secret_is_a_problem_of_every_tenant_naming_the_relay():
    planned, problems = attempts(
        tenants(), load_settings({"GOOGLE_CLOUD_PROJECT": "p"}), Secrets(None)
    )
    assert planned == []
    assert {(p.path, p.code) for p in problems} == {
        ("pbx_tenants/a", "relay_secret_unavailable"),
        ("pbx_tenants/b", "relay_secret_unavailable"),
    }
    assert all("PermissionDenied" in p.message for p in problems)


def test_pbx_relays_win_over_the_directory_as_in_the_connector():
    settings = load_settings(
        {"GOOGLE_CLOUD_PROJECT": "p", "PBX_RELAYS": "wss://id:pw@relay.example:7099"}
    )
    secrets = Secrets(("ops", "pw"))
    planned, _ = attempts(tenants(), settings, secrets)
    assert [(a.spec.tls, a.paths) for a in planned] == [(True, ("PBX_RELAYS",))]
    assert secrets.asked == []
