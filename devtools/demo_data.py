"""Demo users, extensions and devices for `make dev`, in the app's own Firestore shapes.

Five users own the demo company number 070-4514-4801 (written in different formats on purpose);
only two of them should ring on this PBX:

| user        | why                                             | rings |
|-------------|-------------------------------------------------|-------|
| demo-kim    | Android + iOS + a web dummy token (skipped)     | yes   |
| demo-lee    | one Android phone, stored number "+82-70-..."   | yes   |
| demo-park   | suspended (`isActive: false`)                   | no    |
| demo-choi   | same number on another PBX (`amiServerId: 2`)   | no    |
| demo-jung   | `pushEnabled: false`                            | no    |
"""

from __future__ import annotations

from typing import Any

from google.cloud import firestore

DEMO_NUMBER = "07045144801"  # the seed's Exten


def demo_documents(relay_host: str, relay_port: int) -> dict[str, dict[str, dict[str, Any]]]:
    relay = {"websocketServerUrl": relay_host, "websocketServerPort": relay_port}

    def user(name: str, **extra: Any) -> dict[str, Any]:
        return {
            "email": f"{name}@demo.example",
            "companyId": "demo-company",
            "companyName": "데모상사",
            "amiServerId": 1,
            "isActive": True,
            **relay,
            **extra,
        }

    def ext(uid: str, extension: str, code: str) -> dict[str, Any]:
        return {
            "userId": uid,
            "extension": extension,
            "accountCode": code,
            "externalCidName": "데모상사 대표",
            "externalCidNumber": "070-4514-4801",
        }

    def token(uid: str, device: str, platform: str, value: str, **extra: Any) -> dict[str, Any]:
        return {
            "userId": uid,
            "fcmToken": value,
            "deviceId": device,
            "deviceName": f"{uid} {platform}",
            "platform": platform.lower(),
            "isActive": True,
            "isApproved": True,
            **extra,
        }

    return {
        "users": {
            "demo-kim": user("kim", serverAddress="legacy.example"),
            "demo-lee": user("lee"),
            "demo-park": user("park", isActive=False),
            "demo-choi": user("choi", amiServerId=2),
            "demo-jung": user("jung"),
        },
        "my_extensions": {
            "ext-kim": ext("demo-kim", "1010", "070-4514-4801"),
            "ext-lee": ext("demo-lee", "1011", "+82-70-4514-4801"),
            "ext-park": ext("demo-park", "1012", "07045144801"),
            "ext-choi": ext("demo-choi", "2010", "07045144801"),
            "ext-jung": ext("demo-jung", "1013", "07045144801"),
        },
        "fcm_tokens": {
            "demo-kim_pixel_Android": token(
                "demo-kim", "pixel", "Android", "demo-token-kim-android"
            ),
            "demo-kim_iphone_iOS": token("demo-kim", "iphone", "iOS", "demo-token-kim-ios"),
            "demo-kim_web_Web": token("demo-kim", "web", "Web", "web_dummy_token_1762257300000"),
            "demo-lee_galaxy_Android": token("demo-lee", "galaxy", "Android", "demo-token-lee"),
            "demo-park_phone_Android": token("demo-park", "phone", "Android", "demo-token-park"),
            "demo-choi_phone_Android": token("demo-choi", "phone", "Android", "demo-token-choi"),
            "demo-jung_phone_Android": token("demo-jung", "phone", "Android", "demo-token-jung"),
        },
        "user_notification_settings": {
            "demo-kim": {"pushEnabled": True, "soundEnabled": True, "vibrationEnabled": True},
            "demo-jung": {"pushEnabled": False, "soundEnabled": True, "vibrationEnabled": True},
        },
        "call_forward_info": {
            "demo-kim_1010": {"isEnabled": True, "destinationNumber": "010-9876-5432"},
        },
    }


def seed(client: firestore.Client, relay_host: str, relay_port: int) -> int:
    batch = client.batch()
    count = 0
    for collection, docs in demo_documents(relay_host, relay_port).items():
        for doc_id, doc in docs.items():
            batch.set(client.collection(collection).document(doc_id), doc)
            count += 1
    batch.commit()
    return count


def seed_frame(linkedid: str, timestamp: str) -> dict[str, Any]:
    """The seed's sample Newchannel frame, with a fresh call id."""
    return {
        "type": 3,
        "server_id": 1,
        "server_name": "dcrm.makecall.io",
        "ssl": False,
        "data": {
            "Event": "Newchannel",
            "Privilege": "call,all",
            "Timestamp": timestamp,
            "Channel": "PJSIP/DKCT-000001b1",
            "ChannelState": "4",
            "ChannelStateDesc": "Ring",
            "CallerIDNum": "01026132471",
            "CallerIDName": "김철수",
            "ConnectedLineNum": "",
            "ConnectedLineName": "",
            "Language": "en",
            "AccountCode": "",
            "Context": "trk-11-in",
            "Exten": DEMO_NUMBER,
            "Priority": "1",
            "Uniqueid": linkedid,
            "Linkedid": linkedid,
        },
    }
