"""The cache command line: list, show, cancel, clean; text for people, --json for scripts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from executorlib import Executor, get_cache_data
from executorlib.cli import main, parse_age
from executorlib.store import TaskStore
from tests.cache.conftest import REPO_ROOT, key_of, store_outcome, wait_for
from tests.cache.funcs import count_runs, double, fail, record_and_hold


@pytest.fixture
def cache(tmp_path):
    """Two done tasks and one failed one, stored as their jobs would have left them."""
    store = TaskStore(tmp_path / "cache")
    store_outcome(store, double, 1, value=2)
    store_outcome(store, double, 2, value=4)
    key = store_outcome(store, fail, "bad input", error=ValueError("bad input"))
    store.log_path(key).write_text("starting\nworking hard\nValueError: bad input\n")
    return store.directory


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_prints_a_table_and_filters_by_state(cache, capsys):
    code, out, _ = run(capsys, "list", cache)
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["KEY", "FUNCTION", "STATE", "JOB", "ID", "RUN", "TIME", "SIZE"]
    assert len(rows) == 4 and rows[-1] == "3 task(s): 2 done, 1 failed"
    assert any(key_of(fail, "bad input") in row and "failed" in row for row in rows)

    code, out, _ = run(capsys, "list", cache, "--state", "failed", "--json")
    assert code == 0
    (record,) = json.loads(out)
    assert record["key"] == key_of(fail, "bad input") and record["error"] == "ValueError: bad input"

    code, out, err = run(capsys, "list", cache, "--state", "running,cancelled")
    assert (code, out) == (1, "") and "no tasks in state running, cancelled" in err


def test_show_gives_arguments_error_traceback_and_log(cache, capsys):
    code, out, _ = run(capsys, "show", cache, "fail_")  # a unique prefix is enough
    assert code == 0
    assert "state:      failed" in out
    assert "arguments:  args=('bad input',) kwargs={}" in out
    assert "error:      ValueError: bad input" in out
    assert "remote traceback:\n  Traceback (most recent call last):" in out
    assert "last lines of" in out and "  working hard" in out

    code, out, _ = run(capsys, "show", cache, key_of(double, 2), "--json")
    details = json.loads(out)
    assert code == 0 and details["state"] == "done" and details["result"] == "4"
    assert details["arguments"] == "args=(2,) kwargs={}" and details["resources"]["cores"] == 1


def test_show_does_not_unpickle_from_a_cache_others_can_write(cache, capsys):
    os.chmod(cache, 0o777)
    code, out, err = run(capsys, "show", cache, key_of(double, 1))
    assert code == 0
    assert "writable by other users" in err
    assert "arguments:  (not loaded: other users can write to this cache" in out
    assert "result:" not in out


def test_show_of_an_unknown_or_ambiguous_key_fails(cache, capsys):
    code, _, err = run(capsys, "show", cache, "nope")
    assert code == 1 and "no task 'nope'" in err
    code, _, err = run(capsys, "show", cache, "double")
    assert code == 1 and "matches 2 tasks" in err


def test_clean_needs_a_selection_and_honours_dry_run(cache, capsys):
    code, _, err = run(capsys, "clean", cache)
    assert code == 2 and "needs --state, --older-than, --key or --all" in err

    code, out, _ = run(capsys, "clean", cache, "--state", "failed", "--dry-run", "--grace", "0")
    assert code == 0 and out.startswith(f"would delete {key_of(fail, 'bad input')} (failed,")
    assert len(get_cache_data(cache)) == 3

    code, out, _ = run(capsys, "clean", cache, "--older-than", "2d")
    assert code == 1  # nothing that old
    code, out, _ = run(capsys, "clean", cache, "--key", key_of(double, 1), "--json", "--grace", "0")
    assert code == 0 and [r["key"] for r in json.loads(out)["deleted"]] == [key_of(double, 1)]
    code, out, _ = run(capsys, "clean", cache, "--all", "--grace", "0")
    assert code == 0 and "deleted 2 task(s)" in out
    assert get_cache_data(cache) == []
    code, _, err = run(capsys, "list", cache)
    assert code == 1 and "no tasks" in err


def test_cancel_and_clean_of_a_running_task(tmp_path, capsys, runs):
    hold = tmp_path / "hold"
    hold.touch()
    with Executor(cache_directory=tmp_path / "cache") as exe:
        future = exe.submit(record_and_hold, runs, 1, str(hold))
        wait_for(lambda: count_runs(runs) == 1, what="the task to start")
        key = key_of(record_and_hold, runs, 1, str(hold))

        code, _, err = run(capsys, "clean", exe.cache_directory, "--all")
        assert code == 1 and "kept 1 task(s): 1 with a queued or running job" in err
        assert "--force" in err and key not in err  # names only with --verbose
        code, _, err = run(capsys, "clean", exe.cache_directory, "--all", "--verbose")
        assert code == 1 and f"  kept {key} (job " in err and "its job is queued or running" in err
        code, out, _ = run(capsys, "cancel", exe.cache_directory, key[:20])
        assert code == 0 and out == f"cancelled {key}\n"
        future.exception(timeout=10)
        code, out, _ = run(capsys, "list", exe.cache_directory, "--state", "cancelled")
        assert code == 0 and key in out
        code, _, err = run(capsys, "cancel", exe.cache_directory)
        assert code == 1 and "no queued or running jobs" in err


def test_clean_keeps_fresh_folders_and_says_why(cache, capsys):
    """Folders written less than --grace ago may be a live Executor's: kept, counted, named."""
    code, out, err = run(capsys, "clean", cache, "--all")
    assert code == 1 and out == ""
    assert "kept 3 task(s): 3 changed within the grace period" in err
    assert "--grace 0 deletes what changed in the last 1m 00s" in err
    code, out, err = run(capsys, "clean", cache, "--state", "failed", "--json")
    report = json.loads(out)
    assert code == 1 and report["deleted"] == [] and report["kept_counts"] == {"young": 1}
    assert [r["kept"] for r in report["kept"]] == ["young"] and report["grace"] == 60
    code, out, _ = run(capsys, "clean", cache, "--all", "--grace", "10m")
    assert code == 1 and len(get_cache_data(cache)) == 3
    code, out, _ = run(capsys, "clean", cache, "--all", "--force")
    assert code == 0 and "deleted 3 task(s)" in out


