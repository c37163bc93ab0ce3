"""The Firestore documents the admin tools judge, as plain dicts keyed by document id. Pure:
functions.admin.firestore_reader fills it from Firestore, tests build it by hand."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

Doc = Mapping[str, Any]
Collection = Mapping[str, Doc]

TENANTS = "pbx_tenants"
USERS = "users"
EXTENSIONS = "my_extensions"
TOKENS = "fcm_tokens"
SETTINGS = "user_notification_settings"
RELAY_ACCESS = "relay_access"
COLLECTIONS = (TENANTS, USERS, EXTENSIONS, TOKENS, SETTINGS, RELAY_ACCESS)


@dataclass(frozen=True)
class Documents:
    pbx_tenants: Collection = field(default_factory=dict)
    users: Collection = field(default_factory=dict)
    my_extensions: Collection = field(default_factory=dict)
    fcm_tokens: Collection = field(default_factory=dict)
    user_notification_settings: Collection = field(default_factory=dict)
    relay_access: Collection = field(default_factory=dict)  # user-documents mode only

    @classmethod
    def of(cls, collections: Mapping[str, Collection]) -> Documents:
        """From {"users": {uid: doc}, ...}; collections not given are empty."""
        return cls(**{name: dict(collections.get(name, {})) for name in COLLECTIONS})

    def with_tenant(self, tenant_id: str, doc: Doc | None) -> Documents:
        """These documents with one pbx_tenants document replaced (None: removed)."""
        tenants = {k: v for k, v in self.pbx_tenants.items() if k != tenant_id}
        if doc is not None:
            tenants[tenant_id] = doc
        return Documents(
            tenants,
            self.users,
            self.my_extensions,
            self.fcm_tokens,
            self.user_notification_settings,
            self.relay_access,
        )

    @cached_property
    def _tokens_by_user(self) -> dict[Any, list[tuple[str, Doc]]]:
        return _by_user(self.fcm_tokens)

    @cached_property
    def _extensions_by_user(self) -> dict[Any, list[tuple[str, Doc]]]:
        return _by_user(self.my_extensions)

    def tokens_of(self, user_id: str) -> list[tuple[str, Doc]]:
        return self._tokens_by_user.get(user_id, [])

    def extensions_of(self, user_id: str) -> list[tuple[str, Doc]]:
        return self._extensions_by_user.get(user_id, [])


def _by_user(collection: Collection) -> dict[Any, list[tuple[str, Doc]]]:
    """Documents per `userId`, each list in document id order (one pass, not one per user)."""
    out: dict[Any, list[tuple[str, Doc]]] = {}
    for doc_id in sorted(collection):
        user_id = collection[doc_id].get("userId")
        if isinstance(user_id, str):
            out.setdefault(user_id, []).append((doc_id, collection[doc_id]))
    return out
