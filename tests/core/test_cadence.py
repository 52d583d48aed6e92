"""The pace of the scheduler loop (executorlib.cadence): the gap between status queries of a shared
job-scheduler daemon, and the floor and ceiling that the site (a config file) and the user (the
environment) may set. The rule is driven with explicit clock values; no cluster, no threads."""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import Future
from typing import Optional

import pytest

from executorlib import cadence
from executorlib.cadence import PASS_CEILING, QUICK_GAP, Cadence, poll_limits, read_config
from executorlib.errors import JobFailedError
from executorlib.resources import merge_resources
from executorlib.scheduler import Scheduler
from executorlib.spawners.base import JobSpec, JobStatus, Spawner
from executorlib.store import TaskStore
from executorlib.task import Task
from tests.core.spawner_double import ThreadSpawner

FLOOR, CEILING = 0.5, 30.0  # the batch spawners' defaults


def quiet_run(c: Cadence, start: float, duration: float) -> list[tuple[float, float]]:
    """Status queries while nothing changes for ``duration`` seconds after a change at ``start``:
    (time, gap to the next query) per query."""
    c.after_pass(start, changed=True, polled=True)
    now, queries = start, []
    while True:
        now = c._next_poll
        if now > start + duration:
            return queries
        assert c.poll_due(now)
        c.after_pass(now, changed=False, polled=True)
        queries.append((now, c.poll_gap))


# -- the rule ------------------------------------------------------------------------------------------
def test_the_gap_backs_off_quickly_to_two_seconds_then_with_the_quiet_time_up_to_the_ceiling():
    c = Cadence(0.01, FLOOR, CEILING, now=0.0)
    queries = quiet_run(c, 0.0, 3600.0)
    gaps = [gap for _, gap in queries]
    assert gaps[0] == pytest.approx(FLOOR * 1.5)
    assert max(gaps) == CEILING  # reached, never passed
    for at, gap in queries:
        assert gap <= max(QUICK_GAP, at / 10) + 1e-9, (at, gap)  # a tenth of the quiet time
    assert all(gap <= QUICK_GAP for at, gap in queries if at < 20)
    first_at_ceiling = next(at for at, gap in queries if gap == CEILING)
    assert 290 <= first_at_ceiling <= 320
    # an hour of nothing: about 3600 / 30 queries, not 3600 / 2 as with the former 2 s ceiling
    assert 120 <= len(queries) <= 200


def test_a_change_resets_the_gap_to_the_floor():
    c = Cadence(0.01, FLOOR, CEILING, now=0.0)
    quiet_run(c, 0.0, 1000.0)
    assert c.poll_gap == CEILING
    now = c._next_poll - 20.0  # e.g. a result found on disk, a new call, a cancellation
    c.after_pass(now, changed=True, polled=False)
    assert c.poll_gap == FLOOR
    assert c._next_poll == pytest.approx(now + FLOOR)  # the next query comes within the floor
    # and the back-off starts again from the floor, not where it was
    c.after_pass(c._next_poll, changed=False, polled=True)
    assert c.poll_gap == pytest.approx(FLOOR * 1.5)


def test_a_change_seen_by_a_query_resets_the_gap_and_the_quiet_time():
    c = Cadence(0.01, FLOOR, CEILING, now=0.0)
    quiet_run(c, 0.0, 1000.0)
    now = c._next_poll
    c.after_pass(now, changed=True, polled=True)  # a job started or left the queue
    assert c.poll_gap == FLOOR and c._next_poll == pytest.approx(now + FLOOR)
    later = quiet_run(c, now, 60.0)
    assert max(gap for _, gap in later) <= max(QUICK_GAP, 60.0 / 10) + 1e-9


def test_new_work_does_not_bring_the_next_query_forward_past_the_floor():
    c = Cadence(0.01, FLOOR, CEILING, now=0.0)
    c.after_pass(0.0, changed=True, polled=True)
    c.after_pass(0.1, changed=True, polled=False)  # more submissions right after a query
    assert c._next_poll == pytest.approx(0.5)  # still the floor after the query, not sooner


def test_a_job_that_ends_is_noticed_within_a_tenth_of_the_quiet_time():
    # a job failing (seen only by the query) after it ran quietly for t seconds waits at most
    # max(QUICK_GAP, t / 10) for the next query
    for quiet in (5.0, 60.0, 300.0, 7200.0):
        c = Cadence(0.01, FLOOR, CEILING, now=0.0)
        queries = quiet_run(c, 0.0, quiet + 100.0)
        next_query = next(at for at, _ in queries if at >= quiet)
        assert next_query - quiet <= min(CEILING, max(QUICK_GAP, quiet / 10) * 1.1) + 1e-9, quiet


