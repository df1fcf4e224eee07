"""How often a client that follows a run (``--wait``, ``status --watch``, ``logs --follow``) asks the scheduler.

The first answers come quickly (a short job ends in seconds), then the interval grows while nothing changes, up to
a ceiling; any change resets it. At most ``60 / first_s`` queries a minute, and ``60 / max_s`` once a run sits in
the queue: following a run costs the controller a few calls a minute, however many tasks it has.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

__all__ = ["PollLimiter", "FIRST_S", "MAX_S", "GROWTH"]

FIRST_S, MAX_S, GROWTH = 5.0, 20.0, 1.5


class PollLimiter:
    """Back-off between scheduler queries: ``FIRST_S``, growing by ``GROWTH`` to ``MAX_S``; ``reset`` on change."""

    def __init__(self, first_s: float = FIRST_S, max_s: float = MAX_S, growth: float = GROWTH,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.first_s, self.max_s, self.growth = first_s, max_s, growth
        self.interval = first_s
        self.clock, self.sleep = clock, sleep
        self.last: Optional[float] = None

    def reset(self) -> None:
        self.interval = self.first_s

    def _take(self) -> None:
        if self.last is not None:
            self.interval = min(self.max_s, self.interval * self.growth)
        self.last = self.clock()

    def due(self) -> bool:
        """True (and the query counts as taken) when the next query may run; the interval then grows."""
        if self.last is not None and self.clock() - self.last < self.interval:
            return False
        self._take()
        return True

    def wait(self) -> None:
        """Sleep until the next query is due, then count it as taken."""
        if self.last is not None:
            self.sleep(max(0.0, self.last + self.interval - self.clock()))
        self._take()
