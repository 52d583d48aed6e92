"""Sphinx extension: the ``resource_dict`` reference table, generated from the code.

``executorlib.resources.RESOURCE_KEYS`` is the one list of valid keys with their defaults, allowed
values and meaning; this module adds what each key does on each backend. The directive::

    ```{resource-table}
    ```

renders one row per key. The build fails when a key of ``RESOURCE_KEYS`` has no entry in
:data:`BACKEND_NOTES` or an entry names a key that no longer exists, so the table cannot drift
from the code. ``tests/docs/test_resource_table.py`` checks the same without building the docs.

Inline ``code`` in the notes is written with backticks.
"""

from __future__ import annotations

import re
from typing import Any

#: key -> (SLURM: backend="slurm_submission", flux: backend="flux_submission", backend="local")
BACKEND_NOTES: dict[str, tuple[str, str, str]] = {
    "cores": (
        "`#SBATCH --ntasks`; with cores > 1 the worker runs under `srun -n <cores>` "
        "(`--mpi=pmi2` unless `slurm_cmd_args` names an `--mpi` option)",
        "`# flux: --nslots`; with cores > 1 the worker runs under `flux run -n <cores>`",
        "cores > 1 runs the worker under `mpiexec -n <cores>`; counts against `max_cores`",
    ),
    "threads_per_core": (
        "`#SBATCH --cpus-per-task` and `srun -c`; `OMP_NUM_THREADS` is exported",
        "`# flux: --cores-per-slot` and `flux run -c`; `OMP_NUM_THREADS` is exported",
        "`OMP_NUM_THREADS` only (no CPU binding)",
    ),
    "gpus_per_core": (
        "`#SBATCH --gpus-per-task` (omitted when 0)",
        "`# flux: --gpus-per-slot` and `flux run -g` (omitted when 0)",
        "ignored",
    ),
    "cwd": (
        "the worker changes into this directory before calling the function",
        "the same",
        "the same",
    ),
    "run_time_max": (
        "`#SBATCH --time=<minutes>:<seconds>`, which SLURM rounds up to whole minutes; at the limit "
        "SLURM kills the job and the Future raises `JobFailedError` with state `TIMEOUT`",
        "`# flux: --time-limit=<seconds>s`",
        "the process is killed at the limit; the Future raises `JobFailedError` (state `TIMEOUT`)",
    ),
    "memory_max": (
        "`#SBATCH --mem`: a number is GB (`4` -> `4G`, `0.5` -> `512M`), a string is passed as "
        "written (`'500M'`)",
        "not in the built-in flux job script; use a `submission_template`",
        "ignored",
    ),
    "partition": (
        "`#SBATCH --partition`; default: the partition `sinfo` marks as default (`*`); with a "
        "`pysqa_config_directory` it names the pysqa queue",
        "`# flux: --queue`; default: the instance's default queue",
        "ignored",
    ),
    "account": ("`#SBATCH --account`", "`# flux: --bank`", "ignored"),
    "qos": ("`#SBATCH --qos`", "ignored", "ignored"),
    "exclusive": (
        "`#SBATCH --exclusive`",
        "`# flux: --exclusive`; needs `num_nodes`",
        "ignored",
    ),
    "num_nodes": (
        "`#SBATCH --nodes`",
        "`# flux: --nodes` and `flux run -N`; at most `cores`",
        "ignored",
    ),
    "job_name": (
        "`#SBATCH --job-name`; default: the function's name",
        "`# flux: --job-name`; default: the function's name",
        "ignored",
    ),
    "slurm_cmd_args": (
        "extra arguments of the `srun` line, e.g. `['--mpi=pmix']`; given for a one-core task, that "
        "task runs under `srun` too",
        "ignored",
        "ignored",
    ),
    "submission_template": (
        "a jinja2 job script replacing the built-in one (see the submission mode page); unknown "
        "`resource_dict` keys become template variables; not with a `pysqa_config_directory`",
        "the same, for the flux job script",
        "ignored",
    ),
    "openmpi_oversubscribe": (
        "ignored",
        "ignored",
        "adds `--oversubscribe` to the `mpiexec` line (Open MPI)",
    ),
    "priority": (
        "`#SBATCH --nice=<priority>` (a higher value runs later; a negative one needs an operator)",
        "`# flux: --urgency=<priority>`, 0 to 31 (16 is flux's default, a higher value runs sooner)",
        "`ValueError` (no job scheduler; also inside an allocation)",
    ),
    "cache_key": (
        "the task's folder and key in the cache (the client's)",
        "the same",
        "the same; also with the temporary cache",
    ),
    "error_log_file": (
        "a failed call's exception and traceback are appended by the client",
        "the same",
        "the same",
    ),
    "cache_directory": (
        "the call goes to an executor on that cache with the same settings (the client's); its job's "
        "task folder and result are there",
        "the same",
        "the same (its own `max_workers`/`max_cores`); `ValueError` with `block_allocation=True`",
    ),
    "max_retries": (
        "a job that ended `NODE_FAIL`, `BOOT_FAIL`, `PREEMPTED`, or `FAILED`/`CANCELLED` with reason "
        "`NodeDown`, or that was requeued and vanished, is submitted again after 10 s, 20 s, 40 s, ... "
        "(at most 300 s); never `TIMEOUT`, `OUT_OF_MEMORY`, a cancellation, an exception or a crash",
        "accepted; flux's endings are not classified yet, so nothing is retried",
        "accepted; a local process's death is never the cluster's, so nothing is retried "
        "(also inside an allocation)",
    ),
}

