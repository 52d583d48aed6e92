"""Every callable and argument that cloudpickle can carry runs and returns what the direct call returns.

Issue 13 part 1: bound, class and static methods, callable instances, ``functools.partial``,
builtins and builtin methods, lambdas, closures, nested functions and classes, dataclasses and
namedtuples (also holding Futures), and ``type(None)`` as an argument. Hypothesis draws batches of
such calls on the local flavours; on SLURM a few fixed calls (each is a job) cover the same kinds.
"""

from __future__ import annotations

import functools
import operator
from collections import namedtuple
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conformance.conftest import flavours


class Model:
    def __init__(self, k: int) -> None:
        self.k = k

    def predict(self, x: int) -> int:
        return self.k * x

    @classmethod
    def scaled(cls, k: int, x: int) -> int:
        return cls(k).predict(x)

    @staticmethod
    def double(x: int) -> int:
        return 2 * x

    def __call__(self, x: int) -> int:
        return self.k + x


@dataclass(frozen=True)
class Affine:
    a: int
    b: int

    def __call__(self, x: int) -> int:
        return self.a * x + self.b


Pair = namedtuple("Pair", "left right")


def evaluate(affine: Affine, x: int) -> int:
    return affine(x)


def pair_sum(pair: Pair) -> Any:
    return pair.left + pair.right


def type_name(kind: type) -> str:
    return kind.__name__


def identity(x: Any) -> Any:
    return x


def make_adder(k: int) -> Callable[[int], int]:
    def add_k(x: int) -> int:  # a closure: pickled by value
        return x + k

    return add_k


def make_nested() -> Callable[[int], int]:
    def triple(x: int) -> int:  # a nested function without a closure
        return 3 * x

    return triple


def make_local_class(k: int) -> Any:
    class Local:  # a class defined in a function: pickled by value, also in the key
        def __init__(self, k: int) -> None:
            self.k = k

        def __call__(self, x: int) -> int:
            return self.k - x

    return Local(k)


class Later:
    """An argument given as a Future: the test submits ``identity(value)`` and passes its Future."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Later({self.value!r})"


ints = st.integers(-1000, 1000)
small = st.integers(1, 50)
words = st.lists(st.text("abc", max_size=3), max_size=4)

CALLS = st.one_of(
    st.builds(lambda k, x: (Model(k).predict, (x,)), ints, ints),  # bound method
    st.builds(lambda n, d, m: (Fraction(n, d).limit_denominator, (m,)), ints, small, small),  # builtin bound
    st.builds(lambda k, x: (Model.scaled, (k, x)), ints, ints),  # classmethod
    st.builds(lambda x: (Model.double, (x,)), ints),  # staticmethod
    st.builds(lambda k, x: (Model(k), (x,)), ints, ints),  # callable instance
    st.builds(lambda k, x: (functools.partial(operator.mul, k), (x,)), ints, ints),  # partial
    st.builds(lambda a, b: (max, (a, b)), ints, ints),  # builtin
    st.builds(lambda a, b: (divmod, (a, b)), ints, small),
    st.builds(lambda w: ("-".join, (w,)), words),  # builtin method
    st.builds(lambda w, x: ([*w, x].count, (x,)), words, st.text("abc", max_size=2)),
    st.builds(lambda k, x: (lambda y, k=k: y * k + 1, (x,)), ints, ints),  # lambda
    st.builds(lambda k, x: ((lambda y: y - k), (x,)), ints, ints),  # lambda closing over k
    st.builds(lambda k, x: (make_adder(k), (x,)), ints, ints),  # closure
    st.builds(lambda x: (make_nested(), (x,)), ints),  # nested function
    st.builds(lambda k, x: (make_local_class(k), (x,)), ints, ints),  # instance of a local class
    st.builds(lambda a, b, x: (Affine(a, b), (x,)), ints, ints, ints),  # dataclass as the callable
    st.builds(lambda a, b, x: (evaluate, (Affine(a, b), x)), ints, ints, ints),  # dataclass argument
    st.builds(lambda a, b: (pair_sum, (Pair(a, b),)), ints, ints),  # namedtuple argument
    st.builds(lambda a, b: (pair_sum, (Pair(Later(a), b),)), ints, ints),  # namedtuple with a Future
    st.builds(lambda a, b, x: (evaluate, (Affine(Later(a), b), Later(x))), ints, ints, ints),  # dataclass too
    st.just((type_name, (type(None),))),  # NoneType as an argument
    st.just((identity, (type(None),))),
)


def submitted(exe: Any, arg: Any) -> Any:
    """``arg`` as submitted: each Later becomes a Future of ``identity(value)``."""
    if isinstance(arg, Later):
        return exe.submit(identity, arg.value)
    if isinstance(arg, Pair):
        return Pair(*(submitted(exe, a) for a in arg))
    if isinstance(arg, Affine):
        return Affine(submitted(exe, arg.a), submitted(exe, arg.b))
    return arg


def direct(arg: Any) -> Any:
    """``arg`` for the direct call: each Later becomes its value."""
    if isinstance(arg, Later):
        return arg.value
    if isinstance(arg, Pair):
        return Pair(*(direct(a) for a in arg))
    if isinstance(arg, Affine):
        return Affine(direct(arg.a), direct(arg.b))
    return arg


def check_calls(exe: Any, calls: list, timeout: float) -> None:
    futures = [exe.submit(fn, *(submitted(exe, a) for a in args)) for fn, args in calls]
    for (fn, args), future in zip(calls, futures):
        expected = fn(*(direct(a) for a in args))
        assert future.result(timeout=timeout) == expected, (fn, args)


def test_generated_calls_return_what_the_direct_call_returns(flavour):
    with flavour.executor(max_workers=2) as exe:

        @settings(max_examples=6, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow])
        @given(st.lists(CALLS, min_size=1, max_size=4))
        def check(calls: list) -> None:
            check_calls(exe, calls, flavour.timeout)

        check()


def test_every_kind_runs_once_each(flavour):
    """Hypothesis may not draw every kind in a few examples: each kind once, fixed."""
    calls = [
        (Model(3).predict, (2,)), (Fraction(1, 3).limit_denominator, (10,)), (Model.scaled, (2, 5)),
        (Model.double, (4,)), (Model(3), (4,)), (functools.partial(pow, 2), (5,)), (max, (1, 7)),
        ("+".join, (["a", "b"],)), (lambda y: y * 2, (3,)), (make_adder(5), (1,)), (make_nested(), (2,)),
        (make_local_class(9), (4,)), (Affine(2, 1), (5,)), (evaluate, (Affine(3, 0), 2)),
        (pair_sum, (Pair(Later(1), 2),)), (evaluate, (Affine(Later(2), 1), Later(3))),
        (type_name, (type(None),)), (identity, (type(None),)),
    ]
    with flavour.executor(max_workers=2) as exe:
        check_calls(exe, calls, flavour.timeout)


@flavours("slurm")
def test_the_callable_kinds_run_as_slurm_jobs(flavour):
    """Eight jobs: a bound method, a builtin bound method, a dataclass instance as the callable,
    a closure, a partial, NoneType as an argument, and a namedtuple holding a Future (two jobs)."""
    calls = [
        (Model(3).predict, (2,)), (Fraction(1, 3).limit_denominator, (10,)), (Affine(2, 1), (5,)),
        (make_adder(5), (1,)), (functools.partial(pow, 2), (5,)), (type_name, (type(None),)),
        (pair_sum, (Pair(Later(1), 2),)),
    ]
    with flavour.executor() as exe:
        check_calls(exe, calls, flavour.timeout)
