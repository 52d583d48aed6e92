"""Functions the conformance tests submit (importable, so that jobs unpickle them by reference)."""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path
from typing import Any


def add(a: Any, b: Any) -> Any:
    return a + b


def identity(x: Any) -> Any:
    return x


def draw(tag: Any = None) -> float:
    """A random number: two runs give two values (``tag`` only changes the call)."""
    return random.random()


def sleep_return(seconds: float, value: Any = None) -> Any:
    time.sleep(seconds)
    return value


def sleep_raise(seconds: float, message: str) -> None:
    time.sleep(seconds)
    raise ConformanceError(message)


def wait_for_file(path: str, value: Any = None, timeout: float = 120.0) -> Any:
    """Block until ``path`` exists (a task the test releases), then return ``value``."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} was not created within {timeout} s")
        time.sleep(0.02)
    return value


def touch_and_wait(started: str, release: str, value: Any = None, timeout: float = 120.0) -> Any:
    """Create ``started`` (the task runs), then block until ``release`` exists."""
    Path(started).touch()
    return wait_for_file(release, value, timeout)


class ConformanceError(ValueError):
    """A user-defined exception type that must come back as itself."""


class CustomBaseException(BaseException):
    """A BaseException subclass that is not an Exception."""


def raise_value_error(message: str) -> None:
    raise ValueError(message)


def raise_custom(message: str) -> None:
    raise ConformanceError(message)


def raise_base(message: str) -> None:
    raise CustomBaseException(message)


def raise_keyboard_interrupt() -> None:
    raise KeyboardInterrupt("stop")


def call_exit(code: Any) -> None:
    sys.exit(code)


def fail_if_negative(x: int) -> int:
    if x < 0:
        raise ValueError(f"negative: {x}")
    return x * 10


def capture(*args: Any, **kwargs: Any) -> tuple:
    """What the call received: (args, kwargs)."""
    return args, kwargs


def touch(path: str, value: Any = None) -> Any:
    """Create ``path`` (proof that the task ran), return ``value``."""
    Path(path).touch()
    return value


def sleep_touch(seconds: float, path: str, value: Any = None) -> Any:
    time.sleep(seconds)
    return touch(path, value)


def _raise_unpickling_error(message: str) -> None:
    import pickle

    raise pickle.UnpicklingError(message)


def _raise_base_on_load(message: str) -> None:
    raise CustomBaseException(message)


class FailsOnLoad:
    """Pickles fine; unpickling it raises ``error`` (``"unpickling"`` or ``"base"``)."""

    def __init__(self, error: str) -> None:
        self.error = error

    def __reduce__(self):
        loader = _raise_unpickling_error if self.error == "unpickling" else _raise_base_on_load
        return loader, (f"the user's own object refuses to load ({self.error})",)


def make_fails_on_load(error: str) -> FailsOnLoad:
    """A result whose unpickling in the client raises (see ``FailsOnLoad``)."""
    return FailsOnLoad(error)


class RefusesPickling:
    """An argument whose pickling raises ``pickle.PicklingError``."""

    def __reduce__(self):
        import pickle

        raise pickle.PicklingError("RefusesPickling cannot be pickled, on purpose")


class Holder:
    """An object whose bound method is submitted (the call carries the instance)."""

    def method(self) -> str:
        return "held"


def say(text: str) -> str:
    """Print ``text`` to stdout and stderr (print debugging), return it."""
    print(f"out: {text}", flush=True)
    print(f"err: {text}", file=sys.stderr, flush=True)
    return text
