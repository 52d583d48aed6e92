"""Setup failures are not results (issue 14 part 7).

A job that cannot import the function's module, or whose ``cwd`` does not exist, fails its Future
with a message saying what to fix, and caches nothing: after the fix the same call runs again
and gives its value. A cache path too long for the file system is a ValueError naming the path,
its length and the limit, not a raw ``OSError: [Errno 36]``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from executorlib import Executor
from executorlib.errors import JobFailedError
from executorlib.files import RESULT_FILE, SETUP_ERROR_FILE
from executorlib.store import TaskStore
from tests.cache.conftest import key_of

REPO_ROOT = Path(__file__).resolve().parents[2]


def _user_module(folder: Path) -> str:
    """A module of the user's own, ``<name>.py`` in ``folder``; returns its name."""
    name = f"usermod_{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent("""
        import os

        def triple(x):
            with open(os.environ["RUNS_FILE"], "a") as f:
                f.write("run\\n")
            return 3 * x
    """))
    return name


def _client(tmp_path: Path, code: str, pythonpath: list[str], runs: Path, timeout: float = 120.0,
            **extra_env: str) -> subprocess.CompletedProcess:
    script = tmp_path / f"client-{uuid.uuid4().hex[:6]}.py"
    script.write_text(textwrap.dedent(code))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO_ROOT), *pythonpath]), RUNS_FILE=str(runs), **extra_env)
    # the script runs in another directory than the module's, so the job cannot find it by the
    # client's directory either: only PYTHONPATH helps
    workdir = tmp_path / "elsewhere"
    workdir.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, str(script)], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _runs(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_module_missing_in_the_job_then_found_after_fixing_pythonpath(tmp_path):
    modules, cache, runs = tmp_path / "mods", tmp_path / "cache", tmp_path / "runs.txt"
    name = _user_module(modules)
    # the client imports the module through sys.path; the job (no PYTHONPATH entry) cannot
    code = f"""
        import sys
        sys.path.insert(0, {str(modules)!r})
        from executorlib import Executor
        from {name} import triple
        with Executor(cache_directory={str(cache)!r}) as exe:
            future = exe.submit(triple, 14)
            error = future.exception(timeout=60)
            print("ERROR" if error is not None else "VALUE", type(error).__name__ if error else future.result())
            if error is not None:
                print(error)
    """
    first = _client(tmp_path, code, [], runs)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("ERROR JobFailedError"), first.stdout
    assert f"No module named '{name}'" in first.stdout and "PYTHONPATH" in first.stdout, first.stdout
    assert "nothing was cached" in first.stdout
    (folder,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    assert not (folder / RESULT_FILE).exists()  # the setup failure is not the call's result
    assert (folder / SETUP_ERROR_FILE).exists()
    assert _runs(runs) == 0

    fixed = _client(tmp_path, code, [str(modules)], runs)  # the user fixes PYTHONPATH
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout.split() == ["VALUE", "42"], fixed.stdout
    assert _runs(runs) == 1  # it ran this time
    assert (folder / RESULT_FILE).exists() and not (folder / SETUP_ERROR_FILE).exists()


def where_am_i() -> str:
    return os.getcwd()


def test_missing_cwd_then_created(tmp_path):
    cache, workdir = tmp_path / "cache", tmp_path / "work" / "here"
    with Executor(cache_directory=cache, resource_dict={"cwd": str(workdir)}) as exe:
        error = exe.submit(where_am_i).exception(timeout=60)
    assert isinstance(error, JobFailedError), repr(error)
    text = str(error)
    assert "resource_dict['cwd']" in text and str(workdir) in text and "does not exist" in text, text
    assert "Create it" in text
    key = key_of(where_am_i)
    store = TaskStore(cache, create=False, use_index=False)
    assert not store.has_result(key) and store.read_setup_error(key) is not None

    workdir.mkdir(parents=True)
    with Executor(cache_directory=cache, resource_dict={"cwd": str(workdir)}) as exe:
        assert exe.submit(where_am_i).result(timeout=60) == str(workdir)
    assert store.read_setup_error(key) is None


def test_a_cache_path_too_long_for_the_file_system_is_a_value_error(tmp_path):
    deep = tmp_path
    while len(str(deep)) < 4040:
        deep = deep / ("d" * 200)
    with pytest.raises(ValueError) as raised:
        Executor(cache_directory=deep)
    text = str(raised.value)
    assert str(deep)[:60] in text and f"{len(os.fsencode(deep))} bytes" in text, text
    limit = os.pathconf(tmp_path, "PC_PATH_MAX")
    assert f"at most {limit - 1} bytes" in text, text
    assert not deep.exists()  # nothing was created on the way


def test_a_cache_path_component_too_long_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="per name"):
        TaskStore(tmp_path / ("x" * 300))


def test_a_long_cache_path_within_the_limit_works(tmp_path):
    deep = tmp_path
    limit = os.pathconf(tmp_path, "PC_PATH_MAX")
    while len(str(deep)) < limit - 700:  # room left for a key folder and its file names
        deep = deep / ("d" * 200)
    with Executor(cache_directory=deep) as exe:
        assert exe.submit(where_am_i).result(timeout=60)


# -- on the real cluster -----------------------------------------------------------------------------
@pytest.fixture
def slurm_cache(tmp_path):
    from tests.slurm.conftest import cluster_problem, skip_or_fail

    problem = cluster_problem()
    if problem is not None:
        skip_or_fail(problem)
    cache = tmp_path / "cache"
    yield cache
    from tests.slurm.slurm_tools import active, job_ids_in, jobs_under, squeue_states

    ids = job_ids_in(cache) | jobs_under(cache)
    leftover = [job_id for job_id, (state, _) in squeue_states(ids).items() if active(state)]
    if leftover:
        subprocess.run(["scancel", *leftover], capture_output=True, timeout=60)


@pytest.mark.slurm
def test_slurm_module_missing_then_pythonpath_fixed(tmp_path, slurm_cache):
    modules, runs = tmp_path / "mods", tmp_path / "runs.txt"
    name = _user_module(modules)
    code = f"""
        import sys
        sys.path.insert(0, {str(modules)!r})
        from executorlib import Executor
        from {name} import triple
        with Executor(backend="slurm_submission", cache_directory={str(slurm_cache)!r}) as exe:
            future = exe.submit(triple, 14)
            error = future.exception(timeout=400)  # the shared cluster may be busy
            print("ERROR" if error is not None else "VALUE", type(error).__name__ if error else future.result())
            if error is not None:
                print(error)
    """
    first = _client(tmp_path, code, [], runs, timeout=450)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("ERROR JobFailedError"), first.stdout
    assert f"No module named '{name}'" in first.stdout and "PYTHONPATH" in first.stdout, first.stdout
    assert _runs(runs) == 0
    fixed = _client(tmp_path, code, [str(modules)], runs, timeout=450)  # sbatch passes the client's environment on
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout.split() == ["VALUE", "42"], fixed.stdout
    assert _runs(runs) == 1


@pytest.mark.slurm
def test_slurm_missing_cwd_then_created(tmp_path, slurm_cache):
    workdir = tmp_path / "work"
    with Executor(backend="slurm_submission", cache_directory=slurm_cache,
                  resource_dict={"cwd": str(workdir)}) as exe:
        error = exe.submit(where_am_i).exception(timeout=400)
    assert isinstance(error, JobFailedError) and str(workdir) in str(error) and "cwd" in str(error), repr(error)
    workdir.mkdir()
    with Executor(backend="slurm_submission", cache_directory=slurm_cache,
                  resource_dict={"cwd": str(workdir)}) as exe:
        assert exe.submit(where_am_i).result(timeout=400) == str(workdir)


def test_a_parent_result_that_cannot_be_read_is_a_setup_failure_of_the_job(tmp_path):
    """The worker itself (a real job process): a parent's result vanished or is damaged."""
    from executorlib.resources import merge_resources
    from executorlib.task import FutureRef
    from tests.cache.funcs import double
    from tests.faults.conftest import flip_byte

    store = TaskStore(tmp_path / "cache", use_index=False)
    parent, child = "parent_" + "0" * 32, "double_" + "1" * 32
    store.write_task(child, "double", store.pickle_call(double, (FutureRef(parent),), {}),
                     merge_resources({}, None), [parent])
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))

    def run_job() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "executorlib.worker", str(store.task_dir(child))],
                              env=env, capture_output=True, text=True, timeout=60)

    missing = run_job()
    assert missing.returncode == 2 and not store.has_result(child)
    assert parent in store.read_setup_error(child)["message"] and "missing" in store.read_setup_error(child)["message"]

    store.task_dir(parent).mkdir()
    store.write_result(parent, 21, runtime=0.0)
    store.path(parent, "result.pkl").unlink()
    import h5py

    with h5py.File(store.path(parent, RESULT_FILE), "r") as f:
        inside = f["output"].id.get_offset() + 3
    flip_byte(store.path(parent, RESULT_FILE), inside)  # damaged: the checksum says so
    damaged = run_job()
    assert damaged.returncode == 2 and not store.has_result(child)
    message = store.read_setup_error(child)["message"]
    assert parent in message and "CacheCorruptedError" in message, message

    store.write_result(parent, 21, runtime=0.0)  # the parent recomputed: the child runs
    assert run_job().returncode == 0
    assert store.read_result(child).value == 42 and store.read_setup_error(child) is None
