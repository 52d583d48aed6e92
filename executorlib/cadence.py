"""When the scheduler loop looks next: its pause between passes and between status queries.

Passes come every ``refresh_rate`` seconds while things change and back off (x1.5) to the
spawner's ``max_poll_interval`` (at most :data:`PASS_CEILING`) while nothing does. A spawner with
a ``min_poll_interval`` (a shared job-scheduler daemon) is asked at most that often: new messages
wake the loop but do not make it query, and between two queries the loop looks on disk for the
results of the jobs last seen running (one ``stat`` each).

The gap between two status queries of such a spawner backs off from that floor (x1.5) while
nothing changes, up to :data:`QUICK_GAP` at once and beyond that only with the quiet time: at
most a tenth (:data:`QUIET_SHARE`) of the time since the last change, and never more than the
ceiling (``max_poll_interval``, 30 s for squeue and flux). Anything that changes (a job starts,
ends or leaves the queue, a result appears, a new call, a cancellation) resets it to the floor.
So a job that fails is noticed within ``max(QUICK_GAP, quiet / 10)`` (plus the spawner's grace
period), while a night of long-running jobs costs one query per 30 s.

The floor and the ceiling of the job-scheduler spawners can be set by the site for everyone (a
TOML file, :data:`SITE_CONFIG` or the file named by ``EXECUTORLIB_CONFIG``, keys ``poll_floor``
and ``poll_ceiling``) and by the user (the environment variables ``EXECUTORLIB_POLL_FLOOR`` and
``EXECUTORLIB_POLL_CEILING``, seconds); the user's setting wins (:func:`poll_limits`).
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any, Mapping, Optional

__all__ = ["Cadence", "LOOK_COST", "poll_limits", "read_config"]

log = logging.getLogger("executorlib")

#: seconds of pause per running job between two looks for their results (a stat each, ~10 us):
#: 1,000 running jobs are looked at every second, about 1 % of a core
LOOK_COST = 0.001
#: the longest pause between two passes of a loop with a query floor: results on disk, the claims
#: of other processes and held submissions are looked at this often, whatever the query ceiling
PASS_CEILING = 2.0
#: the gap between two status queries backs off freely up to this (seconds) ...
QUICK_GAP = 2.0
#: ... and beyond it to at most this share of the time since the last change
QUIET_SHARE = 0.1

#: the site's settings for everyone (TOML); EXECUTORLIB_CONFIG names another file
SITE_CONFIG = "/etc/executorlib/config.toml"
ENV_CONFIG = "EXECUTORLIB_CONFIG"
#: config-file key -> the user's environment variable of the same setting
SETTINGS = {"poll_floor": "EXECUTORLIB_POLL_FLOOR", "poll_ceiling": "EXECUTORLIB_POLL_CEILING"}
#: the largest floor or ceiling accepted (seconds)
MAX_SETTING = 3600.0


class Cadence:
    """The timing state of one loop."""

    def __init__(self, refresh_rate: float, floor: float, ceiling: float, now: Optional[float] = None):
        self.refresh_rate = refresh_rate
        self.floor = floor  # the spawner's min_poll_interval
        self.ceiling = ceiling  # the spawner's max_poll_interval
        # passes: a spawner without a floor is asked on every pass, up to its own ceiling apart
        self.pass_ceiling = min(ceiling, PASS_CEILING) if floor > 0 else ceiling
        self._interval = refresh_rate
        self._poll_gap = floor
        self._next_poll = 0.0
        self._next_look = 0.0
        self._quiet_since = time.monotonic() if now is None else now

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

    def gap_limit(self, now: float) -> float:
        """The longest gap between two status queries after nothing changed since ``_quiet_since``:
        the floor, or up to QUICK_GAP, beyond that a tenth of the quiet time, at most the ceiling."""
        quiet = max(now - self._quiet_since, 0.0)
        return max(self.floor, min(self.ceiling, max(QUICK_GAP, quiet * QUIET_SHARE)))

    @property
    def poll_gap(self) -> float:
        """The current gap between two status queries (seconds)."""
        return self._poll_gap

    def after_pass(self, now: float, changed: bool, polled: bool) -> None:
        if changed:
            self._interval = self.refresh_rate
        else:
            self._interval = min(max(self._interval * 1.5, self.refresh_rate), self.pass_ceiling)
        if self.floor > 0:  # the gap between status queries backs off from the floor
            if changed:
                self._poll_gap = self.floor
                self._quiet_since = now
            elif polled:
                self._poll_gap = min(max(self._poll_gap * 1.5, self.floor), self.gap_limit(now))
            if polled:
                self._next_poll = now + self._poll_gap
            elif changed:  # activity (e.g. new jobs): the next query comes within the floor
                self._next_poll = min(self._next_poll, now + self.floor)


# -- the settings -------------------------------------------------------------------------------------
def _seconds(value: Any, where: str) -> float:
    """``value`` as seconds, or ValueError naming ``where`` and what is allowed."""
    allowed = f"must be a number of seconds greater than 0 and at most {MAX_SETTING:.0f}"
    if isinstance(value, bool):
        raise ValueError(f"{where} {allowed}, not {value!r}")
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(f"{where} {allowed}, not {value!r}") from None
    elif isinstance(value, (int, float)):
        number = float(value)
    else:
        raise ValueError(f"{where} {allowed}, not {value!r}")
    if not math.isfinite(number) or number <= 0 or number > MAX_SETTING:
        raise ValueError(f"{where} {allowed}, not {value!r}")
    return number


def _parse_simple(text: str, path: str) -> dict:
    """The top-level ``key = value`` lines of a TOML file, for Pythons without tomllib: numbers,
    quoted strings, ``#`` comments; keys under a ``[table]`` are skipped, as tomllib nests them."""
    found: dict[str, Any] = {}
    in_table = False
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            in_table = True
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip().strip("\"'"), value.strip()
        if not sep or not key:
            raise ValueError(f"{path}, line {number}: expected 'key = value', found {line!r}")
        if in_table:
            continue
        if value[:1] in ("'", '"'):
            end = value.find(value[0], 1)
            if end < 0:
                raise ValueError(f"{path}, line {number}: unterminated string {value!r}")
            found[key] = value[1:end]
            continue
        value = value.split("#", 1)[0].strip()
        try:
            found[key] = int(value)
        except ValueError:
            try:
                found[key] = float(value)
            except ValueError:
                found[key] = value  # not a number: the check of the setting names it
    return found


