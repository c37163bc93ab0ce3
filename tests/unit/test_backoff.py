import random

from functions.connector.adapters import relay_client
from functions.connector.adapters.relay_client import BACKOFF_FIRST, BACKOFF_MAX, backoff_delay


def test_backoff_grows_exponentially_with_jitter_and_is_capped():
    rng = random.Random(7)
    for attempt in range(1, 20):
        ceiling = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (attempt - 1))
        samples = [backoff_delay(attempt, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in samples)
        assert len(set(samples)) > 100  # jittered: instances do not reconnect in lockstep
    assert backoff_delay(1, rng) <= BACKOFF_FIRST
    assert backoff_delay(50, rng) <= BACKOFF_MAX


def test_a_dead_link_is_noticed_within_30_seconds():
    worst = relay_client.PING_INTERVAL + relay_client.PING_TIMEOUT + relay_client.CLOSE_TIMEOUT
    assert worst <= 30
