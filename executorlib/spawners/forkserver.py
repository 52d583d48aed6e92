"""A fork server for the one-shot local backend: a call costs a ``fork()`` instead of an
interpreter start.

A job of ``backend="local"`` is ``python -m executorlib.worker TASK_FOLDER``; most of its time is
the interpreter start and the imports of h5py, numpy and cloudpickle (~0.2-0.3 s). The fork server
is one separate process, ``python -m executorlib.worker --fork-server FD``, started once per client
process (and per environment, see below) with those modules imported. For each task it forks a
child that becomes exactly that job: a new session (its own process group, which cancel and
``run_time_max`` kill), the task folder as working directory, the environment the spawner gives
(``OMP_NUM_THREADS``, ``CUDA_VISIBLE_DEVICES``, ...), stdin ``/dev/null`` and the spawner's own
stdout/stderr pipes, and then :func:`executorlib.worker.main` and a normal interpreter exit. A
fresh process per call keeps calls isolated from each other as before.

As ``multiprocessing``'s forkserver, it is forked from a process without threads (never from the
client, whose scheduler and output threads make ``fork()`` unsafe).

Protocol: the client holds one end of a ``SOCK_SEQPACKET`` socket pair, the server the other.
A request is one message, a JSON object (``argv``, ``cwd``, ``env``) with four file descriptors
(SCM_RIGHTS): one end of a fresh stream socket pair for the answers, the child's stdin, stdout and
stderr. The server answers on that stream: ``<pid>\\n`` once forked, ``<exit code>\\n`` when the
child ended (negative: killed by that signal, as ``subprocess.Popen.returncode``), then closes it.
At the end of the control socket (the client exited or was killed, or closed the server) the
server takes no more requests and ends once its running children ended (a local task outlives a
killed client and writes its result).

Libraries read parts of the environment when they are imported (OpenBLAS its thread count,
HDF5 its file locking): a server is started with the environment of the first child it serves,
and serves only children whose environment differs from it in ``CUDA_VISIBLE_DEVICES`` at most;
another environment gets another server. ``EXECUTORLIB_FORK_SERVER=0`` turns the fork server off
(every job is a plain subprocess, as for ``cores > 1`` under ``mpiexec``); a server that cannot
start or dies also sends the jobs back to plain subprocesses.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Optional

__all__ = ["ForkServer", "ForkedProcess", "fork_server_for", "enabled"]

#: environment variables that may differ between the server and a child (read at run time only)
PER_CHILD_ENV = ("CUDA_VISIBLE_DEVICES", "EXECUTORLIB_STREAMED_OUTPUT", "EXECUTORLIB_WORKER_ID",
                 "PYTEST_CURRENT_TEST")
#: at most this many servers (environments) at once; the least recently used one ends first
MAX_SERVERS = 4
#: how long the client waits for a server to start, or for a fork to be confirmed
START_TIMEOUT = 60.0
FORK_TIMEOUT = 30.0
_MAX_REQUEST = 1 << 20
#: exit code reported when the server died before it could tell the child's (not a real code)
UNKNOWN_EXIT = 255


def enabled() -> bool:
    return (os.environ.get("EXECUTORLIB_FORK_SERVER", "1") != "0" and hasattr(os, "fork")
            and hasattr(socket, "AF_UNIX") and hasattr(socket, "send_fds") and sys.platform != "win32")


# -- client side ---------------------------------------------------------------------------------


class ForkedProcess:
    """A child of the fork server, with the part of ``subprocess.Popen``'s interface that the
    local spawner uses: ``pid``, ``stdout``, ``stderr``, ``returncode``, ``poll()``, ``wait()``."""

    def __init__(self, pid: int, answers: socket.socket, stdout: Any, stderr: Any, buffer: bytes,
                 stdin: Any = None):
        self.pid = pid
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.returncode: Optional[int] = None
        self._answers = answers
        self._buffer = buffer
        self._lock = threading.Lock()

    def _take(self, timeout: Optional[float]) -> Optional[int]:
        with self._lock:
            if self.returncode is not None:
                return self.returncode
            deadline = None if timeout is None else time.monotonic() + timeout
            while b"\n" not in self._buffer:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                ready, _, _ = select.select([self._answers], [], [], left)
                if not ready:
                    return None
                try:
                    chunk = self._answers.recv(64)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    chunk = b""
                if not chunk:  # the server died without telling: judge by the pid itself
                    if _pid_exists(self.pid):
                        if deadline is not None and time.monotonic() >= deadline:
                            return None
                        if timeout == 0:
                            return None
                        time.sleep(0.05)
                        continue
                    self._finish(UNKNOWN_EXIT)
                    return self.returncode
                self._buffer += chunk
            line, _, self._buffer = self._buffer.partition(b"\n")
            try:
                code = int(line)
            except ValueError:
                code = UNKNOWN_EXIT
            self._finish(code)
            return code

    def _finish(self, code: int) -> None:
        self.returncode = code
        try:
            self._answers.close()
        except OSError:
            pass

    def poll(self) -> Optional[int]:
        return self._take(0)

    def wait(self, timeout: Optional[float] = None) -> int:
        code = self._take(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(f"fork server child {self.pid}", timeout or 0)
        return code


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


class ForkServer:
    """The client's handle on one fork server process."""

    def __init__(self, env: dict):
        self.env_key = _env_key(env)
        self._lock = threading.Lock()
        self.broken: Optional[str] = None
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._control = parent
        try:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "executorlib.worker", "--fork-server", str(child.fileno())],
                # no stream of the client: a server (and the task it serves) that outlives a
                # killed client must not hold the client's pipes open (its reader would wait)
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                pass_fds=(child.fileno(),), start_new_session=True, cwd="/",
            )
        finally:
            child.close()
        self._ready = False

    def _wait_ready(self) -> None:
        if self._ready:
            return
        ready, _, _ = select.select([self._control], [], [], START_TIMEOUT)
        message = self._control.recv(64) if ready else b""
        if message != b"ready":
            raise OSError(f"the fork server did not start (answered {message!r})")
        self._ready = True

    def alive(self) -> bool:
        return self.broken is None and self.popen.poll() is None

    def spawn(self, argv: list[str], cwd: str, env: dict, stdin_pipe: bool = False) -> ForkedProcess:
        """Fork a child running ``executorlib.worker.main(argv)``; OSError when the server fails.
        Its stdin is /dev/null, or with ``stdin_pipe`` a pipe (the ``stdin`` of the result)."""
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        answers, remote = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        in_w = None
        if stdin_pipe:
            devnull, in_w = os.pipe()
        else:
            devnull = os.open(os.devnull, os.O_RDONLY)
        try:
            payload = json.dumps({"argv": argv, "cwd": cwd, "env": env, "umask": _umask()}).encode()
            with self._lock:
                self._wait_ready()
                socket.send_fds(self._control, [payload], [remote.fileno(), devnull, out_w, err_w])
        except BaseException:
            for fd in (out_r, err_r, in_w):
                if fd is not None:
                    os.close(fd)
            answers.close()
            raise
        finally:
            for fd in (out_w, err_w, devnull):
                os.close(fd)
            remote.close()
        buffer = b""
        deadline = time.monotonic() + FORK_TIMEOUT
        try:
            while b"\n" not in buffer:
                ready, _, _ = select.select([answers], [], [], max(0.0, deadline - time.monotonic()))
                chunk = answers.recv(64) if ready else b""
                if not chunk:
                    raise OSError("the fork server did not confirm the fork")
                buffer += chunk
            line, _, buffer = buffer.partition(b"\n")
            pid = int(line)
        except (OSError, ValueError):
            for fd in (out_r, err_r, in_w):
                if fd is not None:
                    os.close(fd)
            answers.close()
            raise
        return ForkedProcess(pid, answers, os.fdopen(out_r, "rb", buffering=0),
                             os.fdopen(err_r, "rb", buffering=0), buffer,
                             os.fdopen(in_w, "wb", buffering=0) if in_w is not None else None)

    def close(self) -> None:
        try:
            self._control.close()  # the server ends once its running children ended
        except OSError:
            pass
        # reap it when it ends (no zombie left behind by a client that goes on)
        threading.Thread(target=self.popen.wait, name="executorlib-forkserver-reap", daemon=True).start()


