import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from functions.core.frames import Frame, Rejected, decode_frame, search_event_name

SEED = {
    "type": 3,
    "server_id": 1,
    "server_name": "dcrm.makecall.io",
    "ssl": False,
    "data": {"Event": "Newchannel", "CallerIDName": "김철수", "Exten": "07045144801"},
}


def test_valid_frame_is_decoded_with_string_fields():
    frame = decode_frame(orjson.dumps(SEED))
    assert isinstance(frame, Frame)
    assert (frame.type, frame.server_id, frame.server_name) == (3, 1, "dcrm.makecall.io")
    assert frame.data["CallerIDName"] == "김철수"
    assert not frame.repaired


def test_cp949_caller_name_inside_a_text_frame_stays_readable():
    raw = orjson.dumps(SEED).replace("김철수".encode(), "김철수".encode("cp949"))
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    frame = decode_frame(raw)
    assert isinstance(frame, Frame)
    assert frame.data["CallerIDName"] == "김철수"
    assert frame.repaired


def test_mixed_utf8_and_stray_bytes_keep_the_valid_utf8():
    raw = b'{"type":3,"data":{"A":"\xea\xb9\x80","B":"x\xffy"}}'
    frame = decode_frame(raw)
    assert isinstance(frame, Frame)
    assert frame.data["A"] == "김"
    assert frame.data["B"].startswith("x") and frame.data["B"].endswith("y")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"type":3,"data":{"CallerIDName":"a\\vb"}}', "a\x0bb"),
        (b'{"type":3,"data":{"CallerIDName":"tab\there"}}', "tab\there"),
        (b'{"type":3,"data":{"CallerIDName":"odd \\q escape"}}', "odd \\q escape"),
        (b'{"type":3,"data":{"CallerIDName":"kept \\\\q"}}', "kept \\q"),
    ],
)
def test_amiws_escaping_mistakes_are_repaired(raw, expected):
    frame = decode_frame(raw)
    assert isinstance(frame, Frame), frame
    assert frame.data["CallerIDName"] == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json at all", "invalid_json"),
        (b"", "invalid_json"),
        (b"[1,2,3]", "not_an_object"),
        (b"null", "not_an_object"),
        (b'"text"', "not_an_object"),
        (b'{"type":"3","data":{}}', "bad_type_field"),
        (b'{"type":true,"data":{}}', "bad_type_field"),
        (b'{"data":{}}', "bad_type_field"),
        (b'{"type":3,"server_id":"1","data":{}}', "bad_server_id"),
        (b'{"type":3,"data":null}', "bad_data_field"),
        (b'{"type":3,"data":[1]}', "bad_data_field"),
        (b'{"type":3,"data":{"Event":"Newch', "truncated"),
    ],
)
def test_bad_frames_are_rejected_with_a_reason(raw, reason):
    result = decode_frame(raw)
    assert isinstance(result, Rejected)
    assert result.reason == reason


def test_oversize_frame_is_rejected_before_parsing():
    raw = orjson.dumps({**SEED, "data": {**SEED["data"], "Pad": "x" * 2000}})
    result = decode_frame(raw, max_bytes=1000)
    assert isinstance(result, Rejected) and result.reason == "oversize"
    assert isinstance(decode_frame(raw, max_bytes=len(raw)), Frame)


def test_null_and_non_string_values_are_dropped_and_named():
    frame = decode_frame(b'{"type":3,"data":{"Event":"Newchannel","Exten":null,"X":5}}')
    assert isinstance(frame, Frame)
    assert frame.data == {"Event": "Newchannel"}
    assert set(frame.dropped_fields) == {"Exten", "X"}


def test_other_frame_types_without_data_are_valid():
    frame = decode_frame(b'{"type":4,"server_id":2,"server_name":"p"}')
    assert isinstance(frame, Frame) and frame.type == 4 and frame.data == {}


def test_duplicate_keys_keep_the_last_value_like_amiws_readers():
    frame = decode_frame(b'{"type":3,"data":{"ChanVariable":"a=1","ChanVariable":"b=2"}}')
    assert isinstance(frame, Frame) and frame.data["ChanVariable"] == "b=2"


@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_raise(raw):
    assert isinstance(decode_frame(raw), Frame | Rejected)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=12,
)


@given(json_values)
def test_arbitrary_json_never_raises_and_valid_frames_hold_only_strings(value):
    result = decode_frame(orjson.dumps(value))
    if isinstance(result, Frame):
        assert all(isinstance(v, str) for v in result.data.values())


def peek_event(raw: bytes) -> bytes | None:
    match = search_event_name(raw)
    return match[1] if match is not None else None


HANGUP = {"Event": "Hangup", "Channel": "SIP/a-1", "Uniqueid": "1.5", "Linkedid": "1.4"}


@pytest.mark.parametrize(
    "data",
    [HANGUP, dict(sorted(HANGUP.items())), {"Channel": "x", **HANGUP}],
    ids=["amiws order", "sorted keys", "event later"],
)
def test_the_event_name_is_read_unparsed_wherever_the_key_sits(data):
    assert peek_event(orjson.dumps({"type": 3, "server_id": 1, "data": data})) == b"Hangup"


def test_a_truncated_frame_has_no_event_name_so_it_is_parsed_and_reported():
    raw = orjson.dumps({"type": 3, "data": HANGUP})
    assert peek_event(raw[: raw.index(b"Hangup") + 3]) is None


def test_spaced_json_still_gives_the_event_name():
    assert peek_event(b'{"type": 3, "data": {"Event" : "Hangup", "Uniqueid": "1.5"}}') == b"Hangup"


def test_an_event_key_quoted_inside_a_value_is_not_mistaken_for_the_real_one():
    data = {"Value": '{"Event":"Hangup"}', "Event": "VarSet"}
    assert peek_event(orjson.dumps({"type": 3, "data": data})) == b"VarSet"
