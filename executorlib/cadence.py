"""When the scheduler loop looks next: its pause between passes and between status queries.

Passes come every ``refresh_rate`` seconds while things change and back off (x1.5) to the
spawner's ``max_poll_interval`` while nothing does. A spawner with a ``min_poll_interval`` (a
shared job-scheduler daemon) is asked at most that often: new messages wake the loop but do not
make it query, the gap between queries backs off from that floor, and between two queries the
loop looks on disk for the results of the jobs last seen running (one ``stat`` each).
"""

from __future__ import annotations

import time

__all__ = ["Cadence", "LOOK_COST"]

#: seconds of pause per running job between two looks for their results (a stat each, ~10 us):
#: 1,000 running jobs are looked at every second, about 1 % of a core
LOOK_COST = 0.001


class Cadence:
    """The timing state of one loop."""

    def __init__(self, refresh_rate: float, floor: float, ceiling: float):
        self.refresh_rate = refresh_rate
        self.floor = floor  # the spawner's min_poll_interval
        self.ceiling = ceiling  # the spawner's max_poll_interval
        self._interval = refresh_rate
        self._poll_gap = floor
        self._next_poll = 0.0
        self._next_look = 0.0

    def wait(self, has_jobs: bool, has_running: bool) -> float:
        """How long the loop may sleep on its inbox before the next pass."""
        wait = self._interval
        if self.floor > 0:
            if not has_running:
                wait = max(wait, self.floor)
            if has_jobs:
                wait = min(wait, max(self._next_poll - time.monotonic(), 0.0))
        return wait

    def poll_due(self, now: float) -> bool:
        return now >= self._next_poll

    def look_due(self, now: float, running: int) -> bool:
        """True when the results of running jobs should be looked for (then schedules the next)."""
        if now < self._next_look:
            return False
        self._next_look = now + max(self.refresh_rate, running * LOOK_COST)
        return True

    def after_pass(self, now: float, changed: bool, polled: bool) -> None:
        if changed:
            self._interval = self.refresh_rate
        else:
            self._interval = min(max(self._interval * 1.5, self.refresh_rate), self.ceiling)
        if self.floor > 0:  # the gap between status queries backs off from the floor
            if changed:
                self._poll_gap = self.floor
            elif polled:
                self._poll_gap = min(self._poll_gap * 1.5, max(self.floor, self.ceiling))
            if polled:
                self._next_poll = now + self._poll_gap
            elif changed:  # activity (e.g. new jobs): the next query comes within the floor
                self._next_poll = min(self._next_poll, now + self.floor)
