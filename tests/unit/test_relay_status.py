"""When the connector rewrites a relay's relay_status document
(functions.connector.adapters.relay_status)."""

from functions.connector.adapters.relay_status import plan_status_writes, status_due, write_budget

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


def test_the_budget_spreads_a_full_refresh_over_the_refresh_period():
    # 1,000 relays, a check every 2 s, a 30 s refresh: 67 writes per check is the even share
    assert write_budget(1000, 2.0, REFRESH) == 134
    assert write_budget(3, 2.0, REFRESH) == 50  # a small connector is never held back


def test_the_most_overdue_come_first_a_state_change_counting_a_refresh_period_more():
    written = {
        "a": (10.0, report(frames=1)),
        "b": (0.0, report(frames=1)),
        "c": (80.0, report()),
        "d": (60.0, report(frames=1)),
    }
    reports = {
        "a": report(frames=2),  # counters changed, written at 10
        "b": report(frames=2),  # counters changed, written at 0: older than a
        "c": report("backoff"),  # state changed, written 20 s ago: counts as written at 50
        "d": report(frames=2),  # counters changed, written 40 s ago: due, newest of the due
        "e": report(),  # never written
    }
    plan = plan_status_writes(reports, written, 100.0, REFRESH, budget=3)
    assert list(plan) == ["e", "b", "a"]
    full = plan_status_writes(reports, written, 100.0, REFRESH, budget=10)
    assert list(full) == ["e", "b", "a", "c", "d"] and full["c"]["state"] == "backoff"


def test_without_pressure_a_state_change_is_written_at_the_next_check():
    written = {f"r{i}": (99.0, report()) for i in range(100)}
    reports = {f"r{i}": report() for i in range(100)} | {"r7": report("backoff")}
    assert list(plan_status_writes(reports, written, 100.0, REFRESH, budget=50)) == ["r7"]


def test_relays_that_keep_flapping_cannot_starve_the_others():
    flappers = [f"f{i}" for i in range(150)]
    steady = [f"s{i}" for i in range(850)]
    budget = write_budget(1000, 2.0, REFRESH)  # 134: fewer than the flappers
    written: dict = {}
    last_write: dict = {}
    for tick in range(60):
        now = tick * 2.0
        reports = {ep: report("connected" if tick % 2 else "backoff") for ep in flappers}
        reports |= {ep: report(frames=tick) for ep in steady}
        plan = plan_status_writes(reports, written, now, REFRESH, budget)
        written.update({ep: (now, r) for ep, r in plan.items()})
        last_write.update({ep: now for ep in plan})
    assert all(ep in last_write for ep in steady)
    # every steady relay still refreshed about once per refresh period (plus queueing)
    assert min(last_write[ep] for ep in steady) >= now - 3 * REFRESH
    # and the flappers' state changes still go out, most within a few checks
    assert min(last_write[ep] for ep in flappers) >= now - REFRESH


def test_a_thousand_busy_relays_are_refreshed_in_even_slices_none_starved():
    relays = [f"10.0.0.{i}:7099" for i in range(1000)]
    written: dict = {}
    budget = write_budget(len(relays), 2.0, REFRESH)
    sizes, last_write = [], {}
    now = 0.0
    for tick in range(60):  # two minutes of checks every 2 s, counters changing all along
        now = tick * 2.0
        reports = {ep: report(frames=tick) for ep in relays}
        plan = plan_status_writes(reports, written, now, REFRESH, budget)
        sizes.append(len(plan))
        written.update({ep: (now, r) for ep, r in plan.items()})
        last_write.update({ep: now for ep in plan})
    assert max(sizes) == budget  # never the whole thousand at once
    assert len(last_write) == 1000
    # steady state: every relay is rewritten within a check or two of falling due
    assert min(last_write.values()) >= now - REFRESH - 2 * 2.0
