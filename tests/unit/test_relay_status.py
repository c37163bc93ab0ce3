"""When the connector rewrites a relay's relay_status document (functions.adapters.relay_status)."""

from functions.adapters.relay_status import status_due

REFRESH = 30.0


def report(state: str = "connected", frames: int = 10) -> dict:
    return {"relay": "ws://pbx:7099", "state": state, "frames": frames, "last_frame_at": 5.0}


def test_a_relay_never_written_is_written():
    assert status_due(report(), None, 100.0, REFRESH)


def test_a_state_change_is_written_at_once():
    assert status_due(report("backoff"), (99.0, report()), 100.0, REFRESH)


def test_changed_counters_wait_for_the_refresh_period():
    busier = report(frames=11)
    assert not status_due(busier, (80.0, report()), 100.0, REFRESH)
    assert status_due(busier, (70.0, report()), 100.0, REFRESH)


def test_an_idle_relay_is_not_rewritten_however_long_ago():
    assert not status_due(report(), (0.0, report()), 100_000.0, REFRESH)
