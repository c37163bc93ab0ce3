from functions.core.recipients import (
    Selection,
    matching_extensions,
    select_recipients,
    usable_devices,
    user_skip_reason,
)

RELAY = "pbx.example.com:7099"
USER = {
    "websocketServerUrl": "pbx.example.com",
    "websocketServerPort": 7099,
    "amiServerId": 1,
    "companyName": "ACME",
}


def ext(uid, code, extension="1010"):
    return {
        "userId": uid,
        "accountCode": code,
        "extension": extension,
        "externalCidName": "ACME 대표",
        "externalCidNumber": "070-4514-4801",
    }


def token(uid, value, **extra):
    return {"userId": uid, "fcmToken": value, "isActive": True, "isApproved": True, **extra}


def test_number_matches_in_any_format_and_every_owner_is_found():
    selection = Selection()
    matched = matching_extensions(
        [
            ("e1", ext("u1", "070-4514-4801")),
            ("e2", ext("u2", "+82-70-4514-4801")),
            ("e3", ext("u3", "07045144802")),
            ("e4", {"userId": 5, "accountCode": "x"}),
        ],
        "07045144801",
        "KR",
        selection,
    )
    assert sorted(matched) == ["u1", "u2"]
    assert [(s.subject, s.reason) for s in selection.skipped] == [("e4", "bad_extension_document")]


def test_first_extension_document_wins_for_a_user_with_two_matches():
    matched = matching_extensions(
        [("b", ext("u1", "07045144801", "2000")), ("a", ext("u1", "070-4514-4801", "1000"))],
        "07045144801",
        "KR",
        Selection(),
    )
    assert matched["u1"]["extension"] == "1000"


def test_user_gating_reasons():
    assert user_skip_reason(USER, None, RELAY, 1) == ""
    assert user_skip_reason(None, None, RELAY, 1) == "no_user_document"
    assert user_skip_reason({**USER, "amiServerId": 2}, None, RELAY, 1) == "other_pbx"
    assert user_skip_reason({**USER, "websocketServerUrl": "other.example"}, None, RELAY, 1) == (
        "other_pbx"
    )
    assert user_skip_reason({**USER, "isActive": False}, None, RELAY, 1) == "suspended"
    assert user_skip_reason({**USER, "dcmiwsEnabled": True}, None, RELAY, 1) == "dcmiws_enabled"
    assert user_skip_reason(USER, {"pushEnabled": False}, RELAY, 1) == "push_disabled"
    assert user_skip_reason({"companyName": "x"}, None, RELAY, 1) == "no_relay_configured"
    assert user_skip_reason({**USER, "websocketServerPort": "abc"}, None, RELAY, 1) == (
        "bad_relay_fields"
    )
    assert user_skip_reason({**USER, "amiServerId": [1]}, None, RELAY, 1) == "bad_relay_fields"


def test_seed_field_names_and_string_typed_values_still_scope_the_user():
    legacy = {"serverAddress": "PBX.example.com", "serverPort": "7099", "amiServerId": "1"}
    assert user_skip_reason(legacy, None, RELAY, 1) == ""
    assert user_skip_reason({**legacy, "isActive": "false"}, None, RELAY, 1) == "suspended"


def test_default_port_and_server_id():
    assert user_skip_reason({"websocketServerUrl": "pbx.example.com"}, None, RELAY, 1) == ""
    assert user_skip_reason({"websocketServerUrl": "pbx.example.com"}, None, RELAY, 2) == (
        "other_pbx"
    )


def test_devices_filter_dummy_unapproved_inactive_and_duplicates():
    selection = Selection()
    devices = usable_devices(
        [
            ("u1_a_Android", token("u1", "tok-a")),
            ("u1_b_iOS", token("u1", "tok-b", platform="ios")),
            ("u1_w_Web", token("u1", "web_dummy_token_1762257300000")),
            ("u1_c_Android", token("u1", "tok-c", isApproved=False)),
            ("u1_d_Android", token("u1", "tok-d", isActive=False)),
            ("u1_e_Android", token("u1", "tok-a")),
            ("u1_f_Android", {"userId": "u1", "fcmToken": None}),
        ],
        selection,
    )
    assert [d.token for d in devices] == ["tok-a", "tok-b"]
    assert {s.reason for s in selection.skipped} == {
        "web_dummy_token",
        "device_not_approved",
        "device_inactive",
        "bad_token_document",
    }


def test_select_recipients_end_to_end_rules():
    matched = {
        "u1": ext("u1", "07045144801"),
        "u2": ext("u2", "07045144801", "1011"),
        "u3": ext("u3", "07045144801"),
    }
    users = {"u1": USER, "u2": USER, "u3": {**USER, "isActive": False}}
    tokens = {"u1": [("t1", token("u1", "tok-1"))], "u3": [("t3", token("u3", "tok-3"))]}
    forwards = {"u1_1010": {"isEnabled": True, "destinationNumber": "010-1111-2222"}}
    selection = select_recipients(
        matched, users, {}, forwards, tokens, relay=RELAY, server_id=1, selection=Selection()
    )
    assert [r.user_id for r in selection.recipients] == ["u1"]
    recipient = selection.recipients[0]
    assert recipient.forward_enabled and recipient.forward_destination == "010-1111-2222"
    assert recipient.company_name == "ACME" and recipient.extension == "1010"
    assert {(s.subject, s.reason) for s in selection.skipped} == {
        ("u2", "no_devices"),
        ("u3", "suspended"),
    }


def test_the_app_endpoints_ring_dcmiws_users_and_keep_every_other_gate():
    listening = {**USER, "dcmiwsEnabled": True}
    for check_relay in (True, False):
        assert user_skip_reason(listening, None, RELAY, 1, check_relay=check_relay) == (
            "dcmiws_enabled"
        )
        assert (
            user_skip_reason(listening, None, RELAY, 1, check_relay=check_relay, ring_dcmiws=True)
            == ""
        )
    assert (
        user_skip_reason({**listening, "isActive": False}, None, RELAY, 1, ring_dcmiws=True)
        == "suspended"
    )
    assert (
        user_skip_reason(listening, {"pushEnabled": False}, RELAY, 1, ring_dcmiws=True)
        == "push_disabled"
    )
    assert user_skip_reason({**listening, "amiServerId": 2}, None, RELAY, 1, ring_dcmiws=True) == (
        "other_pbx"
    )