def test_clean_removes_what_killed_writers_left(cache, capsys):
    """A job killed mid-write leaves a temporary file forever: clean removes it, whatever the
    selection, and keeps a live writer's."""
    from tests.cache.conftest import dead_pid

    import socket

    folder = cache / key_of(double, 1)
    dead = folder / f".result.h5.{socket.gethostname()}.{dead_pid()}.0badc0de.tmp"
    live = folder / f".result.h5.{socket.gethostname()}.{os.getpid()}.0badc0de.tmp"
    dead.write_bytes(b"half a result")
    live.write_bytes(b"being written")
    code, _, err = run(capsys, "clean", cache, "--state", "cancelled")
    assert code == 1 and "removed 1 leftover file(s) of killed writers" in err
    assert not dead.exists() and live.exists()


def test_usage_errors_exit_with_2(cache, capsys):
    for argv in (["list"], ["frobnicate", str(cache)], ["list", str(cache), "--state", "finished"],
                 ["clean", str(cache), "--older-than", "yesterday"]):
        with pytest.raises(SystemExit) as raised:
            main(argv)
        assert raised.value.code == 2, argv
    assert "invalid state 'finished'" in capsys.readouterr().err
    assert main([]) == 2


def test_a_missing_cache_directory_is_an_error(tmp_path, capsys):
    code, _, err = run(capsys, "list", tmp_path / "nothing")
    assert code == 1 and "does not exist" in err


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("15m", 900), ("12h", 43200),
                                           ("2d", 172800), ("1w", 604800), ("1.5h", 5400)])
def test_ages(text, seconds):
    assert parse_age(text) == seconds


def test_python_dash_m_and_the_console_script(cache):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    done = subprocess.run([sys.executable, "-m", "executorlib", "list", str(cache), "--json"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 3
    script = shutil.which("executorlib")
    if script is None:
        pytest.skip("the executorlib console script is not installed (pip install -e .)")
    done = subprocess.run([script, "list", str(cache), "--state", "failed"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert done.returncode == 0 and "1 task(s): 1 failed" in done.stdout
