"""Typed settings, read once from the environment.

Both processes (connector and notifier) call `load_settings()` at start-up; nothing else in the
package reads `os.environ`. A bad value fails loudly at start, never in the middle of a call.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Tenancy = Literal["directory", "user_documents"]
TENANCY_MODES: tuple[Tenancy, ...] = ("directory", "user_documents")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The production environment each deployed workload reads (infra/ tests assert Terraform sets
# every one of them). Local-only overrides (emulators, FCM_ENDPOINT, CALL_EVENTS_PUSH_URL) and
# PORT (set by Cloud Run itself) are deliberately not listed.
CONNECTOR_ENV_VARS: tuple[str, ...] = (
    "GOOGLE_CLOUD_PROJECT",
    "TENANCY",
    "RELAY_ALLOWED_NETWORKS",
    "CALL_EVENTS_TOPIC",
    "PBX_RELAYS",
    "TRUNK_CONTEXT_PREFIXES",
    "RING_WINDOW_SECONDS",
    "DEFAULT_REGION",
    "LOG_LEVEL",
)
# Read by functions-framework, not by this code, and set by Terraform with the concurrency.
NOTIFIER_RUNTIME_ENV_VARS: tuple[str, ...] = ("THREADS",)
NOTIFIER_ENV_VARS: tuple[str, ...] = (
    "GOOGLE_CLOUD_PROJECT",
    "TENANCY",
    "RING_WINDOW_SECONDS",
    "DEFAULT_REGION",
    "LOG_LEVEL",
    "MISSED_CALL_NOTIFICATIONS",
)


class SettingsError(ValueError):
    """An environment variable has a value the product cannot use."""


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 1) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _networks(raw: str) -> tuple[IPNetwork, ...]:
    networks = []
    for part in _csv(raw):
        try:
            network = ipaddress.ip_network(part, strict=False)
        except ValueError:
            raise SettingsError(
                f"RELAY_ALLOWED_NETWORKS entries must be CIDRs like 10.8.0.0/24, got {part!r}"
            ) from None
        if network.prefixlen == 0:
            # would switch the address policy off altogether
            raise SettingsError(f"RELAY_ALLOWED_NETWORKS must not allow everything ({part!r})")
        networks.append(network)
    return tuple(networks)


def _tenancy(env: Mapping[str, str]) -> Tenancy:
    raw = env.get("TENANCY", "").strip().lower() or "directory"
    for mode in TENANCY_MODES:
        if raw == mode:
            return mode
    raise SettingsError(f"TENANCY must be directory or user_documents, got {raw!r}")


@dataclass(frozen=True, slots=True)
class Settings:
    project: str
    # Who may be rung from which PBX: the backend-owned `pbx_tenants` directory (default), or
    # the users' own documents (older deployments; weaker, see README "Tenancy").
    tenancy: Tenancy = "directory"
    # Private or loopback networks the connector may reach relays in (all others that are not
    # public are refused); empty = public addresses only.
    relay_allowed_networks: tuple[IPNetwork, ...] = ()
    call_events_topic: str = "call-events"
    call_events_push_url: str | None = None
    fcm_endpoint: str | None = None
    pbx_relays: tuple[str, ...] = ()
    trunk_context_prefixes: tuple[str, ...] = ("trk",)
    ring_window_seconds: int = 60
    default_region: str = "KR"
    port: int = 8080
    # The connector's health server binds this: every interface by default (Cloud Run sends
    # its probes there); `make dev` and the tests bind 127.0.0.1.
    health_host: str = "0.0.0.0"
    log_level: str = "INFO"
    missed_call_notifications: bool = True
    # Seconds the recipients of one number are reused (0: look up on every call).
    recipient_cache_seconds: float = 10.0
    # The notifier's copy of the PBX directory is at most this old when a call uses it (it is
    # re-read in the background after a third of it): an admin's change applies within it.
    tenant_cache_seconds: float = 15.0
    # Frames larger than this are dropped with a log line; the connection carries on.
    max_frame_bytes: int = 256 * 1024
    # Relay leases (HA): a dead holder's relays are taken over within
    # lease_seconds + lease_skew_seconds + lease_renew_seconds (30 s by default).
    lease_seconds: float = 20.0
    lease_renew_seconds: float = 5.0
    lease_skew_seconds: float = 5.0

    @property
    def topic_path(self) -> str:
        if self.call_events_topic.startswith("projects/"):
            return self.call_events_topic
        return f"projects/{self.project}/topics/{self.call_events_topic}"

    @property
    def topic_id(self) -> str:
        return self.topic_path.rsplit("/", 1)[-1]


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    project = (env.get("GOOGLE_CLOUD_PROJECT") or env.get("GCLOUD_PROJECT") or "").strip()
    if not project:
        raise SettingsError("GOOGLE_CLOUD_PROJECT is required")
    relays = _csv(env.get("PBX_RELAYS", ""))
    for url in relays:
        if not url.startswith(("ws://", "wss://")):
            raise SettingsError("PBX_RELAYS entries must start with ws:// or wss://")
    prefixes = _csv(env.get("TRUNK_CONTEXT_PREFIXES", "")) or ("trk",)
    level = env.get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise SettingsError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    return Settings(
        project=project,
        tenancy=_tenancy(env),
        relay_allowed_networks=_networks(env.get("RELAY_ALLOWED_NETWORKS", "")),
        call_events_topic=env.get("CALL_EVENTS_TOPIC", "").strip() or "call-events",
        call_events_push_url=env.get("CALL_EVENTS_PUSH_URL", "").strip() or None,
        fcm_endpoint=env.get("FCM_ENDPOINT", "").strip().rstrip("/") or None,
        pbx_relays=relays,
        trunk_context_prefixes=prefixes,
        ring_window_seconds=_int(env, "RING_WINDOW_SECONDS", 60),
        default_region=(env.get("DEFAULT_REGION", "").strip() or "KR").upper(),
        port=_int(env, "PORT", 8080, minimum=0),
        health_host=_health_host(env),
        log_level=level,
        missed_call_notifications=_bool(env, "MISSED_CALL_NOTIFICATIONS", True),
        max_frame_bytes=_int(env, "MAX_FRAME_BYTES", 256 * 1024),
        recipient_cache_seconds=_cache_seconds(env),
        tenant_cache_seconds=_float(env, "TENANT_CACHE_SECONDS", 15.0),
        **_lease_timing(env),
    )


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be > 0, got {value}")
    return value


def _cache_seconds(env: Mapping[str, str]) -> float:
    raw = env.get("RECIPIENT_CACHE_SECONDS", "").strip()
    if raw in {"0", "0.0"}:
        return 0.0
    return _float(env, "RECIPIENT_CACHE_SECONDS", 10.0)


def _lease_timing(env: Mapping[str, str]) -> dict[str, float]:
    timing = {
        "lease_seconds": _float(env, "LEASE_SECONDS", 20.0),
        "lease_renew_seconds": _float(env, "LEASE_RENEW_SECONDS", 5.0),
        "lease_skew_seconds": _float(env, "LEASE_SKEW_SECONDS", 5.0),
    }
    if timing["lease_renew_seconds"] + timing["lease_skew_seconds"] >= timing["lease_seconds"]:
        raise SettingsError("LEASE_RENEW_SECONDS + LEASE_SKEW_SECONDS must be < LEASE_SECONDS")
    return timing


def _health_host(env: Mapping[str, str]) -> str:
    raw = env.get("HEALTH_HOST", "").strip()
    if not raw:
        return "0.0.0.0"
    try:
        return str(ipaddress.ip_address(raw.strip("[]")))
    except ValueError:
        raise SettingsError(
            f"HEALTH_HOST must be an IP address to bind (e.g. 0.0.0.0, 127.0.0.1), got {raw!r}"
        ) from None
