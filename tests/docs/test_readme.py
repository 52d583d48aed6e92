"""Every ```python block of README.md runs, in order, in a fresh Python process in a temp directory.

Conventions for README.md (an HTML comment on the line(s) right above the opening fence):

- ``<!-- skip-test -->``: the block is not run (pseudo-code, output examples, GPUs...);
- ``<!-- slurm -->``: the block needs a SLURM cluster; it runs only where one answers, else the
  test is skipped with the reason (and fails under ``EXECUTORLIB_REQUIRE_SLURM=1``).

Blocks share one namespace, like cells of a notebook: a block may use what an earlier block
defined. The blocks without a marker must also run on their own, without the SLURM blocks, so
definitions that later local blocks use belong in blocks without the ``slurm`` marker. Only
fences opened with exactly ``python`` count; ```bash and ```text blocks are never run.

A failing block reports its own README.md line numbers in the traceback.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.docs.conftest import require_slurm

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
SKIP_MARKER = "<!-- skip-test -->"
SLURM_MARKER = "<!-- slurm -->"
LOCAL_TIMEOUT = 300
SLURM_TIMEOUT = 1200

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")

# Executes the blocks in the runner's own __main__ namespace, compiled with the README's path and
# padded to their line numbers, so that tracebacks quote README.md itself.
RUNNER = textwrap.dedent(
    """\
    import json as _json
    import sys as _sys

    _readme, _blocks = _json.load(open(_sys.argv[1]))
    for _line, _code in _blocks:
        print(f"[test_readme] running the block at README.md line {_line}", file=_sys.stderr, flush=True)
        exec(compile("\\n" * (_line - 1) + _code, _readme, "exec"), globals())
    """
)


@dataclass(frozen=True)
class Block:
    """One ```python block: the line of its first code line, its code and its markers."""

    line: int
    code: str
    skip: bool
    slurm: bool


def extract_blocks(text: str) -> list[Block]:
    """The ```python blocks of a markdown text, with the markers written above each."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        fence, indent = match.group("fence"), len(match.group("indent"))
        start = i + 1
        end = start
        closing = re.compile(r"^ {0,3}" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}\s*$")
        while end < len(lines) and not closing.match(lines[end]):
            end += 1
        if match.group("info") == "python":
            markers = set()
            j = i - 1
            while j >= 0 and (not lines[j].strip() or lines[j].strip().startswith("<!--")):
                if lines[j].strip():
                    markers.add(lines[j].strip())
                j -= 1
            body = [line[indent:] if line[:indent].strip() == "" else line for line in lines[start:end]]
            blocks.append(Block(start + 1, "\n".join(body) + "\n", SKIP_MARKER in markers, SLURM_MARKER in markers))
        i = end + 1
    return blocks


def run_blocks(readme: Path, blocks: list[Block], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """Run ``blocks`` in order in one fresh Python process with working directory ``cwd``."""
    spec = cwd / ".readme_blocks.json"
    spec.write_text(json.dumps([str(readme), [[b.line, b.code] for b in blocks]]))
    runner = cwd / ".readme_runner.py"
    runner.write_text(RUNNER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("MPLBACKEND", "Agg")
    return subprocess.run([sys.executable, str(runner), str(spec)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _check(done: subprocess.CompletedProcess, what: str) -> None:
    if done.returncode != 0:
        pytest.fail(f"{what} failed (exit code {done.returncode}).\n--- stdout ---\n{done.stdout}\n"
                    f"--- stderr ---\n{done.stderr}", pytrace=False)


# -- the convention, tested on a sample README --------------------------------------------------
SAMPLE = """\
# Sample

```python
def double(x):
    return 2 * x

with open("made_by_block_1.txt", "w") as f:
    f.write("1")
```

Text between blocks.

<!-- skip-test -->
```python
raise RuntimeError("a skipped block must not run")
```

```bash
echo "not python, never run"
```

<!-- slurm -->

```python
print("slurm block", double(21))
```

````markdown
```python
raise RuntimeError("python inside another fence is not a block")
```
````

1. A list item with an indented block:

   ```python
   print("value", double(4))
   ```
"""


def test_extract_blocks_reads_markers_and_line_numbers() -> None:
    blocks = extract_blocks(SAMPLE)
    assert [(b.line, b.skip, b.slurm) for b in blocks] == [(4, False, False), (15, True, False),
                                                           (25, False, True), (37, False, False)]
    assert blocks[0].code.startswith("def double(x):\n")
    assert blocks[3].code == 'print("value", double(4))\n'  # the list indentation is removed
    assert "skipped block" in blocks[1].code


def test_sample_blocks_run_in_order_in_a_temp_directory(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(SAMPLE)
    work = tmp_path / "work"
    work.mkdir()
    blocks = [b for b in extract_blocks(SAMPLE) if not b.skip and not b.slurm]
    done = run_blocks(readme, blocks, work, LOCAL_TIMEOUT)
    _check(done, "the sample README")
    assert done.stdout.splitlines() == ["value 8"]  # block 4 used block 1's function
    assert (work / "made_by_block_1.txt").read_text() == "1"
    assert not (REPO_ROOT / "made_by_block_1.txt").exists()


def test_a_failing_block_fails_with_its_readme_line(tmp_path: Path) -> None:
    text = "# Broken\n\n```python\nx = 1\n```\n\n```python\ny = x + 1\nassert y == 3, 'y is wrong'\n```\n"
    readme = tmp_path / "README.md"
    readme.write_text(text)
    done = run_blocks(readme, extract_blocks(text), tmp_path, LOCAL_TIMEOUT)
    assert done.returncode != 0
    assert f'File "{readme}", line 9' in done.stderr
    assert "AssertionError: y is wrong" in done.stderr
    assert "block at README.md line 8" in done.stderr


# -- the project's README ----------------------------------------------------------------------
def _readme_blocks() -> list[Block]:
    assert README.is_file(), f"{README} is missing"
    blocks = extract_blocks(README.read_text())
    assert blocks, "README.md has no ```python block"
    return blocks


def test_readme_local_blocks(tmp_path: Path) -> None:
    """The blocks that need no SLURM (all unmarked blocks), in order."""
    blocks = [b for b in _readme_blocks() if not b.skip and not b.slurm]
    if not blocks:
        pytest.skip("README.md has no python block that runs without SLURM")
    _check(run_blocks(README, blocks, tmp_path, LOCAL_TIMEOUT), "README.md's blocks without SLURM")


@pytest.mark.slurm
@pytest.mark.timeout(SLURM_TIMEOUT + 60)
def test_readme_all_blocks(tmp_path: Path) -> None:
    """Every block that is not skipped, SLURM blocks included, in order."""
    blocks = [b for b in _readme_blocks() if not b.skip]
    if not any(b.slurm for b in blocks):
        pytest.skip("README.md has no block marked <!-- slurm -->")
    require_slurm()
    _check(run_blocks(README, blocks, tmp_path, SLURM_TIMEOUT), "README.md's blocks with SLURM")