def test_passes_stay_frequent_so_that_results_on_disk_are_seen_between_queries():
    c = Cadence(0.01, FLOOR, CEILING, now=time.monotonic())
    now = time.monotonic()
    c.after_pass(now, changed=True, polled=True)
    for _ in range(200):
        c.after_pass(now, changed=False, polled=False)
    assert c.pass_ceiling == PASS_CEILING
    assert c.wait(has_jobs=True, has_running=True) <= PASS_CEILING
    assert c.look_due(now + 10, running=3)  # a look is due at every pass after refresh_rate
    assert not c.look_due(now + 10, running=3)


def test_a_spawner_without_a_floor_keeps_its_own_pace():
    c = Cadence(0.001, 0.0, 0.05, now=0.0)
    for _ in range(100):
        c.after_pass(0.0, changed=False, polled=True)
    assert c.pass_ceiling == 0.05
    assert c.wait(has_jobs=True, has_running=True) == pytest.approx(0.05)
    assert c.poll_due(0.0)


def test_a_floor_equal_to_the_ceiling_is_kept():
    c = Cadence(0.001, 30.0, 30.0, now=0.0)
    assert {gap for _, gap in quiet_run(c, 0.0, 600.0)} == {30.0}


# -- the settings --------------------------------------------------------------------------------------
@pytest.fixture
def no_site(tmp_path, monkeypatch):
    """No site config at the default place (the machine's /etc stays out of the tests)."""
    monkeypatch.setattr(cadence, "SITE_CONFIG", str(tmp_path / "absent" / "config.toml"))
    for name in ("EXECUTORLIB_CONFIG", "EXECUTORLIB_POLL_FLOOR", "EXECUTORLIB_POLL_CEILING"):
        monkeypatch.delenv(name, raising=False)


