"""Fault-injection infrastructure shared by every test in tests/faults/.

Fixtures and helpers (import helpers with ``from tests.faults.conftest import flip_byte``):

``tmpfs(size="2m") -> Path`` (fixture, a factory)
    Mounts a fresh tmpfs of ``size`` (any ``mount -o size=`` value: ``2m``, ``512k``) on a new
    directory under ``tmp_path`` and returns it; unmounted at teardown. The test is skipped, with
    the reason, when not running as root or when ``mount`` fails (e.g. no CAP_SYS_ADMIN).
    Typical use: a full disk, ``cache = tmpfs("2m") / "cache"``.

``read_only(path) -> Callable[[], None]`` (fixture, a factory)
    Makes ``path`` (a directory, populated or not) read-only by bind-mounting it onto itself and
    remounting the bind ``ro``; returns ``writable()``, a function that undoes it early (for "after
    the fault is gone, new calls work" checks). Undone at teardown in any case. Skipped like
    ``tmpfs`` when mounts are not allowed. ``remount(path, "ro"|"rw")`` does the same on a mount
    point you own (e.g. one from ``tmpfs``).

``kill_client(code, step, ...) -> KilledClient`` (fixture, a factory)
    Runs ``code`` (dedented) as a separate client process, ``python -m tests.faults.kill_at
    script.py``, that SIGKILLs itself at ``step`` = ``"module:qualified.name[:before|after][@N]"``
    (default ``after`` the first call): e.g. ``"executorlib.store:TaskStore.write_task:after"``.
    Waits for it (``timeout`` s) and returns ``KilledClient(returncode, killed, stdout, stderr)``;
    ``killed`` is True only when the process died at the step (it appended the step to a marker
    file just before the kill). The hook lives in test code only (tests/faults/kill_at.py); patch
    class attributes (methods) or module attributes that are looked up at call time.
    ``run_client(code)`` runs a script the same way without a kill (the "second process").

``flip_byte(path, offset) -> int``
    XORs the byte at ``offset`` (negative: from the end) with 0xFF in place; returns the old byte.
``truncate(path, size)``
    Cuts ``path`` to ``size`` bytes (negative: that many bytes off the end).

``runs`` (fixture): a file path that submitted functions append one line per execution to;
``count_runs(path) -> int`` reads it (0 when missing), for "exactly one execution per call";
``tests.faults.funcs`` has functions that record their executions.

SLURM: ``slurm_cache`` and the skip of ``@pytest.mark.slurm`` tests without a cluster come from
tests/slurm/conftest.py (imported here), so fault tests on the real cluster use them as is.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

from tests.faults.kill_at import KILL_AT, KILL_MARK, parse_step
from tests.slurm.conftest import _slurm_available, slurm_cache  # noqa: F401 - fixtures for slurm-marked tests

REPO_ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- mounts
def _mount_problem() -> Optional[str]:
    if os.geteuid() != 0:
        return f"mounts need root (running as uid {os.geteuid()})"
    return None


def _run_mount(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


def _unmount(path: Path) -> None:
    done = _run_mount(["umount", str(path)])
    if done.returncode != 0:  # busy (a straggling job): detach lazily rather than leak the mount
        _run_mount(["umount", "-l", str(path)])


def remount(path: Path, mode: str) -> None:
    """Remount the mount point ``path`` read-only (``"ro"``) or writable (``"rw"``)."""
    if mode not in ("ro", "rw"):
        raise ValueError(f"remount mode {mode!r}: expected 'ro' or 'rw'")
    done = _run_mount(["mount", "-o", f"remount,{mode}", str(path)])
    if done.returncode != 0:
        raise RuntimeError(f"mount -o remount,{mode} {path} failed: {done.stderr.strip()}")


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    mounted: list[Path] = []

    def mount(size: str = "2m") -> Path:
        problem = _mount_problem()
        if problem:
            pytest.skip(f"tmpfs mount not possible: {problem}")
        target = tmp_path / f"tmpfs-{len(mounted)}"
        target.mkdir()
        done = _run_mount(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)])
        if done.returncode != 0:
            pytest.skip(f"mount -t tmpfs -o size={size} failed: {done.stderr.strip() or done.returncode}")
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        _unmount(target)


@pytest.fixture
def read_only() -> Iterator[Callable[[Path], Callable[[], None]]]:
    active: list[Path] = []

    def make_read_only(path: Path) -> Callable[[], None]:
        problem = _mount_problem()
        if problem:
            pytest.skip(f"read-only bind mount not possible: {problem}")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        done = _run_mount(["mount", "--bind", str(path), str(path)])
        if done.returncode != 0:
            pytest.skip(f"mount --bind {path} failed: {done.stderr.strip() or done.returncode}")
        active.append(path)
        done = _run_mount(["mount", "-o", "remount,bind,ro", str(path)])
        if done.returncode != 0:
            pytest.skip(f"remount,bind,ro {path} failed: {done.stderr.strip() or done.returncode}")

        def writable() -> None:
            if path in active:
                active.remove(path)
                _unmount(path)

        return writable

    yield make_read_only
    for path in reversed(active):
        _unmount(path)


# --------------------------------------------------------------------------- bytes
def flip_byte(path: Path | str, offset: int) -> int:
    """XOR the byte at ``offset`` (negative: from the end) with 0xFF; return the old byte."""
    with open(path, "r+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        position = offset if offset >= 0 else size + offset
        if not 0 <= position < size:
            raise IndexError(f"offset {offset} is outside {path} ({size} bytes)")
        handle.seek(position)
        old = handle.read(1)[0]
        handle.seek(position)
        handle.write(bytes([old ^ 0xFF]))
    return old


def truncate(path: Path | str, size: int) -> None:
    """Cut ``path`` to ``size`` bytes (negative: drop that many bytes from the end)."""
    length = os.path.getsize(path)
    os.truncate(path, size if size >= 0 else max(length + size, 0))


# --------------------------------------------------------------------------- clients
@dataclass
class KilledClient:
    returncode: Optional[int]
    killed: bool
    stdout: str
    stderr: str


def count_runs(path: Path | str) -> int:
    """How many lines the functions appended to ``path`` (one per execution); 0 when missing."""
    try:
        with open(path) as handle:
            return sum(1 for line in handle if line.strip())
    except FileNotFoundError:
        return 0


def _client_env(extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop(KILL_AT, None)
    env.pop(KILL_MARK, None)
    env.update(extra or {})
    return env


@pytest.fixture
def run_client(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run ``code`` as a separate client process to its end; returns the CompletedProcess."""

    def run(code: str, timeout: float = 120.0, name: str = "") -> subprocess.CompletedProcess:
        path = tmp_path / (name or f"client-{uuid.uuid4().hex[:8]}.py")
        path.write_text(textwrap.dedent(code))
        return subprocess.run([sys.executable, str(path)], cwd=str(tmp_path), env=_client_env(),
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    return run


@pytest.fixture
def kill_client(tmp_path: Path) -> Callable[..., KilledClient]:
    def run(code: str, step: str, timeout: float = 120.0) -> KilledClient:
        parse_step(step)  # a typo in the step fails here, not as "the client was not killed"
        tag = uuid.uuid4().hex[:8]
        path = tmp_path / f"killed-{tag}.py"
        mark = tmp_path / f"killed-{tag}.mark"
        path.write_text(textwrap.dedent(code))
        done = subprocess.run([sys.executable, "-m", "tests.faults.kill_at", str(path)], cwd=str(tmp_path),
                              env=_client_env({KILL_AT: step, KILL_MARK: str(mark)}),
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        killed = mark.exists() and step in mark.read_text()
        return KilledClient(done.returncode, killed, done.stdout, done.stderr)

    return run


@pytest.fixture
def runs(tmp_path: Path) -> str:
    """A file the submitted functions append one line per execution to."""
    return str(tmp_path / "runs.txt")
