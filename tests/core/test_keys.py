"""Cache keys: function name + hash of the call; stable across processes, sensitive to the call."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from concurrent.futures import Future
from pathlib import Path

import numpy as np

from executorlib.task import FutureRef, compute_key, fill_futures, function_name, replace_futures
from tests.core import funcs


def key(fn, *args, **kwargs) -> str:
    return compute_key(fn, args, kwargs)


def test_key_is_function_name_plus_hash():
    k = key(funcs.add_funct, 1, 2)
    name, digest = k.rsplit("_", 1)
    assert name == "add_funct"
    assert len(digest) == 32 and int(digest, 16) >= 0


def test_same_call_same_key_and_any_change_changes_it():
    base = key(funcs.add_funct, 1, 2)
    assert key(funcs.add_funct, 1, 2) == base
    assert key(funcs.add_funct, 2, 1) != base
    assert key(funcs.add_funct, 1, 2.0) != base  # 2 == 2.0, but not the same call
    assert key(funcs.add_funct, a=1, b=2) != base
    assert key(funcs.echo, 1, 2) != base


def test_keyword_order_does_not_matter():
    assert key(funcs.echo, a=1, b=[1, 2]) == key(funcs.echo, b=[1, 2], a=1)


def test_large_array_arguments_are_hashed_by_content():
    a = np.arange(200_000, dtype=float)
    b = a.copy()
    assert key(funcs.echo, a) == key(funcs.echo, b)
    b[-1] += 1
    assert key(funcs.echo, a) != key(funcs.echo, b)


def test_function_names_are_file_name_safe():
    assert function_name(lambda x: x) == "lambda"
    assert function_name(sum) == "sum"
    assert key(lambda x: x, 1).startswith("lambda_")


def test_lambdas_are_hashed_by_code():
    assert key(lambda x: x + 1, 1) == key(lambda x: x + 1, 1)
    assert key(lambda x: x + 1, 1) != key(lambda x: x + 2, 1)


def test_closure_values_are_part_of_the_key():
    def make(n):
        def add_n(x):
            return x + n

        return add_n

    assert key(make(1), 5) == key(make(1), 5)
    assert key(make(1), 5) != key(make(2), 5)


def test_futures_are_replaced_by_their_parents_key_also_nested():
    parent_a, parent_b = Future(), Future()
    parent_a._executorlib_key, parent_b._executorlib_key = "add_funct_aaa", "add_funct_bbb"
    found: dict[str, Future] = {}
    args = replace_futures(
        ([parent_a, 1], (2, parent_b), {"x": parent_a}, {frozenset({3})}),
        lambda f: f._executorlib_key,
        found,
    )
    assert found == {"add_funct_aaa": parent_a, "add_funct_bbb": parent_b}
    assert args == (
        [FutureRef("add_funct_aaa"), 1],
        (2, FutureRef("add_funct_bbb")),
        {"x": FutureRef("add_funct_aaa")},
        {frozenset({3})},
    )
    values = {"add_funct_aaa": "A", "add_funct_bbb": "B"}
    assert fill_futures(args, values.__getitem__) == (["A", 1], (2, "B"), {"x": "A"}, {frozenset({3})})
    # the key of a call on a Future is the key of the call on its parent's key
    assert compute_key(funcs.add_funct, (FutureRef("add_funct_aaa"), 1), {}) != compute_key(
        funcs.add_funct, (FutureRef("add_funct_bbb"), 1), {}
    )


# -- stability across processes --------------------------------------------------------------------

SCRIPT = """\
{padding}
import sys
from executorlib.task import compute_key


class Point:
    def __init__(self, x):
        self.x = x


def work(a, b=2):
    # a function defined in the script itself: pickled by value
    return [a + b + {constant}, Point(a).x]


