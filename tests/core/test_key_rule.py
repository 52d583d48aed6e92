"""The key rule, both ways: what the call can read changes its key, nothing else does.

The key covers the function's code (nested code included), the values of the globals it loads,
followed through the user's own functions, classes and modules; installed modules count by name
and version; file names, line numbers, unrelated globals and imports never count (issue 14 part 1).
In-process properties run generated modules (hypothesis); a few subprocess tests cover what
only another process can show (hash seeds, script paths, a rerun after an edit).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
import types
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from executorlib.keys import compute_key

# -- generated user modules ------------------------------------------------------------------------

TEMPLATE = """\
{imports}
{padding}
{unrelated}
SCALE = {scale}


def helper(x):
    return x * SCALE + {helper_const}


def work(x, offset={default}):
    import time

    def inner(y):
        return y + {nested_const}

    started = time.monotonic()
    return inner(helper(x)) + offset + len(str(x).upper()) + math.floor(0.5) * int(started > 0)
"""

#: top-level imports a module may have besides the one it uses (math); ``time`` is also imported
#: inside ``work``: a top-level ``import time`` must not change the key
IMPORTS = ["import os", "import json", "import time", "import collections", "from functools import reduce",
           "import numpy as np"]
#: unrelated globals; ``upper`` and ``floor`` are attribute names in work's code, not globals it loads
UNRELATED_NAMES = ["upper", "floor", "monotonic", "unused", "counter"]
_modules = itertools.count()


@dataclass(frozen=True)
class Program:
    scale: int = 2
    helper_const: int = 1
    nested_const: int = 3
    default: int = 0
    imports: tuple = ()
    padding: str = ""
    unrelated: tuple = ()

    def source(self) -> str:
        imports = "\n".join(["import math", *self.imports])
        unrelated = "\n".join(f"{name} = {value!r}" for name, value in self.unrelated)
        return TEMPLATE.format(imports=imports, padding=self.padding, unrelated=unrelated, scale=self.scale,
                               helper_const=self.helper_const, nested_const=self.nested_const,
                               default=self.default)


def load(source: str, folder: str = "/srv/project") -> types.ModuleType:
    """``source`` as a user module (a file outside site-packages), under a fresh module name."""
    name = f"generated_user_module_{next(_modules)}"
    module = types.ModuleType(name)
    module.__file__ = f"{folder}/{name}.py"
    sys.modules[name] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def key_of(program: Program, x: int = 5, folder: str = "/srv/project") -> str:
    module = load(program.source(), folder)
    try:
        return compute_key(module.work, (x,), {})
    finally:
        del sys.modules[module.__name__]


values = st.integers(-10**6, 10**6)
programs = st.builds(
    Program,
    scale=values, helper_const=values, nested_const=values, default=values,
    imports=st.lists(st.sampled_from(IMPORTS), unique=True).map(tuple),
    padding=st.sampled_from(["", "\n\n\n", "# a comment above\n", "\n" * 40 + "# moved down\n"]),
    unrelated=st.lists(st.tuples(st.sampled_from(UNRELATED_NAMES), values), unique_by=lambda t: t[0]).map(tuple),
)
#: a change of what ``work`` reads: each must give another key
relevant_changes = st.sampled_from(["scale", "helper_const", "nested_const", "default", "argument"])


@settings(max_examples=60, deadline=None)
@given(programs, relevant_changes, values)
def test_what_the_call_reads_changes_the_key(program, field, value):
    base = key_of(program)
    if field == "argument":
        assert (key_of(program, x=value) == base) == (value == 5)
        return
    changed = replace(program, **{field: value})
    assert (key_of(changed) == base) == (value == getattr(program, field)), field


@settings(max_examples=60, deadline=None)
@given(programs, programs)
def test_imports_padding_unrelated_globals_and_paths_leave_the_key(first, second):
    """Only the fields that ``work`` reads are taken from ``first``: the rest (top-level imports,
    lines above, unrelated globals, the module's name and folder) comes from ``second``."""
    mixed = replace(second, scale=first.scale, helper_const=first.helper_const,
                    nested_const=first.nested_const, default=first.default)
    assert key_of(first) == key_of(mixed, folder="/home/someone/elsewhere")


def test_a_function_that_imports_inside_gets_one_key_whatever_the_module_imports():
    inside = "def sleeper(s):\n    import time\n    time.sleep(s)\n    return s\n"
    keys = {compute_key(load(prefix + inside).sleeper, (1,), {})
            for prefix in ("", "import time\n", "import time, os, json\nfrom time import sleep\n")}
    assert len(keys) == 1


# -- transitive: helpers, classes, modules, cycles ---------------------------------------------------

def test_a_helper_module_attribute_counts_by_the_names_the_code_reads(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "rule_pkg_config.py").write_text("RATE = 2\nOTHER = 1\n")
    code = ("import rule_pkg_config\n\n"
            "def at_top(x):\n    return x * rule_pkg_config.RATE\n\n"
            "def inside(x):\n    import rule_pkg_config as c\n    return x * c.RATE\n\n"
            "def from_import(x):\n    from rule_pkg_config import RATE\n    return x * RATE\n")
    module = load(code, str(tmp_path))
    config = sys.modules["rule_pkg_config"]
    names = ("at_top", "inside", "from_import")
    before = {n: compute_key(getattr(module, n), (1,), {}) for n in names}
    config.OTHER = 99  # not read: no change
    assert {n: compute_key(getattr(module, n), (1,), {}) for n in names} == before
    config.RATE = 3  # read by all three
    after = {n: compute_key(getattr(module, n), (1,), {}) for n in names}
    assert all(after[n] != before[n] for n in names)


def test_modules_imported_inside_the_function_before_the_client_imported_them(tmp_path, monkeypatch):
    """A user module imported only inside the function is followed all the same (imported for
    the key, as the job will); an installed package is not imported on the client for the key."""
    import importlib.util

    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "rule_late_config.py").write_text("RATE = 2\n")
    installed = next((name for name in ("jinja2", "h5py", "pysqa", "yaml", "markdown_it")
                      if name not in sys.modules and importlib.util.find_spec(name)), None)
    code = "def late(x):\n    import rule_late_config\n    return x * rule_late_config.RATE\n"
    if installed:
        code += f"\ndef heavy(x):\n    import {installed}\n    return x\n"
    module = load(code, str(tmp_path))
    before = compute_key(module.late, (1,), {})
    assert "rule_late_config" in sys.modules
    sys.modules["rule_late_config"].RATE = 3
    assert compute_key(module.late, (1,), {}) != before
    del sys.modules["rule_late_config"]
    if installed:
        compute_key(module.heavy, (1,), {})
        assert installed not in sys.modules


