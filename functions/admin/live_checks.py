"""`doctor --live`: each relay's answer to an upgrade with the credentials the connector would
send (directory mode: the pbx entry the connector picks per endpoint, its Secret Manager
credentials read as the connector reads them; user-documents mode: every distinct way users
name the relay), turned into problems with the documents to fix."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace

from functions.admin.doctor import ERROR, Problem
from functions.admin.documents import TENANTS, USERS, Documents
from functions.admin.live import UpgradeResult, try_upgrades
from functions.connector.adapters.secrets import SecretReader, SecretUnavailable
from functions.core.relay_candidates import relay_candidates
from functions.core.relays import RelayConfigError, RelaySpec, relay_from_url, relay_from_user
from functions.core.tenancy import TenantError, TenantIndex, parse_tenant
from functions.settings import Settings


@dataclass(frozen=True, slots=True)
class Attempt:
    spec: RelaySpec
    paths: tuple[str, ...]  # the documents that name the relay this way


def _static(settings: Settings) -> list[RelaySpec]:
    specs = []
    for url in settings.pbx_relays:
        try:
            specs.append(relay_from_url(url))
        except RelayConfigError:
            continue  # reported by diagnose
    return specs


def attempts(
    documents: Documents, settings: Settings, secrets: SecretReader | None = None
) -> tuple[list[Attempt], list[Problem]]:
    problems: list[Problem] = []
    out: list[Attempt] = [Attempt(spec, ("PBX_RELAYS",)) for spec in _static(settings)]
    if settings.tenancy == "directory":
        tenants = []
        for tenant_id, doc in sorted(documents.pbx_tenants.items()):
            try:
                tenants.append(parse_tenant(tenant_id, doc, settings.default_region))
            except TenantError:
                continue  # reported by diagnose
        index = TenantIndex.build(tenants)
        naming: dict[str, list[str]] = defaultdict(list)
        for tenant in index.tenants.values():
            for pbx in tenant.pbx:
                naming[pbx.endpoint].append(f"{TENANTS}/{tenant.tenant_id}")
        static = {a.spec.endpoint for a in out}
        for endpoint, pbx in sorted(index.relays().items()):
            if endpoint in static:
                continue  # PBX_RELAYS wins, as in the connector
            spec = pbx.relay
            paths = tuple(dict.fromkeys(naming[endpoint]))
            if pbx.auth_secret:
                try:
                    if secrets is None:
                        from functions.connector.adapters.secrets import SecretManagerReader

                        secrets = SecretManagerReader()
                    auth_id, password = secrets.credentials(pbx.auth_secret)
                except SecretUnavailable as exc:
                    problems += [
                        Problem(p, ERROR, "relay_secret_unavailable", str(exc)) for p in paths
                    ]
                    continue
                spec = replace(spec, auth_id=auth_id, auth_password=password)
            out.append(Attempt(spec, paths))
        return out, problems
    by_user: dict[str, RelaySpec] = {}
    for uid, user in documents.users.items():
        try:
            spec = relay_from_user(user)
        except RelayConfigError:
            continue
        if spec is not None:
            by_user[uid] = spec
    for relay in relay_candidates((), by_user).values():
        for cand in relay.candidates:
            out.append(Attempt(cand.spec, tuple(f"{USERS}/{uid}" for uid in cand.users)))
    return out, problems


def live_report(
    documents: Documents, settings: Settings, secrets: SecretReader | None = None
) -> tuple[list[Problem], list[UpgradeResult]]:
    """The problems the relays' answers show, and every answer (for the report)."""
    planned, problems = attempts(documents, settings, secrets)
    results = try_upgrades([a.spec for a in planned], settings.relay_allowed_networks)
    for attempt, result in zip(planned, results, strict=True):
        if result.ok or result.answer.startswith("refused:"):
            continue  # refused by the address policy: diagnose reports it already
        code = "relay_credentials_refused" if result.refused_credentials else "relay_unreachable"
        why = (
            f"refused the credentials ({result.answer})"
            if result.refused_credentials
            else f"did not accept an upgrade: {result.answer}"
        )
        problems += [
            Problem(path, ERROR, code, f"relay {result.endpoint} {why} (live check)")
            for path in attempt.paths
        ]
    return problems, results


def live_problems(documents: Documents, settings: Settings) -> list[Problem]:
    return live_report(documents, settings)[0]