def _umask() -> Optional[int]:
    """This process's umask, read without changing it (os.umask would, for all threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _env_key(env: dict) -> tuple:
    return tuple(sorted((k, v) for k, v in env.items() if k not in PER_CHILD_ENV))


_servers: dict[tuple, ForkServer] = {}
_servers_lock = threading.Lock()
_owner_pid = os.getpid()
_failed: set = set()


def fork_server_for(env: dict) -> Optional[ForkServer]:
    """The running fork server for children with ``env`` (started on first use), or None when
    there is none and cannot be one (disabled, or it failed to start: plain subprocesses)."""
    global _owner_pid
    if not enabled():
        return None
    key = _env_key(env)
    with _servers_lock:
        if _owner_pid != os.getpid():  # a forked copy of the client: the servers are not ours
            _servers.clear()
            _failed.clear()
            _owner_pid = os.getpid()
        if key in _failed:
            return None
        server = _servers.get(key)
        if server is not None and not server.alive():
            server.close()
            del _servers[key]
            server = None
        if server is None:
            server = None
            try:
                server = ForkServer({k: v for k, v in env.items() if k not in PER_CHILD_ENV})
                server._wait_ready()
            except (OSError, ValueError) as error:
                _failed.add(key)
                if server is not None:
                    server._control.close()
                    try:
                        server.popen.kill()
                    except OSError:
                        pass
                    server.popen.wait()
                print(f"executorlib: {error}; local tasks start as plain subprocesses",
                      file=sys.stderr)
                return None
            while len(_servers) >= MAX_SERVERS:
                oldest = next(iter(_servers))
                _servers.pop(oldest).close()  # its running children go on
        else:
            del _servers[key]  # most recently used last
        _servers[key] = server
        return server


def _close_all() -> None:
    """At interpreter exit (after the Executors finished their tasks): end the servers."""
    with _servers_lock:
        if _owner_pid != os.getpid():
            return
        servers = list(_servers.values())
        _servers.clear()
    deadline = time.monotonic() + 1.0
    for server in servers:
        try:
            server._control.close()
        except OSError:
            pass
    for server in servers:
        try:
            server.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:  # it still reaps running children, then ends
            pass


atexit.register(_close_all)


def mark_broken(server: ForkServer, reason: str) -> None:
    """Stop using ``server`` (the next call starts another one)."""
    server.broken = reason
    with _servers_lock:
        if _servers.get(server.env_key) is server:
            del _servers[server.env_key]
    server.close()


# -- server side ---------------------------------------------------------------------------------


def serve(control_fd: int) -> Optional[list[str]]:
    """Run the fork server on the control socket ``control_fd``. Returns None when the server
    ends, and, in each forked child (set up as its job), the worker's argv."""
    import selectors

    # what every job imports: paid once here instead of once per call
    import executorlib.worker  # noqa: F401

    control = socket.socket(fileno=control_fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C of the client's terminal is the client's
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    children: dict[int, socket.socket] = {}
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ, "control")
    selector.register(wake_r, selectors.EVENT_READ, "wake")
    control.send(b"ready")
    closing = False
    while True:
        events = selector.select()
        for key, _ in events:
            if key.data == "wake":
                try:
                    while os.read(wake_r, 4096):
                        pass
                except (BlockingIOError, InterruptedError):
                    pass
                _reap(children)
                if closing and not children:
                    return None
                continue
            try:
                message, fds, _, _ = socket.recv_fds(control, _MAX_REQUEST, 4)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                message, fds = b"", []
            if not message:  # the client is gone (or closed us): reap the running children, end
                for fd in fds:
                    os.close(fd)
                selector.unregister(control)
                closing = True
                _reap(children)
                if not children:
                    return None
                continue
            if len(fds) != 4:
                for fd in fds:
                    os.close(fd)
                continue
            answer = socket.socket(fileno=fds[0])
            try:
                request = json.loads(message)
                pid = os.fork()
            except (OSError, ValueError) as error:
                print(f"executorlib fork server: cannot fork: {error}", file=sys.stderr)
                answer.close()
                for fd in fds[1:]:
                    os.close(fd)
                continue
            if pid == 0:
                return _become_job(request, fds, answer, control, children, selector, (wake_r, wake_w))
            for fd in fds[1:]:
                os.close(fd)
            children[pid] = answer
            try:
                answer.sendall(f"{pid}\n".encode())
            except OSError:
                pass
            _reap(children)


