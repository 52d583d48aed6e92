"""The backend mixin of the conformance suite (``tests/conformance``).

The suite checks the behaviours ``concurrent.futures`` defines (issue 13), on every backend, the way
CPython's ``Lib/test/test_concurrent_futures`` runs one test class per executor kind. Here a test
asks for the ``flavour`` fixture and runs once per *flavour*:

=================  ============================================================================
``local``          ``Executor(backend="local")`` with a temporary cache (every submit runs)
``local_cache``    ``backend="local"`` with a named ``cache_directory`` (identical calls merge)
``local_pool``     ``backend="local", block_allocation=True`` (persistent workers, temporary cache)
``slurm``          ``backend="slurm_submission"`` with a named cache, against the real cluster;
                   carries ``@pytest.mark.slurm`` (deselect with ``-m "not slurm"``)
=================  ============================================================================

Usage::

    from tests.conformance.conftest import ALL, LOCAL, flavours, release, wait_until

    def test_x(flavour):                 # runs on LOCAL (the default: cheap)
        with flavour.executor() as exe:  # Executor(**flavour.options, **overrides)
            assert exe.submit(pow, 2, 3).result(timeout=flavour.timeout) == 8

    @flavours(*ALL)                      # also on SLURM: keep those tests few (budget ~40 jobs)
    def test_y(flavour): ...

``Flavour`` attributes: ``name``, ``named_cache`` (identical calls are merged by key),
``submission`` (every task is a batch job; no ``max_workers``), ``pool``, ``cache`` (the cache
directory or None), ``timeout`` (seconds a short task may take to come back: a few locally,
minutes on SLURM), ``options`` (the Executor keywords). ``flavour.executor(**overrides)`` creates an
Executor; at teardown every Executor the test created is shut down with ``cancel_futures=True``
and, on SLURM, jobs still queued or running under the test's cache are scancel'd (as
``tests/slurm/conftest.py``'s ``slurm_cache`` fixture does). Tests may pass ``max_workers`` as an
override: it is dropped on the submission flavours, where the job scheduler decides.
A known open bug on some flavours only: ``@pytest.mark.xfail_on("local", "local_pool",
reason="issue 13 part 2: ...")`` marks those runs ``xfail(strict=False)`` (remove the mark once
fixed; /work/coord/conformance-failures.md lists them).
``flavour.gate(name)`` is a file path a task can block on (``funcs.wait_for_file``) until the
test calls ``release(path)``; ``wait_until(predicate, timeout, what)`` polls.

Functions that run in tasks live in ``tests/conformance/funcs.py`` (pickled by reference; the
repository root is on the jobs' ``PYTHONPATH``, see ``tests/conftest.py``).
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.slurm.conftest import cluster_problem, skip_or_fail

LOCAL = ("local", "local_cache", "local_pool")
SLURM = ("slurm",)
ALL = LOCAL + SLURM


def flavours(*names: str) -> pytest.MarkDecorator:
    """Run the decorated test on these flavours instead of the default ``LOCAL``."""
    unknown = set(names) - set(ALL)
    if unknown:
        raise ValueError(f"unknown flavour(s) {sorted(unknown)}; known: {ALL}")
    return pytest.mark.flavours(*names)


@dataclass
class Flavour:
    """One backend configuration, bound to one test's temporary directory."""

    name: str
    tmp_path: Path
    executors: list = field(default_factory=list)

    @property
    def submission(self) -> bool:
        return self.name in SLURM

    @property
    def pool(self) -> bool:
        return self.name == "local_pool"

    @property
    def named_cache(self) -> bool:
        return self.name in ("local_cache", "slurm")

    @property
    def cache(self) -> Optional[Path]:
        return self.tmp_path / "cache" if self.named_cache else None

    @property
    def timeout(self) -> float:
        return 180.0 if self.submission else 20.0

    @property
    def options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"backend": "slurm_submission" if self.submission else "local"}
        if self.cache is not None:
            options["cache_directory"] = str(self.cache)
        if self.pool:
            options["block_allocation"] = True
        return options

    def executor(self, **overrides: Any):
        """An Executor of this flavour (shut down at the test's teardown)."""
        from executorlib import Executor

        if self.submission:
            overrides.pop("max_workers", None)
        exe = Executor(**{**self.options, **overrides})
        self.executors.append(exe)
        return exe

    def gate(self, name: str) -> str:
        """A path that does not exist yet: tasks given it wait (``funcs.wait_for_file``) until
        the test creates it with :func:`release`."""
        return str(self.tmp_path / f"gate-{name}")

    def teardown(self) -> None:
        for exe in self.executors:
            try:
                exe.shutdown(wait=not self.submission, cancel_futures=True)
            except Exception:  # noqa: BLE001 - a test may have broken it on purpose
                pass
        if self.submission and self.cache is not None:
            from tests.slurm.slurm_tools import active, job_ids_in, jobs_under, squeue_states

            ids = job_ids_in(self.cache) | jobs_under(self.tmp_path)
            leftover = [i for i, (state, _) in squeue_states(ids).items() if active(state)]
            if leftover:
                subprocess.run(["scancel", *leftover], capture_output=True, timeout=60)


def release(path: str) -> None:
    """Open a gate made by :meth:`Flavour.gate` (the waiting tasks return)."""
    Path(path).touch()


def wait_until(predicate, timeout: float, what: str) -> None:
    """Poll ``predicate`` every 20 ms; fail the test naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.02)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "flavours(*names): backends a conformance test runs on")
    config.addinivalue_line("markers", "xfail_on(*names, reason): a known open bug on these flavours")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "flavour" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("flavours")
    names = marker.args if marker is not None else LOCAL
    known = {}  # flavour -> reasons of the xfail_on marks naming it
    for mark in metafunc.definition.iter_markers("xfail_on"):
        for name in mark.args:
            known.setdefault(name, []).append(mark.kwargs["reason"])
    params = []
    for name in names:
        marks = [pytest.mark.slurm] if name in SLURM else []
        if name in known:
            marks.append(pytest.mark.xfail(reason="; ".join(known[name]), strict=False))
        params.append(pytest.param(name, id=name, marks=marks))
    metafunc.parametrize("flavour", params, indirect=True)


@pytest.fixture
def flavour(request: pytest.FixtureRequest, tmp_path: Path):
    """The backend configuration this run of the test uses (see the module docstring)."""
    name = request.param
    if name in SLURM:
        problem = cluster_problem()
        if problem is not None:
            skip_or_fail(problem)
    assert " " not in str(tmp_path), f"job scripts cannot use a path with spaces: {tmp_path}"
    current = Flavour(name, tmp_path)
    yield current
    current.teardown()
