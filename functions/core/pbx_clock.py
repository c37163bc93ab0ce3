"""How old a PBX's frame really is, when the PBX's clock cannot be trusted.

AMI `Timestamp`s are the PBX's clock, which may be hours off; the connector's clock is synced.
Their difference for one frame is the clock offset plus how long the frame took to reach us.
The smallest difference seen recently is the offset plus the quickest delivery, so a frame's
difference beyond that minimum is how late it is: a backlog that a stalled relay or PBX link
delivers minutes late shows up as old, while a PBX whose clock is simply off by hours does not.

Limit: when the PBX's clock steps back by more than the ring window, its frames look late until
the step leaves the window (`WINDOW_SECONDS`); see docs/reliability.md.
"""

from __future__ import annotations

from collections import deque
from typing import Final

WINDOW_SECONDS: Final = 120.0  # how long an observed delay counts towards the minimum
_BUCKETS: Final = 4  # the window kept as this many minimums (bounded memory, O(1) updates)


class PbxClock:
    def __init__(self, window: float = WINDOW_SECONDS) -> None:
        self.window = window
        self._span = window / _BUCKETS
        self._buckets: deque[list[float]] = deque()  # [bucket start (connector time), min delay]

    def observe(self, pbx_time: float, now: float) -> None:
        delay = now - pbx_time
        buckets = self._buckets
        while buckets and buckets[0][0] <= now - self.window:
            buckets.popleft()
        if buckets and now < buckets[-1][0] + self._span:
            if delay < buckets[-1][1]:
                buckets[-1][1] = delay
        else:
            buckets.append([now, delay])

    @property
    def offset(self) -> float | None:
        """Connector time minus PBX time, as the smallest recent difference; None before any."""
        return min(bucket[1] for bucket in self._buckets) if self._buckets else None

    def lateness(self, pbx_time: float, now: float) -> float:
        """How much later than the quickest recent frame this one arrived (0: as quick)."""
        offset = self.offset
        if offset is None:
            return 0.0
        return max(0.0, (now - pbx_time) - offset)