def test_recursion_and_self_referencing_classes_are_keyed_and_sensitive():
    source = textwrap.dedent("""\
        LIMIT = {limit}

        def even(n):
            return True if n == 0 else odd(n - 1)

        def odd(n):
            return False if n == 0 else even(n - 1)

        def fact(n):
            return 1 if n <= 1 else n * fact(n - 1)

        class Node:
            def __init__(self, child=None):
                self.child = child

            def depth(self):
                return 0 if self.child is None else 1 + self.child.depth()

            def limited(self):
                return Node(None) if self.depth() > LIMIT else self
        """)
    first, again, other = load(source.format(limit=3)), load(source.format(limit=3)), load(source.format(limit=4))
    for name, args in (("even", (4,)), ("fact", (5,))):
        assert compute_key(getattr(first, name), args, {}) == compute_key(getattr(again, name), args, {})
    tree = lambda m: m.Node(m.Node(m.Node()))  # noqa: E731 - an instance whose class refers to itself
    assert compute_key(first.Node.limited, (tree(first),), {}) == compute_key(again.Node.limited, (tree(again),), {})
    assert compute_key(first.Node.limited, (tree(first),), {}) != compute_key(other.Node.limited, (tree(other),), {})
    # even and odd read no constant: LIMIT is no part of their keys
    assert compute_key(first.even, (4,), {}) == compute_key(other.even, (4,), {})


