"""flux: ``flux batch`` per task, ``flux jobs`` for this executor's jobs, ``flux cancel``.

The job script comes from ``templates/flux.sh.j2`` (or the user's ``submission_template``) and is
submitted through pysqa's FLUX adapter when flux-core's Python bindings import, else with the same
``flux batch run_queue.sh`` command run directly: pysqa's adapter imports ``flux.job`` at import
time, and those bindings only load next to an installed flux-core, while the ``flux`` command is
all this backend needs.

Job ids are kept as submission printed them (f58 like ``ƒ2JL``/``f2JL``, or decimal from pysqa)
and compared as integers (:func:`parse_job_id`); commands get the decimal form, which every flux
command accepts and which is plain ASCII.

flux-core is not installable on the machines this project is tested on, so its tests stop at the
command line (``tests/flux``): the scripts, the commands, the parsing of flux's answers and what the
scheduler makes of them; ``tests/flux/test_e2e_broker.py`` runs the seed's examples wherever
``flux`` is on PATH.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from executorlib.errors import MissingDependencyError, SubmissionError
from executorlib.spawners.base import JobSpec, JobStatus
from executorlib.spawners.batch import COMMAND_TIMEOUT, SCRIPT_NAME, BatchSpawner, match_tagged

__all__ = [
    "FluxSpawner",
    "FluxJob",
    "f58_encode",
    "f58_decode",
    "parse_job_id",
    "parse_flux_jobs",
    "match_jobs",
    "submitted_job_id",
    "parse_tagged",
    "flux_bindings_available",
]

#: RFC 19 F58: base58 with the bitcoin alphabet (no 0, O, I, l), most significant digit first
F58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
#: flux prints ``ƒ`` (U+0192) in a UTF-8 locale and ``f`` otherwise (or with FLUX_F58_FORCE_ASCII)
F58_PREFIXES = ("\u0192", "f")
MAX_JOB_ID = 2**64 - 1

#: states of a job that is queued or running (RFC 21); INACTIVE is the only final state
ACTIVE_STATES = {"NEW", "DEPEND", "PRIORITY", "SCHED", "RUN", "CLEANUP"}
RUNNING_STATES = {"RUN", "CLEANUP"}
#: fields of ``flux jobs --format``; the exception note may contain anything, so it comes last
JOBS_FIELDS = ("id.f58", "state", "result", "returncode", "exception.type", "exception.note")
JOBS_FORMAT = "|".join("{" + name + "}" for name in JOBS_FIELDS)
#: job ids per ``flux jobs`` call (a longer list is split into several calls)
MAX_IDS_PER_QUERY = 500
#: for find_tagged: the job name last, since a name may itself contain "|"
TAGGED_FORMAT = "{id.f58}|{state}|{name}"
#: jobs listed by find_tagged (``flux jobs`` lists 1000 unless told): the user's jobs of every state
MAX_TAGGED_LISTING = 100_000


# -- job ids ---------------------------------------------------------------------------------------
def f58_encode(job_id: int, ascii_prefix: bool = False) -> str:
    """``job_id`` in RFC 19 F58, e.g. ``1234 -> 'ƒNH'`` (``'fNH'`` with ``ascii_prefix``)."""
    if not isinstance(job_id, int) or isinstance(job_id, bool) or not 0 <= job_id <= MAX_JOB_ID:
        raise ValueError(f"a flux job id is an int from 0 to 2**64-1, got {job_id!r}")
    digits = []
    value = job_id
    while True:
        value, digit = divmod(value, 58)
        digits.append(F58_ALPHABET[digit])
        if value == 0:
            break
    return F58_PREFIXES[1 if ascii_prefix else 0] + "".join(reversed(digits))


def f58_decode(text: str) -> int:
    """The integer of an F58 job id with prefix ``ƒ`` or ``f`` (``'f2JL' -> 4369``)."""
    text = text.strip()
    if len(text) < 2 or text[0] not in F58_PREFIXES:
        raise ValueError(f"{text!r} is not an F58 flux job id: expected 'ƒ' or 'f' and base58 digits")
    value = 0
    for char in text[1:]:
        digit = F58_ALPHABET.find(char)
        if digit < 0:
            raise ValueError(
                f"{text!r} is not an F58 flux job id: {char!r} is not a base58 digit "
                f"(allowed: {F58_ALPHABET})"
            )
        value = value * 58 + digit
    if value > MAX_JOB_ID:
        raise ValueError(f"{text!r} is not an F58 flux job id: it exceeds 64 bits")
    return value


_DECIMAL = re.compile(r"[0-9]+")
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_DOTHEX = re.compile(r"[0-9a-fA-F]{1,4}(\.[0-9a-fA-F]{1,4}){3}")


def parse_job_id(text: str | int) -> int:
    """A flux job id in any form flux prints as an int: F58 (``ƒ``/``f``), decimal, ``0x`` hex or
    dotted hex (``0000.0000.0000.1111``)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        s = str(text).strip()
        if _DOTHEX.fullmatch(s):  # before F58: 'ffff.ffff.ffff.ffff' starts with an 'f' too
            value = 0
            for part in s.split("."):
                value = (value << 16) | int(part, 16)
        elif s[:1] in F58_PREFIXES:
            return f58_decode(s)
        elif _DECIMAL.fullmatch(s):
            value = int(s)
        elif _HEX.fullmatch(s):
            value = int(s, 16)
        else:
            raise ValueError(
                f"{str(text)!r} is not a flux job id: expected F58 ('ƒ2JL' or 'f2JL'), decimal "
                "('4369'), hexadecimal ('0x1111') or dotted hex ('0000.0000.0000.1111')"
            )
    if not 0 <= value <= MAX_JOB_ID:
        raise ValueError(f"{text!r} is not a flux job id: it is outside 0 .. 2**64-1")
    return value


