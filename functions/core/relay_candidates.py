"""User-documents mode: which settings to connect a relay with, and who the relay vouched for.

Users' own `users/{uid}` documents name a relay endpoint (host:port) and how to reach it
(scheme, path, HTTP Basic credentials). Each distinct way of reaching one endpoint is a
`Candidate`; the connector tries them in a deterministic order (PBX_RELAYS first, then the
settings most users share, then the lowest user id) until the relay accepts one, and probes the
others once, so that each is known as accepted (True) or refused (False, HTTP 401/403 on the
upgrade). A user is rung from the relay only when their own settings were accepted, or when the
relay is `open` (it accepted an upgrade without credentials: no proof of anything, everyone
naming it qualifies). Pure: the relay client connects, the adapters read and write.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from functions.core.recipients import Selection, Skip
from functions.core.relays import RelaySpec

# Distinct settings tried per endpoint: bounds the handshakes a crowd of users documents with
# made-up credentials can make the connector send to one relay. Users beyond are unproven.
MAX_CANDIDATES = 16
REFUSED_STATUSES = frozenset({401, 403})  # "these credentials are not accepted"

REFUSED = "relay_credentials_refused"
UNPROVEN = "relay_credentials_unproven"

# How to reach an endpoint, credentials included: never logged, never stored.
CandidateKey = tuple[bool, str, str, str]
Results = Mapping[CandidateKey, bool]  # True: the relay accepted these settings; False: refused


def candidate_key(spec: RelaySpec) -> CandidateKey:
    return (spec.tls, spec.path, spec.auth_id, spec.auth_password)


@dataclass(frozen=True, slots=True)
class Candidate:
    spec: RelaySpec
    users: tuple[str, ...] = ()  # the user ids naming the endpoint exactly this way, sorted
    static: bool = False  # from PBX_RELAYS

    @property
    def key(self) -> CandidateKey:
        return candidate_key(self.spec)

    @property
    def has_credentials(self) -> bool:
        return bool(self.spec.auth_id)


@dataclass(frozen=True, slots=True)
class RelayCandidates:
    """One endpoint and the ways to reach it, in the order to try them."""

    endpoint: str
    candidates: tuple[Candidate, ...]
    dropped_users: tuple[str, ...] = ()  # beyond MAX_CANDIDATES: never tried, so unproven

    @property
    def spec(self) -> RelaySpec:
        return self.candidates[0].spec

    @property
    def url(self) -> str:
        return self.spec.url


@dataclass(frozen=True, slots=True)
class RelayAccess:
    """What one relay said of the users naming it."""

    users: frozenset[str] = frozenset()  # their settings were accepted
    refused: frozenset[str] = frozenset()  # their settings were refused (401/403)
    unproven: frozenset[str] = frozenset()  # not tried yet (or the attempt failed otherwise)
    open: bool = False  # accepted an upgrade without credentials


def relay_candidates(
    static: Iterable[RelaySpec], by_user: Mapping[str, RelaySpec], limit: int = MAX_CANDIDATES
) -> dict[str, RelayCandidates]:
    """Per endpoint, the distinct settings naming it: PBX_RELAYS' first (the operator's), then
    the settings most users share, ties to the one whose lowest user id sorts first. The order
    is deterministic, so every connector instance tries the same settings first."""
    static_specs: dict[str, dict[CandidateKey, RelaySpec]] = {}
    for spec in static:
        static_specs.setdefault(spec.endpoint, {}).setdefault(candidate_key(spec), spec)
    grouped: dict[str, dict[CandidateKey, tuple[RelaySpec, list[str]]]] = {}
    for user_id in sorted(by_user):
        spec = by_user[user_id]
        group = grouped.setdefault(spec.endpoint, {})
        group.setdefault(candidate_key(spec), (spec, []))[1].append(user_id)
    desired: dict[str, RelayCandidates] = {}
    for endpoint in sorted(static_specs.keys() | grouped.keys()):
        groups = grouped.get(endpoint, {})
        ordered = [
            Candidate(spec, tuple(groups.pop(key, (spec, []))[1]), static=True)
            for key, spec in static_specs.get(endpoint, {}).items()
        ]
        rest = sorted(groups.values(), key=lambda group: (-len(group[1]), group[1][0]))
        ordered += [Candidate(spec, tuple(users)) for spec, users in rest]
        dropped = tuple(sorted(uid for cand in ordered[limit:] for uid in cand.users))
        desired[endpoint] = RelayCandidates(endpoint, tuple(ordered[:limit]), dropped)
    return desired


def attempt_order(
    candidates: Iterable[Candidate], results: Results, in_use: CandidateKey | None
) -> list[Candidate]:
    """The order to try on a (re)connect: the settings last connected with, then others the
    relay accepted, then those not known yet, then those it refused (it may have changed)."""

    def rank(item: tuple[int, Candidate]) -> tuple[int, int]:
        index, cand = item
        if cand.key == in_use:
            return (0, index)
        known = results.get(cand.key)
        return (1 if known is True else 2 if known is None else 3, index)

    return [cand for _, cand in sorted(enumerate(candidates), key=rank)]


def probe_targets(
    candidates: Iterable[Candidate],
    results: Results,
    in_use: CandidateKey | None,
    attempted: Iterable[CandidateKey] = (),
) -> list[Candidate]:
    """The settings to probe while connected: every one not known yet and not probed since the
    last change (a probe that failed for another reason is not repeated until then)."""
    skip = set(attempted)
    return [c for c in candidates if c.key != in_use and c.key not in results and c.key not in skip]


def access_of(relay: RelayCandidates, results: Results) -> RelayAccess:
    users: set[str] = set()
    refused: set[str] = set()
    unproven: set[str] = set(relay.dropped_users)
    for cand in relay.candidates:
        known = results.get(cand.key)
        (users if known is True else refused if known is False else unproven).update(cand.users)
    is_open = any(results.get(c.key) is True and not c.has_credentials for c in relay.candidates)
    return RelayAccess(frozenset(users), frozenset(refused), frozenset(unproven), is_open)


def access_skip_reason(access: RelayAccess, user_id: str) -> str:
    """Why a user naming the relay is not rung from it, or "". (A relay with no record at all
    rings nobody; the notifier stops before this: firestore_directory.py.)"""
    if access.open or user_id in access.users:
        return ""
    if user_id in access.refused:
        return REFUSED
    return UNPROVEN


def filter_by_access(selection: Selection, access: RelayAccess) -> Selection:
    """Drop the recipients the relay did not vouch for, each with its skip reason."""
    kept = []
    for recipient in selection.recipients:
        reason = access_skip_reason(access, recipient.user_id)
        if reason:
            selection.skipped.append(Skip(recipient.user_id, reason))
        else:
            kept.append(recipient)
    selection.recipients[:] = kept
    return selection