def test_large_globals_count_by_content_and_only_when_loaded():
    source = "import numpy as np\nTABLE = np.arange(1_000_000, dtype=float)\nBIG = np.ones(1_000_000)\n\n" \
             "def lookup(i):\n    return TABLE[i]\n"
    first, second = load(source), load(source)
    assert compute_key(first.lookup, (3,), {}) == compute_key(second.lookup, (3,), {})
    second.BIG[7] = 5.0  # not loaded by lookup
    assert compute_key(first.lookup, (3,), {}) == compute_key(second.lookup, (3,), {})
    second.TABLE[-1] = -1.0
    assert compute_key(first.lookup, (3,), {}) != compute_key(second.lookup, (3,), {})


def test_installed_functions_count_by_name_and_version(monkeypatch):
    from importlib import metadata

    import executorlib.keys as keys

    before = compute_key(np.add, (1, 2), {})
    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "999.0" if name == "numpy" else real(name))
    keys._version.cache_clear()
    try:
        upgraded = compute_key(np.add, (1, 2), {})
    finally:
        monkeypatch.undo()
        keys._version.cache_clear()
    assert upgraded != before  # an upgrade of numpy gives new keys
    assert compute_key(np.add, (1, 2), {}) == before


# -- other processes ----------------------------------------------------------------------------------

SCRIPT = """\
{prefix}
import sys
from executorlib.keys import compute_key

WORDS = {{"alpha", "beta", "gamma", "delta"}}


class Scaler:
    factor = {factor}

    def apply(self, x):
        return sorted(WORDS)[0] * int(x * self.factor)


def work(x, scaler=Scaler()):
    return scaler.apply(x)


print(compute_key(work, (2,), {{"tags": frozenset({{"x", "y", "z"}})}}))
"""


def script_key(tmp_path: Path, name: str, prefix: str = "", factor: int = 1, seed: str = "0") -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SCRIPT.format(prefix=prefix, factor=factor))
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONHASHSEED": seed}, cwd=path.parent)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_script_keeps_its_keys_across_hash_seeds_paths_imports_and_lines(tmp_path):
    base = script_key(tmp_path, "a.py", seed="1")
    prefix = "import time\nimport json, collections\nimport numpy as np\n\n\nunrelated = {'a': 1}\n" + "\n" * 9
    assert script_key(tmp_path, "other/dir/b.py", prefix=prefix, seed="4242") == base
    assert script_key(tmp_path, "c.py", seed="7") == base
    assert script_key(tmp_path, "d.py", factor=2, seed="1") != base  # a class attribute it reads


def test_a_rerun_after_editing_a_helper_returns_the_new_value(tmp_path):
    """The issue's 22, 33, 36, 37: each edit of a constant or a helper reruns the call; a rerun
    without an edit returns the cached value, also when the script gained unrelated imports."""
    helpers = tmp_path / "rule_helpers.py"
    script = tmp_path / "run.py"
    log = tmp_path / "runs.txt"
    template = textwrap.dedent("""\
        {imports}
        import sys
        from executorlib import Executor
        import rule_helpers

        with Executor(backend="local", cache_directory=sys.argv[1]) as exe:
            print(exe.submit(rule_helpers.compute, 10, sys.argv[2]).result())
        """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}

    def run(constant: int, bump: int, imports: str = "") -> int:
        helpers.write_text(
            f"BASE = {constant}\n\ndef bump(x):\n    return x + {bump}\n\n"
            "def compute(x, log):\n    with open(log, 'a') as f:\n        f.write('ran\\n')\n"
            "    return bump(x) + BASE\n")
        script.write_text(template.format(imports=imports))
        out = subprocess.run([sys.executable, str(script), str(tmp_path / "cache"), str(log)],
                             capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
        assert out.returncode == 0, out.stderr
        return int(out.stdout.split()[-1])

    assert [run(10, 2), run(21, 2), run(21, 5), run(21, 5, imports="import time, json")] == [22, 33, 36, 36]
    assert log.read_text().count("ran") == 3  # the last run, with other imports, hit the cache