# -- flux jobs -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FluxJob:
    """One line of ``flux jobs --format=JOBS_FORMAT``."""

    job_id: int
    state: str
    result: str = ""
    returncode: str = ""
    exception_type: str = ""
    exception_note: str = ""

    @property
    def active(self) -> bool:
        if self.state in ACTIVE_STATES:
            return True
        if self.state == "INACTIVE":
            return False
        return not self.result  # a state this module does not know: final once it has a result

    def status(self) -> JobStatus:
        """The scheduler's view: queued/running, or ended with flux's result as the state."""
        if self.active:
            return JobStatus(self.state, active=True, running=self.state in RUNNING_STATES)
        return JobStatus(self.result or self.state or "INACTIVE", active=False)

    def final_state(self) -> str:
        """flux's result with what explains it, e.g. ``'FAILED (exit code 1)'`` or
        ``'TIMEOUT (timeout exception: resource allocation expired)'``."""
        details = []
        if self.exception_type:
            detail = f"{self.exception_type} exception"
            if self.exception_note:
                detail += f": {self.exception_note}"
            details.append(detail)
        code = self.returncode
        if code and code not in ("0", "-128"):  # -128: canceled before it started
            if code.startswith("-"):
                details.append(f"killed by signal {code[1:]}")
            else:
                details.append(f"exit code {code}")
        state = self.result or self.state or "INACTIVE"
        return f"{state} ({'; '.join(details)})" if details else state


def parse_flux_jobs(output: str) -> dict[int, FluxJob]:
    """Parse ``flux jobs -n --format=JOBS_FORMAT`` output into job id (int) -> :class:`FluxJob`.

    Lines that do not start with a job id (a header, a warning) are skipped.
    """
    jobs: dict[int, FluxJob] = {}
    for line in output.splitlines():
        parts = line.strip().split("|", len(JOBS_FIELDS) - 1)
        if len(parts) < 2:
            continue
        try:
            job_id = parse_job_id(parts[0])
        except ValueError:
            continue
        parts += [""] * (len(JOBS_FIELDS) - len(parts))
        state, result, returncode, exception_type, note = (p.strip() for p in parts[1:])
        jobs[job_id] = FluxJob(job_id, state.upper(), result.upper(), returncode, exception_type, note)
    return jobs


def parse_tagged(output: str) -> list[tuple[str, bool, str]]:
    """Parse ``flux jobs -n --format=TAGGED_FORMAT`` lines into (job id as printed, active, name)."""
    jobs = []
    for line in output.splitlines():
        parts = line.strip().split("|", 2)
        if len(parts) < 3:
            continue
        try:
            parse_job_id(parts[0])
        except ValueError:
            continue
        jobs.append((parts[0], FluxJob(0, parts[1].strip().upper()).active, parts[2]))
    return jobs


def match_jobs(job_ids: list[str], found: dict[int, FluxJob]) -> dict[str, FluxJob]:
    """``found`` keyed by the caller's own spelling of each id (``'ƒ2JL'``, ``'f2JL'``, ``'4369'``
    all name the same job); ids flux did not report, or that are no flux ids, are absent."""
    matched: dict[str, FluxJob] = {}
    for job_id in job_ids:
        try:
            job = found.get(parse_job_id(job_id))
        except ValueError:
            continue
        if job is not None:
            matched[job_id] = job
    return matched


