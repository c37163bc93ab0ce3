"""Firebase ID tokens, verified with firebase-admin.

With FIREBASE_AUTH_EMULATOR_HOST set (local runs and tests), firebase-admin accepts the Auth
emulator's unsigned tokens (`alg: none`) without any network; otherwise it checks Google's
signature, the project as audience and issuer, and the expiry. Revocation is not checked: it would
cost a call to the Auth API on every confirm, and an ID token lives one hour.
"""

from __future__ import annotations

import firebase_admin
from firebase_admin import auth


class InvalidIdToken(ValueError):
    """Not a usable Firebase ID token of this project (malformed, expired, other project)."""


class IdTokenVerifier:
    def __init__(self, app: firebase_admin.App) -> None:
        self.app = app

    def uid(self, token: str) -> str:
        try:
            claims = auth.verify_id_token(token, app=self.app)
        except (ValueError, auth.InvalidIdTokenError, auth.ExpiredIdTokenError) as exc:
            # firebase-admin raises ValueError for empty or undecodable strings
            raise InvalidIdToken(type(exc).__name__) from None
        uid = claims.get("uid")
        if not isinstance(uid, str) or not uid:
            raise InvalidIdToken("no uid")
        return uid