print(compute_key(work, ({args},), {{"b": Point(3)}}))
"""


def run_key_script(tmp_path: Path, name: str, padding: str = "", constant: int = 1, args: str = "1",
                   hash_seed: str = "0") -> str:
    path = tmp_path / name
    path.write_text(SCRIPT.format(padding=padding, constant=constant, args=args))
    out = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONHASHSEED": hash_seed}, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_main_function_key_survives_moved_lines_and_other_file_names(tmp_path):
    first = run_key_script(tmp_path, "first.py")
    padding = textwrap.dedent("""\
        # a notebook cell or script that grew above the function
        import os


        x = 42  # unrelated code
        """) + "\n" * 7
    second = run_key_script(tmp_path, "another_name.py", padding=padding, hash_seed="12345")
    assert first.startswith("work_")
    assert first == second


def test_main_function_key_changes_with_its_code_or_arguments(tmp_path):
    base = run_key_script(tmp_path, "base.py")
    assert run_key_script(tmp_path, "code.py", constant=2) != base
    assert run_key_script(tmp_path, "args.py", args="5") != base


def test_sets_of_strings_hash_the_same_under_different_hash_seeds(tmp_path):
    args = "{'alpha', 'beta', 'gamma', 'delta', 'epsilon'}, frozenset({'x', 'y', 'z'})"
    keys = {run_key_script(tmp_path, f"s{seed}.py", args=args, hash_seed=seed) for seed in ("1", "2", "3")}
    assert len(keys) == 1
    assert keys != {run_key_script(tmp_path, "other.py", args="{'alpha', 'beta'}, frozenset()")}


def test_resources_are_not_part_of_the_key(cache_dir):
    from executorlib import Executor

    with Executor(backend="local", cache_directory=cache_dir) as exe:
        one = exe.submit(funcs.add_funct, 1, 2)
        two = exe.submit(funcs.add_funct, 1, 2, resource_dict={"threads_per_core": 2, "run_time_max": 60})
        assert one.result() == two.result() == 3
    assert one._executorlib_key == two._executorlib_key == key(funcs.add_funct, 1, 2)
    assert [p.name for p in cache_dir.iterdir() if not p.name.startswith(".")] == [one._executorlib_key]


def test_equal_looking_arguments_of_different_types_get_different_keys():
    keys = {key(funcs.echo, v) for v in [1, "1", 1.0, True, (1,), [1], {1: 1}]}
    assert len(keys) == 7


def test_functions_of_the_users_own_modules_are_keyed_by_their_code(tmp_path, monkeypatch):
    """Editing a helper module next to the script must not return the old cached result."""
    import importlib

    monkeypatch.syspath_prepend(str(tmp_path))
    module = tmp_path / "user_helpers_for_key_test.py"
    module.write_text("def work(x):\n    return x + 1\n")
    helpers = importlib.import_module("user_helpers_for_key_test")
    before = compute_key(helpers.work, (1,), {})
    module.write_text("# a comment moves the lines\n\ndef work(x):\n    return x + 1\n")
    assert compute_key(importlib.reload(helpers).work, (1,), {}) == before
    module.write_text("def work(x):\n    return x + 2\n")
    assert compute_key(importlib.reload(helpers).work, (1,), {}) != before


def test_functions_of_installed_packages_are_keyed_by_name():
    import json

    assert compute_key(json.dumps, (1,), {}) == compute_key(json.dumps, (1,), {})
    assert compute_key(np.add, (1, 2), {}).startswith("add_")


def test_futures_inside_namedtuples_and_dataclasses_become_parents_and_come_back_as_values():
    from collections import namedtuple
    from dataclasses import dataclass

    Pair = namedtuple("Pair", "left right")

    @dataclass(frozen=True)
    class Box:
        value: object
        label: str = "x"

    parent = Future()
    parent._executorlib_key = "add_funct_aaa"
    found: dict[str, Future] = {}
    plain = (Pair(1, 2), Box(3))
    assert replace_futures(plain, lambda f: f._executorlib_key, found) is plain  # nothing to replace: no copy
    args = replace_futures((Pair(parent, [parent]), Box(Pair(0, parent))), lambda f: f._executorlib_key, found)
    assert found == {"add_funct_aaa": parent}
    assert args == (Pair(FutureRef("add_funct_aaa"), [FutureRef("add_funct_aaa")]),
                    Box(Pair(0, FutureRef("add_funct_aaa"))))
    assert type(args[0]) is Pair and type(args[1]) is Box
    assert fill_futures(args, {"add_funct_aaa": 7}.__getitem__) == (Pair(7, [7]), Box(Pair(0, 7)))
    # the key of the call is computed on the references: stable, and another parent gives another key
    other = replace_futures((Pair(FutureRef("add_funct_bbb"), [FutureRef("add_funct_bbb")]), args[1]),
                            lambda f: f._executorlib_key, {})
    assert key(funcs.echo, *args) == key(funcs.echo, *args) != key(funcs.echo, *other)


def test_a_structure_that_holds_itself_is_not_followed_forever():
    loop: list = [1]
    loop.append(loop)
    assert replace_futures(loop, lambda f: "k", {}) is loop
    assert key(funcs.echo, loop) == key(funcs.echo, loop)