def submitted_job_id(output: str) -> Optional[str]:
    """The job id ``flux batch`` printed (its last word), as printed; None when there is none."""
    words = output.split()
    if not words:
        return None
    try:
        parse_job_id(words[-1])
    except ValueError:
        return None
    return words[-1]


# -- the flux command --------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def flux_bindings_available() -> bool:
    """True when flux-core's Python bindings import (pysqa's FLUX adapter needs them)."""
    try:
        import flux.job  # noqa: F401
    except Exception:  # noqa: BLE001 - ImportError, or a libflux-core that fails to load
        return False
    return True


def _bindings_error() -> str:
    try:
        import flux.job  # noqa: F401
    except Exception as error:  # noqa: BLE001
        return f"{type(error).__name__}: {error}"
    return ""


_NO_BROKER_HINT = (
    "is a flux instance running? Run inside a flux allocation, or start one with "
    "'flux start' (e.g. 'flux start python script.py')"
)


def run_flux(command: list[str], cwd: Optional[str] = None) -> tuple[int, str, str]:
    """Run a flux command: (exit code, stdout, stderr); SubmissionError when flux is missing."""
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, timeout=COMMAND_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise SubmissionError(
            f"'{command[0]}' was not found on PATH: backend='flux_submission' needs the flux "
            "command of flux-core and a running flux instance (flux-core comes from your cluster "
            "or conda-forge, not from pip)"
        ) from None
    except subprocess.TimeoutExpired:
        raise SubmissionError(f"'{shlex.join(command)}' did not answer within {COMMAND_TIMEOUT} s") from None
    # flux prints ids with 'ƒ' and always writes UTF-8, whatever the locale says
    return (done.returncode, done.stdout.decode("utf-8", "replace"),
            done.stderr.decode("utf-8", "replace"))


def command_failure(command: list[str], code: int, out: str, err: str) -> SubmissionError:
    message = err.strip() or out.strip() or "no output"
    text = f"'{shlex.join(command)}' failed with exit code {code}: {message}"
    if "connect" in message.lower():
        text += f"\n({_NO_BROKER_HINT})"
    return SubmissionError(text)


class FluxBatchCommand:
    """Submits a job script with ``flux batch``, as pysqa's adapter would, without flux's bindings.

    Offers pysqa's ``submit_job``: render the template, write ``run_queue.sh`` into the working
    directory, run ``flux batch run_queue.sh`` there, return the job id flux printed.
    """

    def __init__(self, spawner: "FluxSpawner"):
        self._spawner = spawner

    def submit_job(self, queue: Optional[str] = None, job_name: str = "", working_directory: str = ".",
                   cores: int = 1, memory_max: Any = None, run_time_max: Optional[int] = None,
                   dependency_list: Optional[list] = None, command: str = "",
                   submission_template: Any = None, **kwargs: Any) -> str:
        # submission_template: the jinja2.Template that BatchSpawner.submit compiled
        script = submission_template.render(
            command=command, job_name=job_name, working_directory=working_directory, cores=cores,
            memory_max=memory_max, run_time_max=run_time_max, dependency_list=dependency_list,
            **kwargs,
        )
        os.makedirs(working_directory, exist_ok=True)
        path = Path(working_directory) / SCRIPT_NAME
        path.write_text(script, encoding="utf-8")
        return self._spawner.submit_script(path)


