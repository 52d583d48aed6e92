"""The original executorlib 1.x flux classes up to flux's command line: ``pmi_mode`` and the flux
keywords of :class:`FluxJobExecutor` and :class:`FluxClusterExecutor`.

No flux broker exists on the machines this project is tested on (the broker tests are in
test_e2e_broker.py, skipped there). :class:`FluxJobExecutor` runs here against a stand-in ``flux``
on PATH that records each command line and then runs what ``flux run`` would start (the worker)
in place: so the calls really run, and the test sees the exact argv flux would get. For
:class:`FluxClusterExecutor` the job script that ``flux batch`` would get is rendered.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from executorlib import FluxClusterExecutor, FluxJobExecutor
from executorlib.resources import merge_resources
from executorlib.spawners.base import JobSpec, worker_command
from tests.core import funcs

#: a stand-in for the flux command: ``flux resource list`` prints one node with 2 cores, ``flux
#: run [options] command...`` appends its argv to $FAKE_FLUX_LOG and runs ``command...``
FAKE_FLUX = """#!{python}
import json, os, sys
argv = sys.argv[1:]
if argv[:2] == ["resource", "list"]:
    print("1 2 0")
    sys.exit(0)
with open(os.environ["FAKE_FLUX_LOG"], "a") as log:
    log.write(json.dumps(argv) + "\\n")
assert argv[0] == "run", argv
rest, with_value = argv[1:], {{"-n", "-c", "-g", "-N", "-t", "-o"}}
while rest and rest[0].startswith("-"):
    rest = rest[2:] if rest[0] in with_value else rest[1:]
os.execvp(rest[0], rest)
"""


@pytest.fixture
def fake_flux(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A flux instance as this process sees it (FLUX_URI, ``flux`` on PATH); the log of argvs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "flux"
    script.write_text(FAKE_FLUX.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "flux_argv.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FLUX_URI", "local:///fake/flux/instance")
    monkeypatch.setenv("FAKE_FLUX_LOG", str(log))
    return log


def flux_runs(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def pmi_options(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, part in enumerate(argv[:-1]) if part == "-o"]


# -- FluxJobExecutor ------------------------------------------------------------------------------------------

def test_flux_job_executor_pmi_mode_is_on_every_flux_run(fake_flux: Path) -> None:
    with FluxJobExecutor(pmi_mode="pmix") as exe:
        assert exe.info["pmi_mode"] == "pmix"
        first = exe.submit(funcs.add_funct, 1, 2)
        assert exe.submit(funcs.add_funct, first, 3).result(timeout=120) == 6
    runs = flux_runs(fake_flux)
    assert len(runs) == 2
    for argv in runs:
        assert argv[:3] == ["run", "-n", "1"]
        assert pmi_options(argv) == ["pmi=pmix"]


def test_flux_job_executor_without_pmi_mode_leaves_flux_its_default(fake_flux: Path) -> None:
    with FluxJobExecutor() as exe:
        assert exe.submit(funcs.add_funct, 1, 1).result(timeout=120) == 2
    (argv,) = flux_runs(fake_flux)
    assert pmi_options(argv) == []


def test_flux_job_executor_block_allocation_workers_get_the_pmi_option(fake_flux: Path) -> None:
    with FluxJobExecutor(max_workers=1, block_allocation=True, pmi_mode="simple") as exe:
        assert [f.result(timeout=120) for f in [exe.submit(funcs.add_funct, i, 1) for i in range(2)]] == [1, 2]
    runs = flux_runs(fake_flux)
    assert len(runs) == 1  # one worker served both calls
    assert pmi_options(runs[0]) == ["pmi=simple"] and "--input=0" in runs[0]


@pytest.mark.parametrize("value", [True, False])
def test_flux_log_files_is_accepted_and_the_output_is_in_job_out(fake_flux: Path, tmp_path: Path,
                                                                 value: bool) -> None:
    with FluxJobExecutor(cache_directory=str(tmp_path / "c"), flux_log_files=value) as exe:
        assert exe.info["flux_log_files"] is value
        future = exe.submit(print, "hello from the call")
        assert future.result(timeout=120) is None
    assert "hello from the call" in (tmp_path / "c" / future._executorlib_key / "job.out").read_text()


def test_flux_log_files_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="flux_log_files"):
        FluxJobExecutor(flux_log_files="yes")


@pytest.mark.parametrize("keyword, value, alternative", [
    ("flux_executor", object(), "FLUX_URI"), ("flux_executor_nesting", True, "FluxClusterExecutor")])
def test_flux_executor_keywords_name_the_alternative(keyword: str, value: object, alternative: str) -> None:
    with pytest.raises(NotImplementedError, match=f"{keyword}.*{alternative}"):
        FluxJobExecutor(**{keyword: value})


def test_flux_executor_keywords_at_their_defaults_are_accepted(fake_flux: Path) -> None:
    with FluxJobExecutor(flux_executor=None, flux_executor_nesting=False) as exe:
        assert exe.submit(funcs.add_funct, 2, 2).result(timeout=120) == 4


# -- FluxClusterExecutor --------------------------------------------------------------------------------------

def job_spec(task_dir: Path, **resources) -> JobSpec:
    merged = merge_resources(None, resources)
    return JobSpec(key=task_dir.name, task_dir=task_dir, function_name="calc", resources=merged,
                   command=worker_command(task_dir, merged["cores"]), log_path=task_dir / "job.out")


def flux_run_line(script: str) -> str:
    lines = [line for line in script.splitlines() if line.startswith("flux run ")]
    assert len(lines) == 1, script
    return lines[0]


@pytest.fixture
def cluster(tmp_path: Path):
    pytest.importorskip("pysqa")
    pytest.importorskip("jinja2")

    def make(**keywords) -> FluxClusterExecutor:
        exe = FluxClusterExecutor(cache_directory=str(tmp_path / "cache"), **keywords)
        made.append(exe)
        return exe

    made: list[FluxClusterExecutor] = []
    yield make
    for exe in made:
        exe.shutdown(wait=False)


def test_flux_cluster_executor_pmi_mode_reaches_the_job_scripts_flux_run(cluster, tmp_path: Path) -> None:
    exe = cluster(pmi_mode="pmix")
    assert exe.info["pmi_mode"] == "pmix"
    script = exe._spawner.render(job_spec(tmp_path / "cache" / "calc_1", cores=2, partition="debug"), [])
    line = flux_run_line(script)
    assert line.startswith("flux run -n 2 -c 1 ") and " -o pmi=pmix " in line
    assert "executorlib.worker" in line
    # one core: no MPI ranks, no flux run, so no PMI either
    single = exe._spawner.render(job_spec(tmp_path / "cache" / "calc_2", partition="debug"), [])
    assert "flux run" not in single and "pmi=" not in single


def test_flux_cluster_executor_without_pmi_mode_has_no_pmi_option(cluster, tmp_path: Path) -> None:
    exe = cluster()
    assert exe.info["pmi_mode"] is None
    script = exe._spawner.render(job_spec(tmp_path / "cache" / "calc_1", cores=2, partition="debug"), [])
    assert "pmi=" not in flux_run_line(script)


def test_flux_cluster_executor_has_no_flux_executor_keywords(tmp_path: Path) -> None:
    """As in the original, only FluxJobExecutor takes them."""
    for keyword in ("flux_executor", "flux_executor_nesting", "flux_log_files"):
        with pytest.raises(TypeError, match=keyword):
            FluxClusterExecutor(cache_directory=str(tmp_path), **{keyword: None})