def write(tmp_path, text: str, name: str = "config.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_without_settings(no_site):
    assert poll_limits(FLOOR, CEILING, {}) == (FLOOR, CEILING)
    assert read_config({}) == ({}, "")


def test_the_users_environment_sets_floor_and_ceiling(no_site):
    env = {"EXECUTORLIB_POLL_FLOOR": "2", "EXECUTORLIB_POLL_CEILING": " 120.5 "}
    assert poll_limits(FLOOR, CEILING, env) == (2.0, 120.5)
    assert poll_limits(FLOOR, CEILING, {"EXECUTORLIB_POLL_CEILING": "10"}) == (FLOOR, 10.0)
    assert poll_limits(FLOOR, CEILING, {"EXECUTORLIB_POLL_FLOOR": ""}) == (FLOOR, CEILING)  # empty: unset


def test_the_sites_config_file_sets_them_for_everyone(no_site, tmp_path, monkeypatch):
    site = write(tmp_path, "# the site's pace\npoll_floor = 5\npoll_ceiling = 60.0  # one a minute\n")
    monkeypatch.setattr(cadence, "SITE_CONFIG", site)
    assert poll_limits(FLOOR, CEILING, {}) == (5.0, 60.0)
    other = write(tmp_path, "poll_ceiling = 90\n", "other.toml")
    assert poll_limits(FLOOR, CEILING, {"EXECUTORLIB_CONFIG": other}) == (FLOOR, 90.0)  # instead of the site's


def test_the_users_setting_wins_over_the_sites(no_site, tmp_path):
    site = write(tmp_path, "poll_floor = 5\npoll_ceiling = 60\n")
    env = {"EXECUTORLIB_CONFIG": site, "EXECUTORLIB_POLL_CEILING": "45"}
    assert poll_limits(FLOOR, CEILING, env) == (5.0, 45.0)
    env["EXECUTORLIB_POLL_FLOOR"] = "1"
    assert poll_limits(FLOOR, CEILING, env) == (1.0, 45.0)


def test_a_setting_of_higher_precedence_moves_the_other_bound_along(no_site, tmp_path):
    assert poll_limits(FLOOR, CEILING, {"EXECUTORLIB_POLL_FLOOR": "60"}) == (60.0, 60.0)
    assert poll_limits(FLOOR, CEILING, {"EXECUTORLIB_POLL_CEILING": "0.2"}) == (0.2, 0.2)
    site = write(tmp_path, "poll_ceiling = 30\n")
    env = {"EXECUTORLIB_CONFIG": site, "EXECUTORLIB_POLL_FLOOR": "90"}
    assert poll_limits(FLOOR, CEILING, env) == (90.0, 90.0)  # the user's floor, over the site's ceiling


@pytest.mark.parametrize("value", ["fast", "0", "-1", "inf", "nan", "7200", "1e9", "0x10"])
def test_bad_environment_values_name_the_variable_and_what_is_allowed(no_site, value):
    for name in ("EXECUTORLIB_POLL_FLOOR", "EXECUTORLIB_POLL_CEILING"):
        with pytest.raises(ValueError) as info:
            poll_limits(FLOOR, CEILING, {name: value})
        message = str(info.value)
        assert name in message and "greater than 0 and at most 3600" in message and repr(value) in message


def test_a_ceiling_below_the_floor_from_one_place_is_an_error(no_site, tmp_path):
    env = {"EXECUTORLIB_POLL_FLOOR": "10", "EXECUTORLIB_POLL_CEILING": "5"}
    with pytest.raises(ValueError, match="EXECUTORLIB_POLL_CEILING .* is below .*EXECUTORLIB_POLL_FLOOR"):
        poll_limits(FLOOR, CEILING, env)
    site = write(tmp_path, "poll_floor = 10\npoll_ceiling = 5\n")
    with pytest.raises(ValueError, match="poll_ceiling in .*config.toml .* is below poll_floor"):
        poll_limits(FLOOR, CEILING, {"EXECUTORLIB_CONFIG": site})


@pytest.mark.parametrize("line", ['poll_floor = "fast"', "poll_floor = true", "poll_floor = 0",
                                  "poll_floor = -3", "poll_floor = 4000", "poll_floor = [1, 2]"])
def test_bad_config_values_name_the_file_and_the_key(no_site, tmp_path, line):
    site = write(tmp_path, line + "\n")
    with pytest.raises(ValueError) as info:
        poll_limits(FLOOR, CEILING, {"EXECUTORLIB_CONFIG": site})
    assert f"poll_floor in {site}" in str(info.value)
    assert "greater than 0 and at most 3600" in str(info.value)


def test_a_config_file_that_is_not_toml_is_an_error_naming_it(no_site, tmp_path, monkeypatch):
    site = write(tmp_path, "poll_floor = = 3\n")
    monkeypatch.setattr(cadence, "SITE_CONFIG", site)
    with pytest.raises(ValueError, match=f"{site} is not valid TOML"):
        poll_limits(FLOOR, CEILING, {})


def test_a_named_config_file_must_exist(no_site, tmp_path):
    missing = str(tmp_path / "nope.toml")
    with pytest.raises(ValueError, match=f"EXECUTORLIB_CONFIG names the config file '{missing}', which does not exist"):
        poll_limits(FLOOR, CEILING, {"EXECUTORLIB_CONFIG": missing})


def test_unknown_keys_are_warned_about_and_ignored(no_site, tmp_path, caplog):
    site = write(tmp_path, "poll_celing = 60\npoll_floor = 2\n")
    with caplog.at_level("WARNING", logger="executorlib"):
        assert poll_limits(FLOOR, CEILING, {"EXECUTORLIB_CONFIG": site}) == (2.0, CEILING)
    assert "poll_celing" in caplog.text and "poll_ceiling" in caplog.text


def test_without_tomllib_a_simple_parser_reads_the_same_file(no_site, tmp_path, monkeypatch):
    text = ("# site settings\n\npoll_floor = 2   # seconds\npoll_ceiling = \"90\"\n"
            "[other.table]\npoll_floor = 99\n")
    site = write(tmp_path, text)
    assert cadence._parse_simple(text, site) == {"poll_floor": 2, "poll_ceiling": "90"}
    monkeypatch.setitem(sys.modules, "tomllib", None)  # as on Python < 3.11
    assert poll_limits(FLOOR, CEILING, {"EXECUTORLIB_CONFIG": site}) == (2.0, 90.0)
    bad = write(tmp_path, "poll_floor 3\n", "bad.toml")
    with pytest.raises(ValueError, match=f"{bad}, line 1: expected 'key = value'"):
        poll_limits(FLOOR, CEILING, {"EXECUTORLIB_CONFIG": bad})


# -- the loop uses them ------------------------------------------------------------------------------
class FloorSpawner(ThreadSpawner):
    """A spawner for a shared daemon: a floor, so the settings apply."""

    min_poll_interval = FLOOR
    max_poll_interval = CEILING


def test_the_scheduler_applies_the_settings_to_spawners_with_a_floor(no_site, tmp_path, monkeypatch):
    monkeypatch.setenv("EXECUTORLIB_POLL_FLOOR", "1.5")
    monkeypatch.setenv("EXECUTORLIB_POLL_CEILING", "45")
    shared = Scheduler(TaskStore(tmp_path / "a"), FloorSpawner())
    local = Scheduler(TaskStore(tmp_path / "b"), ThreadSpawner())
    try:
        assert (shared._cadence.floor, shared._cadence.ceiling) == (1.5, 45.0)
        assert (local._cadence.floor, local._cadence.ceiling) == (0.0, ThreadSpawner.max_poll_interval)
    finally:
        shared.shutdown(wait=True)
        local.shutdown(wait=True)


def test_the_executor_refuses_a_bad_setting_with_its_name(no_site, tmp_path, monkeypatch):
    pytest.importorskip("pysqa")
    pytest.importorskip("jinja2")
    from executorlib import Executor

    monkeypatch.setenv("EXECUTORLIB_POLL_CEILING", "soon")
    with pytest.raises(ValueError, match="EXECUTORLIB_POLL_CEILING must be a number of seconds"):
        Executor(backend="slurm_submission", cache_directory=str(tmp_path / "cache"))


class VanishingSpawner(Spawner):
    """One job that runs until the test lets it vanish from the queue without a result (as squeue
    forgets a job that was killed); every status query is timed."""

    name = "vanishing-test"
    submits_with_dependencies = True
    min_poll_interval = 0.05
    max_poll_interval = 1.0
    result_grace_period = 0.3

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.gone_at: Optional[float] = None
        self.queries: list[tuple[float, bool]] = []  # (time, the job was listed)

    def submit(self, job: JobSpec, dependencies: list[str]) -> str:
        return "1"

    def states(self, job_ids: list[str]) -> dict[str, JobStatus]:
        with self.lock:
            listed = self.gone_at is None
            self.queries.append((time.monotonic(), listed))
        return {j: JobStatus("RUNNING", active=True, running=True) for j in job_ids if listed}

    def final_state(self, job_id: str) -> Optional[str]:
        return "FAILED"

    def cancel(self, job_ids: list[str]) -> None:
        pass


def test_a_job_that_left_the_queue_is_asked_about_again_at_the_floor(no_site, tmp_path, monkeypatch):
    # the quick back-off reaches the spawner's ceiling (1 s) within a second or two; a job seen gone
    # is a change: it is judged after its grace period, not a ceiling later
    monkeypatch.setattr(cadence, "QUICK_GAP", 1.0)
    store = TaskStore(tmp_path / "cache")
    spawner = VanishingSpawner()
    scheduler = Scheduler(store, spawner, refresh_rate=0.001)
    store.task_dir("task").mkdir()
    future: Future = Future()
    future._executorlib_key = "task"  # type: ignore[attr-defined]
    try:
        scheduler.add(Task("task", "task", merge_resources({}, None), future))
        deadline = time.monotonic() + 10
        while scheduler._cadence.poll_gap < 1.0:
            assert time.monotonic() < deadline, "the gap never backed off to the ceiling"
            time.sleep(0.05)
        with spawner.lock:
            spawner.gone_at = time.monotonic()
        error = future.exception(timeout=10)
        failed = time.monotonic()
        assert isinstance(error, JobFailedError) and "FAILED" in str(error)
        first_missing = next(at for at, listed in spawner.queries if not listed)
        # grace 0.3 s plus a few floor-sized gaps; a ceiling-sized gap would take over 1 s
        print(f"judged {failed - first_missing:.3f} s after the first query that missed the job")
        assert failed - first_missing < 0.9, failed - first_missing
    finally:
        scheduler.shutdown(wait=True, cancel_futures=True)


def test_a_spawner_whose_own_ceiling_is_below_its_floor_polls_at_its_floor():
    """A spawner's own pair (a test double polling fast, say) is not a user's error: the floor wins."""
    assert poll_limits(0.5, 0.05, environ={}) == (0.5, 0.5)