_COLUMNS = ("Key", "Default", "Meaning and allowed values", "SLURM", "flux", "local")
_WIDTHS = (12, 8, 26, 22, 16, 16)


def check_coverage(resource_keys: Any) -> list[str]:
    """Problems between ``RESOURCE_KEYS`` and :data:`BACKEND_NOTES` (empty when they match)."""
    problems = []
    for key in resource_keys:
        if key not in BACKEND_NOTES:
            problems.append(f"resource key {key!r} has no row in docs/_ext/resource_table.py BACKEND_NOTES")
    for key in BACKEND_NOTES:
        if key not in resource_keys:
            problems.append(f"BACKEND_NOTES names {key!r}, which is not in executorlib.resources.RESOURCE_KEYS")
    return problems


def _inline(text: str) -> list:
    """Text with `code` spans as docutils nodes."""
    from docutils import nodes

    parts = re.split(r"`([^`]*)`", text)
    result: list = []
    for i, part in enumerate(parts):
        if i % 2:
            result.append(nodes.literal(part, part))
        elif part:
            result.append(nodes.Text(part))
    return result


def _cell(content: list) -> Any:
    from docutils import nodes

    entry = nodes.entry()
    paragraph = nodes.paragraph()
    paragraph.extend(content)
    entry += paragraph
    return entry


def build_table() -> Any:
    """The docutils table node of every resource key."""
    from docutils import nodes
    from sphinx.errors import ExtensionError

    from executorlib.resources import RESOURCE_KEYS

    problems = check_coverage(RESOURCE_KEYS)
    if problems:
        raise ExtensionError("the resource_dict table is out of date:\n" + "\n".join(problems))

    table = nodes.table(classes=["resource-table"])
    group = nodes.tgroup(cols=len(_COLUMNS))
    table += group
    for width in _WIDTHS:
        group += nodes.colspec(colwidth=width)
    head = nodes.thead()
    row = nodes.row()
    for title in _COLUMNS:
        row += _cell([nodes.Text(title)])
    head += row
    group += head
    body = nodes.tbody()
    for name, spec in RESOURCE_KEYS.items():
        slurm, flux, local = BACKEND_NOTES[name]
        default = repr(list(spec.default) if isinstance(spec.default, tuple) else spec.default)
        row = nodes.row(ids=[f"resource-{name.replace('_', '-')}"])
        row += _cell([nodes.literal(name, name)])
        row += _cell([nodes.literal(default, default)])
        row += _cell(_inline(f"{spec.help}. Allowed: {spec.allowed}."))
        row += _cell(_inline(slurm))
        row += _cell(_inline(flux))
        row += _cell(_inline(local))
        body += row
    group += body
    return table


def setup(app: Any) -> dict:
    from sphinx.util.docutils import SphinxDirective

    class ResourceTable(SphinxDirective):
        """``{resource-table}``: the generated resource_dict reference table."""

        has_content = False

        def run(self) -> list:
            return [build_table()]

    app.add_directive("resource-table", ResourceTable)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