def _reap(children: dict[int, socket.socket]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        except InterruptedError:
            continue
        if pid == 0:
            return
        answer = children.pop(pid, None)
        if answer is None:
            continue
        try:
            answer.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
        except OSError:
            pass
        answer.close()


def _become_job(request: dict, fds: list[int], answer: socket.socket, control: socket.socket,
                children: dict, selector: Any, wake: tuple[int, int]) -> list[str]:
    """In the forked child: shed the server, become the job ``request`` describes."""
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.setsid()  # its own session and process group, as start_new_session=True
        selector.close()
        for other in children.values():
            other.close()
        children.clear()
        answer.close()
        control.close()
        for fd in wake:
            os.close(fd)
        stdin, stdout, stderr = fds[1:]
        for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
            os.dup2(fd, target)
            os.close(fd)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        if request.get("umask") is not None:
            os.umask(request["umask"])
        if sys.path and sys.path[0] == "/":  # python -m puts the start directory first
            sys.path[0] = os.getcwd()
        np_random = sys.modules.get("numpy.random")
        if np_random is not None:  # a fresh process seeds numpy's global generator from the OS
            np_random.seed()
        import executorlib.worker as worker

        sys.argv = [worker.__file__, *request["argv"]]
        return list(request["argv"])
    except BaseException as error:  # noqa: BLE001 - nothing of the server may run on in a child
        try:
            os.write(2, f"executorlib fork server: cannot set up the job: {error!r}\n".encode())
        finally:
            os._exit(2)
