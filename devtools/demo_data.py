"""The demo company for `make dev`: its PBX directory entry (`pbx_tenants/demo-company`) and its
users, extensions and devices in the app's own Firestore shapes.

Six users claim the demo company number 070-4514-4801 (written in different formats on
purpose); two of them ring on this PBX (three devices):

- demo-kim: rings; Android + iOS + a web dummy token (skipped).
- demo-lee: rings; one Android phone, stored number "+82-70-...".
- demo-park: no; suspended by the admin (`suspended`) and by their own `isActive: false`.
- demo-choi: no; same number on the other PBX behind the relay (server 2: the tenant
  `demo-branch`; in user-documents mode, `amiServerId: 2`).
- demo-jung: no; `pushEnabled: false`.
- demo-mallory: no in directory mode (the default); another company's user who names this
  relay and claims the number, not a member. In user-documents mode she would ring: that is
  the leak the directory closes.
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

    url_host = f"[{relay_host}]" if ":" in relay_host else relay_host
    return {
        "pbx_tenants": {
            "demo-company": {
                "name": "데모상사",
                "active": True,
                "pbx": [{"relay": f"ws://{url_host}:{relay_port}", "serverId": 1}],
                "numbers": ["070-4514-4801"],
                "members": ["demo-kim", "demo-lee", "demo-park", "demo-jung"],
                "suspended": ["demo-park"],
            },
            # the branch office: the same number on the second PBX behind the same relay
            "demo-branch": {
                "name": "데모상사 지점",
                "pbx": [{"relay": f"ws://{url_host}:{relay_port}", "serverId": 2}],
                "numbers": ["070-4514-4801"],
                "members": ["demo-choi"],
            },
        },
        "users": {
            "demo-kim": user("kim", serverAddress="legacy.example"),
            "demo-lee": user("lee"),
            "demo-park": user("park", isActive=False),
            "demo-choi": user("choi", amiServerId=2),
            "demo-jung": user("jung"),
            "demo-mallory": user("mallory", companyId="other-company", companyName="다른회사"),
        },
        "my_extensions": {
            "ext-kim": ext("demo-kim", "1010", "070-4514-4801"),
            "ext-lee": ext("demo-lee", "1011", "+82-70-4514-4801"),
            "ext-park": ext("demo-park", "1012", "07045144801"),
            "ext-choi": ext("demo-choi", "2010", "07045144801"),
            "ext-jung": ext("demo-jung", "1013", "07045144801"),
            "ext-mallory": ext("demo-mallory", "3010", "070 4514 4801"),
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
            "demo-mallory_phone_Android": token(
                "demo-mallory", "phone", "Android", "demo-token-mallory"
            ),
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
