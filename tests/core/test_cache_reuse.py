"""A second Executor on the same cache_directory returns cached results without running again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from executorlib import Executor
from executorlib.errors import CacheCorruptedError
from tests.core import funcs


def runs(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def submit_workflow(exe: Executor, log: Path):
    a = exe.submit(funcs.record, str(log), 1)
    b = exe.submit(funcs.record, str(log), 2)
    total = exe.submit(funcs.add_funct, a, b)
    last = exe.submit(funcs.record, str(log), total)  # depends on a Future: keyed by its parent's key
    return [a, b, total, last]


def test_second_executor_reuses_results_without_running_again(tmp_path, cache_dir):
    log = tmp_path / "runs.txt"
    with Executor(backend="local", cache_directory=cache_dir) as exe:
        assert [f.result() for f in submit_workflow(exe, log)] == [1, 2, 3, 3]
    assert sorted(runs(log)) == ["1", "2", "3"]

    with Executor(backend="local", cache_directory=cache_dir) as exe:
        futures = submit_workflow(exe, log)
        # resources are not part of the key: a different resource_dict still hits the cache
        again = exe.submit(funcs.record, str(log), 1, resource_dict={"threads_per_core": 2})
        assert [f.result() for f in futures] == [1, 2, 3, 3]
        assert again.result() == 1
        new = exe.submit(funcs.record, str(log), 4)  # a new call runs
        assert new.result() == 4
    assert sorted(runs(log)) == ["1", "2", "3", "4"]


def test_a_script_rerun_in_a_new_process_hits_the_cache(tmp_path, cache_dir):
    log = tmp_path / "runs.txt"
    script = tmp_path / "workflow.py"
    script.write_text(
        "import sys\n"
        "from executorlib import Executor\n"
        "\n"
        "def scaled(log, x, factor=10):  # defined in the script: pickled by value\n"
        "    with open(log, 'a') as f:\n"
        "        f.write(f'{x}\\n')\n"
        "    return x * factor\n"
        "\n"
        "with Executor(backend='local', cache_directory=sys.argv[1]) as exe:\n"
        "    first = exe.submit(scaled, sys.argv[2], 1)\n"
        "    second = exe.submit(scaled, sys.argv[2], first)\n"
        "    print(second.result())\n"
    )

    def run() -> str:
        out = subprocess.run([sys.executable, str(script), str(cache_dir), str(log)],
                             capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    assert run() == "100"
    assert runs(log) == ["1", "10"]
    script.write_text("# an edited comment moves every line down\n\n\n" + script.read_text())
    assert run() == "100"
    assert runs(log) == ["1", "10"]


def test_a_corrupted_cached_result_is_an_error_never_a_wrong_value(cache_dir):
    with Executor(backend="local", cache_directory=cache_dir) as exe:
        future = exe.submit(funcs.add_funct, 20, 22)
        assert future.result() == 42
    result_file = cache_dir / future._executorlib_key / "result.h5"
    data = result_file.read_bytes()
    result_file.write_bytes(data[: len(data) // 2])

    with Executor(backend="local", cache_directory=cache_dir) as exe:
        again = exe.submit(funcs.add_funct, 20, 22)
        with pytest.raises(CacheCorruptedError) as info:
            again.result()
    assert str(result_file) in str(info.value)


def test_a_corrupted_task_file_fails_the_task_with_cache_corrupted_error(cache_dir):
    with Executor(backend="local", cache_directory=cache_dir) as exe:
        key = exe.submit(funcs.add_funct, 1, 1)._executorlib_key
    # a crash left the task file of a call cut short and no result: the rerun must not run junk
    task_file = cache_dir / key / "task.h5"
    (cache_dir / key / "result.h5").unlink()
    (cache_dir / key / "job.json").unlink()
    task_file.write_bytes(task_file.read_bytes()[:300])

    with Executor(backend="local", cache_directory=cache_dir) as exe:
        future = exe.submit(funcs.add_funct, 1, 1)
        with pytest.raises(CacheCorruptedError) as info:
            future.result()
    assert str(task_file) in str(info.value)