class FluxSpawner(BatchSpawner):
    """One ``flux batch`` job per task; Future arguments become ``--dependency=afterok:``."""

    #: a job killed at its run_time_max (see Spawner.final_status)
    limit_states = {"TIMEOUT": "run_time_max"}
    name = "flux"
    queue_type = "FLUX"
    template_name = "flux.sh.j2"

    def __init__(self, pysqa_config_directory: Optional[str | os.PathLike] = None,
                 pmi_mode: Optional[str] = None):
        """``pmi_mode`` (e.g. ``"pmix"``): the PMI of the MPI ranks, ``flux run -o pmi=<pmi_mode>``
        inside the job (cores > 1; a one-core call starts no MPI ranks)."""
        self.pmi_mode = pmi_mode
        if pysqa_config_directory is not None and not flux_bindings_available():
            raise MissingDependencyError(
                "backend 'flux_submission' with a pysqa_config_directory submits through pysqa's "
                "FLUX adapter, which imports flux-core's Python bindings, and 'import flux.job' "
                f"failed ({_bindings_error()}). The bindings come with flux-core (e.g. conda "
                "install -c conda-forge flux-core); pip install 'executorlib[flux]' adds "
                "flux-python, which loads only next to a matching installed flux-core. Without a "
                "pysqa_config_directory the flux command alone is enough."
            )
        super().__init__(pysqa_config_directory)
        self._final: dict[int, str] = {}

    # -- commands (built by small methods so that tests can read them) ---------------------------
    @staticmethod
    def batch_command(script: str | os.PathLike) -> list[str]:
        return ["flux", "batch", str(script)]

    @staticmethod
    def jobs_command(job_ids: list[str | int]) -> list[str]:
        return ["flux", "jobs", "-n", f"--format={JOBS_FORMAT}", *(str(parse_job_id(j)) for j in job_ids)]

    @classmethod
    def jobs_commands(cls, job_ids: list[str | int]) -> list[list[str]]:
        """The ``flux jobs`` calls that ask for ``job_ids``: one per MAX_IDS_PER_QUERY flux ids."""
        numbers = []
        for job_id in job_ids:
            try:
                numbers.append(parse_job_id(job_id))
            except ValueError:
                continue  # not a flux job id: it stays absent
        numbers = list(dict.fromkeys(numbers))
        return [cls.jobs_command(numbers[start:start + MAX_IDS_PER_QUERY])
                for start in range(0, len(numbers), MAX_IDS_PER_QUERY)]

    @staticmethod
    def tagged_command() -> list[str]:
        """One listing of the user's jobs of every state, with their names (for find_tagged)."""
        return ["flux", "jobs", "-n", "-a", f"--count={MAX_TAGGED_LISTING}", f"--format={TAGGED_FORMAT}"]

    @staticmethod
    def cancel_command(job_ids: list[str | int]) -> list[str]:
        return ["flux", "cancel", *(str(parse_job_id(j)) for j in job_ids)]

    def run(self, command: list[str], cwd: Optional[str] = None) -> tuple[int, str, str]:
        """Run one flux command (the only place this spawner talks to flux)."""
        return run_flux(command, cwd=cwd)

    # -- job script --------------------------------------------------------------------------------
    def make_adapter(self) -> Any:
        if flux_bindings_available():
            return super().make_adapter()
        return FluxBatchCommand(self)

    @staticmethod
    def canonical_job_id(job_id: object) -> str:
        """A job id in one spelling (decimal): ``flux batch`` prints F58, a job's FLUX_JOB_ID
        may be decimal (the worker jobs of ``max_jobs`` name themselves by it)."""
        return str(parse_job_id(str(job_id)))

    def launch_command(self, resources: dict, worker: list[str]) -> list[str]:
        """``flux run`` for MPI (cores > 1): flux's PMI serves MPICH and Open MPI's flux support
        (``-o pmi=<pmi_mode>`` when a ``pmi_mode`` was given)."""
        cores = resources["cores"]
        if cores == 1:
            return worker
        launcher = ["flux", "run", "-n", str(cores), "-c", str(resources["threads_per_core"])]
        if resources.get("gpus_per_core"):
            launcher += ["-g", str(resources["gpus_per_core"])]
        if resources.get("num_nodes"):
            launcher += ["-N", str(resources["num_nodes"])]
        if self.pmi_mode is not None:  # FluxClusterExecutor(pmi_mode=...): a shell option of the ranks
            launcher += ["-o", f"pmi={self.pmi_mode}"]
        return launcher + worker

    def context(self, job: JobSpec, dependencies: list[str]) -> dict:
        """The template variables; parents' ids in decimal (ASCII, accepted by every flux), and
        ``quoted`` values for the ``# flux:`` lines (directives follow shell quoting)."""
        decimal = [str(parse_job_id(j)) for j in dependencies]
        context = super().context(job, decimal)
        context["quoted"] = {
            name: shlex.quote(str(context[name]))
            for name in ("job_name", "working_directory", "output", "partition", "account")
            if context.get(name) is not None
        }
        return context

    def check_resources(self, resources: dict) -> None:
        super().check_resources(resources)
        if resources.get("submission_template") or self._uses_config:
            return  # the user's template decides what it asks flux for
        priority = resources.get("priority")
        if priority is not None and not 0 <= priority <= 31:
            raise ValueError(
                f"resource_dict['priority'] = {priority!r} is not a flux urgency: flux takes 0 to 31 "
                "(16 is the default, a higher value runs sooner; 0 holds the job, 31 runs it first)"
            )
        nodes = resources.get("num_nodes")
        if resources.get("exclusive") and not nodes:
            raise ValueError(
                "resource_dict['exclusive'] = True needs resource_dict['num_nodes'] on backend "
                "'flux_submission': flux allocates whole nodes only together with --nodes "
                "(flux batch --exclusive requires -N). Set e.g. 'num_nodes': 1."
            )
        if nodes and nodes > resources["cores"]:
            raise ValueError(
                f"resource_dict['num_nodes'] = {nodes} is more than cores = {resources['cores']}: "
                "flux spreads the cores (slots) over the nodes and cannot give a node no slot. "
                f"Ask for at most {resources['cores']} node(s) or more cores."
            )

    # -- submission --------------------------------------------------------------------------------
    def submit_script(self, script: Path) -> str:
        """Run ``flux batch SCRIPT`` in the script's folder; the job id as flux printed it."""
        command = self.batch_command(script)
        code, out, err = self.run(command, cwd=str(script.parent))
        if code != 0:
            raise command_failure(command, code, out, err)
        job_id = submitted_job_id(out)
        if job_id is None:
            raise SubmissionError(f"'{shlex.join(command)}' printed no job id: {(out + err).strip() or 'no output'}")
        return job_id

    # -- status ------------------------------------------------------------------------------------
    def query(self, job_ids: list[str]) -> dict[int, FluxJob]:
        """What ``flux jobs`` says about ``job_ids`` (one call per MAX_IDS_PER_QUERY ids).

        Ids flux no longer knows are absent (flux reports them on stderr, not as a failure).
        """
        found: dict[int, FluxJob] = {}
        for command in self.jobs_commands(job_ids):
            code, out, err = self.run(command)
            if code != 0 and not _only_unknown_ids(err):
                raise command_failure(command, code, out, err)
            found.update(parse_flux_jobs(out))
        return found

    def states(self, job_ids: list[str]) -> dict[str, JobStatus]:
        if not job_ids:
            return {}
        states: dict[str, JobStatus] = {}
        for job_id, job in match_jobs(job_ids, self.query(job_ids)).items():
            states[job_id] = job.status()
            if not job.active:
                self._final[job.job_id] = job.final_state()
        return states

    def find_tagged(self, tags: list[str]) -> dict[str, str]:
        """The user's jobs whose name ends with ``-<tag>`` (tag -> job id as flux prints it),
        from one ``flux jobs`` listing."""
        if not any(tags):
            return {}
        command = self.tagged_command()
        code, out, err = self.run(command)
        if code != 0:
            raise command_failure(command, code, out, err)
        return match_tagged(parse_tagged(out), tags)

    def final_state(self, job_id: str) -> Optional[str]:
        try:
            number = parse_job_id(job_id)
        except ValueError:
            return None
        if number not in self._final:
            try:
                job = self.query([job_id]).get(number)
            except SubmissionError:
                return None
            if job is None or job.active:
                return None
            self._final[number] = job.final_state()
        return self._final[number]

    def cancel(self, job_ids: list[str]) -> None:
        ids = []
        for job_id in job_ids:
            try:
                ids.append(parse_job_id(job_id))
            except ValueError:
                continue
        if not ids:
            return
        command = self.cancel_command(ids)
        code, out, err = self.run(command)
        # flux cancels every listed job it can and reports the others (already inactive, or
        # unknown) one line each; only other errors count
        if code != 0 and not _only_ended_jobs(err):
            raise command_failure(command, code, out, err)

    def describe(self, job_id: str) -> str:
        try:
            return f"flux job {f58_encode(parse_job_id(job_id))}"
        except ValueError:
            return f"flux job {job_id}"


def _error_lines(stderr: str) -> list[str]:
    return [line.lower() for line in stderr.splitlines() if line.strip()]


def _only_unknown_ids(stderr: str) -> bool:
    """``flux jobs ID...`` for ids it no longer knows: ``JobID 123 unknown`` lines only."""
    lines = _error_lines(stderr)
    return bool(lines) and all(
        re.search(r"jobid \S+ unknown|unknown job", line) or "filtering options ignored" in line
        for line in lines
    )


def _only_ended_jobs(stderr: str) -> bool:
    """``flux cancel ID...`` errors only for jobs that already ended (or were purged)."""
    lines = _error_lines(stderr)
    return bool(lines) and all(
        ("inactive" in line or "unknown job" in line) and "connect" not in line for line in lines
    )
