import pytest

from functions.core.relays import RelayConfigError, relay_from_url, relay_from_user
from functions.settings import SettingsError, load_settings


def test_app_fields_give_url_and_identity():
    spec = relay_from_user(
        {
            "websocketServerUrl": "PBX.Example.com",
            "websocketServerPort": 7100,
            "websocketUseSSL": True,
            "websocketHttpAuthId": "id",
            "websocketHttpAuthPassword": "secret",
        }
    )
    assert spec.url == "wss://pbx.example.com:7100" and spec.endpoint == "pbx.example.com:7100"
    assert (spec.auth_id, spec.auth_password) == ("id", "secret")
    assert "secret" not in repr(spec)


def test_seed_fields_and_defaults():
    spec = relay_from_user({"serverAddress": "makecall.io", "serverSSL": False})
    assert spec.url == "ws://makecall.io:7099"
    assert relay_from_user({"serverAddress": "makecall.io", "serverPort": 7000}).port == 7000


def test_current_names_win_over_seed_names():
    spec = relay_from_user({"websocketServerUrl": "new.example", "serverAddress": "old.example"})
    assert spec.host == "new.example"


def test_full_url_in_host_field():
    assert relay_from_user({"websocketServerUrl": "wss://x.io:8443/ws"}).url == "wss://x.io:8443/ws"


def test_no_relay_and_bad_values():
    assert relay_from_user({}) is None
    with pytest.raises(RelayConfigError):
        relay_from_user({"websocketServerUrl": "x.io", "websocketServerPort": "many"})
    with pytest.raises(RelayConfigError):
        relay_from_user({"websocketServerUrl": "x.io", "websocketServerPort": 70000})
    with pytest.raises(RelayConfigError):
        relay_from_url("http://x.io")


def test_credentials_in_env_url_are_kept_out_of_the_url():
    spec = relay_from_url("wss://user:p%40ss@relay.example:7443")
    assert (spec.auth_id, spec.auth_password) == ("user", "p@ss")
    assert spec.url == "wss://relay.example:7443"


def test_settings_defaults_and_parsing():
    s = load_settings({"GOOGLE_CLOUD_PROJECT": "p"})
    assert (s.ring_window_seconds, s.trunk_context_prefixes, s.call_events_topic) == (
        60,
        ("trk",),
        "call-events",
    )
    assert s.topic_path == "projects/p/topics/call-events"
    assert s.tenancy == "directory" and s.relay_allowed_networks == ()
    assert s.tenant_cache_seconds == 15.0
    s = load_settings(
        {
            "GOOGLE_CLOUD_PROJECT": "p",
            "TENANCY": "User_Documents",
            "RELAY_ALLOWED_NETWORKS": "10.8.0.0/24, ::1",
        }
    )
    assert s.tenancy == "user_documents"
    assert [str(n) for n in s.relay_allowed_networks] == ["10.8.0.0/24", "::1/128"]
    s = load_settings(
        {
            "GOOGLE_CLOUD_PROJECT": "p",
            "TRUNK_CONTEXT_PREFIXES": "from-pstn, trk ,",
            "PBX_RELAYS": "ws://a:1,wss://b",
            "RING_WINDOW_SECONDS": "45",
            "FCM_ENDPOINT": "http://127.0.0.1:9/",
            "CALL_EVENTS_TOPIC": "projects/q/topics/t",
        }
    )
    assert s.trunk_context_prefixes == ("from-pstn", "trk")
    assert s.pbx_relays == ("ws://a:1", "wss://b") and s.ring_window_seconds == 45
    assert s.fcm_endpoint == "http://127.0.0.1:9" and s.topic_path == "projects/q/topics/t"


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"GOOGLE_CLOUD_PROJECT": "p", "RING_WINDOW_SECONDS": "soon"},
        {"GOOGLE_CLOUD_PROJECT": "p", "RING_WINDOW_SECONDS": "0"},
        {"GOOGLE_CLOUD_PROJECT": "p", "PBX_RELAYS": "http://x"},
        {"GOOGLE_CLOUD_PROJECT": "p", "MISSED_CALL_NOTIFICATIONS": "maybe"},
        {"GOOGLE_CLOUD_PROJECT": "p", "TENANCY": "users"},
        {"GOOGLE_CLOUD_PROJECT": "p", "RELAY_ALLOWED_NETWORKS": "10.8.0.0/33"},
        {"GOOGLE_CLOUD_PROJECT": "p", "RELAY_ALLOWED_NETWORKS": "vpc"},
        {"GOOGLE_CLOUD_PROJECT": "p", "RELAY_ALLOWED_NETWORKS": "0.0.0.0/0"},
        {"GOOGLE_CLOUD_PROJECT": "p", "RELAY_ALLOWED_NETWORKS": "10.8.0.0/24,::/0"},
        {"GOOGLE_CLOUD_PROJECT": "p", "TENANT_CACHE_SECONDS": "0"},
    ],
)
def test_bad_settings_fail_at_start(env):
    with pytest.raises(SettingsError):
        load_settings(env)