def read_config(environ: Optional[Mapping[str, str]] = None) -> tuple[dict, str]:
    """The site's settings (key -> value) and the file they came from: the file named by
    ``EXECUTORLIB_CONFIG``, else :data:`SITE_CONFIG` when it exists; ({}, "") without one."""
    environ = os.environ if environ is None else environ
    named = environ.get(ENV_CONFIG, "").strip()
    path = os.path.expanduser(named) if named else SITE_CONFIG
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        if named:
            raise ValueError(f"{ENV_CONFIG} names the config file {path!r}, which does not exist") from None
        return {}, ""
    except OSError as error:
        if named:
            raise ValueError(f"{ENV_CONFIG} names the config file {path!r}, which cannot be read: {error}") from None
        log.warning("the executorlib site config %s cannot be read, ignored: %s", path, error)
        return {}, ""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"the executorlib config file {path} is not UTF-8 text: {error}") from None
    try:
        import tomllib  # Python >= 3.11
    except ImportError:
        found = _parse_simple(text, path)
    else:
        try:
            found = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"the executorlib config file {path} is not valid TOML: {error}") from None
    unknown = sorted(set(found) - set(SETTINGS))
    if unknown:
        log.warning("the executorlib config file %s has unknown keys %s (known: %s); they are ignored",
                    path, ", ".join(unknown), ", ".join(SETTINGS))
    return {key: found[key] for key in SETTINGS if key in found}, path


def poll_limits(floor: float, ceiling: float,
                environ: Optional[Mapping[str, str]] = None) -> tuple[float, float]:
    """The floor and ceiling of the gap between status queries: the spawner's defaults (``floor``,
    ``ceiling``), overridden by the site's config file, overridden by the user's environment
    variables. A setting that leaves the ceiling below the floor moves the other one of lower
    precedence along (a user's floor of 60 s raises the default ceiling of 30 s); when both come
    from one place, that is an error."""
    environ = os.environ if environ is None else environ
    site, path = read_config(environ)
    chosen: dict[str, tuple[float, int, str]] = {  # key -> (seconds, rank, where)
        "poll_floor": (floor, 0, "the default floor"), "poll_ceiling": (ceiling, 0, "the default ceiling")}
    for key, value in site.items():
        where = f"{key} in {path}"
        chosen[key] = (_seconds(value, where), 1, where)
    for key, variable in SETTINGS.items():
        value = environ.get(variable, "")
        if value.strip():
            where = f"the environment variable {variable}"
            chosen[key] = (_seconds(value, where), 2, where)
    (low, low_rank, low_where), (high, high_rank, high_where) = chosen["poll_floor"], chosen["poll_ceiling"]
    if high < low:
        if low_rank == high_rank == 0:  # a spawner's own pair: its floor wins, as it always did
            high = low
        elif low_rank == high_rank:
            raise ValueError(f"{high_where} ({high:g} s) is below {low_where} ({low:g} s): "
                             "the ceiling of the gap between status queries must be at least its floor")
        if high_rank < low_rank:
            high = low
        else:
            low = high
    return float(low), float(high)
