"""Firestore documents for the end-to-end scenarios, in the app's shapes."""

from __future__ import annotations

from typing import Any

from google.cloud import firestore

NUMBER = "07045144801"


def user(relay_port: int, host: str = "127.0.0.1", **extra: Any) -> dict[str, Any]:
    return {
        "websocketServerUrl": host,
        "websocketServerPort": relay_port,
        "amiServerId": 1,
        "companyName": "데모상사",
        "isActive": True,
        **extra,
    }


def device(uid: str, token: str, **extra: Any) -> dict[str, Any]:
    return {
        "userId": uid,
        "fcmToken": token,
        "deviceId": token,
        "platform": "android",
        "isActive": True,
        "isApproved": True,
        **extra,
    }


def write(db: firestore.Client, docs: dict[str, dict[str, dict[str, Any]]]) -> None:
    batch = db.batch()
    for collection, items in docs.items():
        for doc_id, doc in items.items():
            batch.set(db.collection(collection).document(doc_id), doc)
    batch.commit()


def company(relay_port: int, other_relay_port: int) -> dict[str, dict[str, dict[str, Any]]]:
    """Who owns 070-4514-4801 and who should ring:
    kim (2 phones + a web dummy) and lee ring; park is suspended, jung turned pushes off, choi is
    on another PBX behind the same relay, han has the same number on another relay, oh listens to
    the relay in the app (dcmiwsEnabled)."""

    def ext(uid: str, extension: str, code: str = "070-4514-4801") -> dict[str, Any]:
        return {
            "userId": uid,
            "extension": extension,
            "accountCode": code,
            "externalCidName": "대표번호",
            "externalCidNumber": "070-4514-4801",
        }

    return {
        "users": {
            "kim": user(relay_port),
            "lee": user(relay_port),
            "park": user(relay_port, isActive=False),
            "jung": user(relay_port),
            "choi": user(relay_port, amiServerId=2),
            "han": user(other_relay_port),
            "oh": user(relay_port, dcmiwsEnabled=True),
        },
        "my_extensions": {
            "e-kim": ext("kim", "1010"),
            "e-lee": ext("lee", "1011", "+82-70-4514-4801"),
            "e-park": ext("park", "1012", NUMBER),
            "e-jung": ext("jung", "1013", NUMBER),
            "e-choi": ext("choi", "2010", NUMBER),
            "e-han": ext("han", "3010", NUMBER),
            "e-oh": ext("oh", "1014", NUMBER),
            "e-other": ext("lee", "1099", "02-555-1234"),
        },
        "fcm_tokens": {
            "kim_a_Android": device("kim", "tok-kim-android"),
            "kim_b_iOS": device("kim", "tok-kim-ios", platform="ios"),
            "kim_w_Web": device("kim", "web_dummy_token_1762257300000", platform="web"),
            "kim_old_Android": device("kim", "tok-kim-unapproved", isApproved=False),
            "lee_a_Android": device("lee", "tok-lee"),
            "park_a_Android": device("park", "tok-park"),
            "jung_a_Android": device("jung", "tok-jung"),
            "choi_a_Android": device("choi", "tok-choi"),
            "han_a_Android": device("han", "tok-han"),
            "oh_a_Android": device("oh", "tok-oh"),
        },
        "user_notification_settings": {
            "jung": {"pushEnabled": False},
            "kim": {"pushEnabled": True},
        },
        "call_forward_info": {
            "kim_1010": {"isEnabled": True, "destinationNumber": "010-9876-5432"}
        },
        # what a connector records for these relays (user-documents mode): open relays, so
        # everyone naming one may be rung from it; tests without a connector need it too
        "relay_access": {
            f"127.0.0.1:{relay_port}": relay_access(["kim", "lee", "park", "jung", "choi", "oh"]),
            f"127.0.0.1:{other_relay_port}": relay_access(["han"]),
        },
    }


def relay_access(users: list[str], *, open_relay: bool = True) -> dict[str, Any]:
    """A relay_access document as the connector writes it (functions/adapters/relay_access.py)."""
    return {"users": sorted(users), "refused": [], "unproven": [], "open": open_relay}


EXPECTED_TOKENS = {"tok-kim-android", "tok-kim-ios", "tok-lee"}
