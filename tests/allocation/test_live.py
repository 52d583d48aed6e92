"""Runs tests/allocation/inside in ONE real SLURM allocation of 2 CPUs (``sbatch --wait -n 2``)
and reports each inner test's outcome here: a failed inner test fails the outer one with its text."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from tests.slurm.conftest import cluster_problem, skip_or_fail

ROOT = Path(__file__).resolve().parents[2]
INNER = "tests/allocation/inside"
#: the allocation's own time limit (minutes) and how long the outer test waits for it
TIME_LIMIT_MINUTES = 6
WAIT_SECONDS = TIME_LIMIT_MINUTES * 60 + 120


@pytest.fixture(scope="module")
def inner_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    problem = cluster_problem()
    if problem is not None:
        skip_or_fail(problem)
    where = tmp_path_factory.mktemp("allocation")
    report, log = where / "inner.xml", where / "inner.out"
    script = (f"cd {ROOT} && {sys.executable} -m pytest {INNER} -q -p no:cacheprovider "
              f"-o addopts= --junitxml={report}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    command = ["sbatch", "--wait", "-n", "2", "-t", str(TIME_LIMIT_MINUTES), "-J", "executorlib-allocation-tests",
               "-o", str(log), "--wrap", script]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=WAIT_SECONDS, env=env,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        subprocess.run(["scancel", "--name", "executorlib-allocation-tests"], capture_output=True, timeout=30)
        pytest.fail(f"the allocation running {INNER} did not end within {WAIT_SECONDS} s", pytrace=False)
    output = log.read_text(errors="replace") if log.exists() else ""
    if not report.exists():
        pytest.fail(f"sbatch --wait ended with {done.returncode} and no report of the inner tests:\n"
                    f"{done.stdout}{done.stderr}\n{output[-4000:]}", pytrace=False)
    cases = {}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        outcome, text = "passed", ""
        for tag in ("failure", "error", "skipped"):
            found = case.find(tag)
            if found is not None:
                outcome = tag
                text = (found.get("message") or "") + "\n" + (found.text or "")
                break
        cases[case.get("name")] = (outcome, text)
    return {"cases": cases, "output": output, "sbatch": done}


INNER_TESTS = sorted(
    line.split("(")[0][4:] for line in (ROOT / INNER / "test_inside_allocation.py").read_text().splitlines()
    if line.startswith("def test_"))


@pytest.mark.slurm
@pytest.mark.parametrize("name", INNER_TESTS)
def test_inside_a_real_allocation(inner_run: dict, name: str) -> None:
    cases = inner_run["cases"]
    assert name in cases, (f"{name} did not run inside the allocation; the job's output:\n"
                           f"{inner_run['output'][-4000:]}")
    outcome, text = cases[name]
    if outcome == "skipped":
        pytest.fail(f"{name} skipped inside the allocation: {text.strip()}", pytrace=False)
    assert outcome == "passed", f"{name} {outcome} inside the allocation:\n{text[-6000:]}"
