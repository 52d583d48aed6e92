"""What the job-scheduler adapters share: a job script rendered with jinja2, submitted via pysqa.

A subclass names its pysqa queue type and default template, and implements the status query, the
cancel command and the MPI launch line. The template sees every key of the task's resource_dict
plus ``job_name``, ``working_directory``, ``command``, ``dependency`` (= ``dependency_list``, the
parents' job ids) and ``output`` (the log file); a user ``submission_template`` may use its own
extra keys.

A task's claim carries a tag (:attr:`JobSpec.tag`); it ends the job name, ``<name>-<tag>``, so that
a later process finds a job whose id was never recorded (the client died between the scheduler
accepting the job and the job record being written) with one listing of the user's jobs
(:meth:`Spawner.find_tagged`) and attaches to it instead of submitting a second job.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any, Iterable, Optional

from executorlib.errors import SubmissionError, missing_extra
from executorlib.spawners.base import JobSpec, Spawner

__all__ = ["BatchSpawner", "run_command", "tagged_job_name", "match_tagged"]

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"
SCRIPT_NAME = "run_queue.sh"  # the name pysqa gives the job script in the working directory
COMMAND_TIMEOUT = 120
#: what a tag may hold: it ends the job name in ``#SBATCH``/``# flux:`` lines and in squeue output
TAG_PATTERN = re.compile(r"[A-Za-z0-9_.+-]{1,64}")


def tagged_job_name(name: str, tag: str, limit: int) -> str:
    """``<name>-<tag>``, the name cut so that the whole fits ``limit`` characters (the tag is
    never cut); ``name`` alone (cut to ``limit``) without a tag."""
    if not tag:
        return name[:limit]
    if not TAG_PATTERN.fullmatch(tag):
        raise SubmissionError(
            f"job tag {tag!r} cannot end a job name: use 1 to 64 letters, digits, '_', '.', '+' or '-'")
    return f"{name[:max(limit - len(tag) - 1, 0)]}-{tag}"


def match_tagged(jobs: Iterable[tuple[str, bool, str]], tags: Iterable[str]) -> dict[str, str]:
    """tag -> job id for the (job id, active, job name) listed whose name ends with ``-<tag>``
    (or is the tag). Of several jobs with one tag, an active one wins, then the last listed."""
    wanted = {tag for tag in tags if tag}
    lengths = sorted({len(tag) for tag in wanted}, reverse=True)  # the longest match first
    found: dict[str, tuple[bool, str]] = {}
    for job_id, active, name in jobs:
        for length in lengths:
            tag = name[-length:]
            if tag in wanted and (len(name) == length or name[-length - 1] == "-"):
                if tag not in found or active or not found[tag][0]:
                    found[tag] = (active, job_id)
                break
    return {tag: job_id for tag, (_, job_id) in found.items()}


def run_command(command: list[str], cwd: Optional[str] = None, what: str = "") -> str:
    """Run a scheduler command; raise SubmissionError with its own message when it fails."""
    try:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise SubmissionError(f"{command[0]} was not found on PATH: {what or 'is the job scheduler installed'}?") from None
    except subprocess.TimeoutExpired:
        raise SubmissionError(f"'{shlex.join(command)}' did not answer within {COMMAND_TIMEOUT} s") from None
    if done.returncode != 0:
        message = (done.stderr.strip() or done.stdout.strip() or "no output")
        raise SubmissionError(f"'{shlex.join(command)}' failed with exit code {done.returncode}: {message}")
    return done.stdout


@functools.lru_cache(maxsize=32)
def _compile(text: str) -> Any:
    import jinja2

    return jinja2.Template(text)


def _pysqa_execute(commands: Any, working_directory: Optional[str] = None, split_output: bool = True,
                   shell: bool = False, error_filename: str = "pysqa.err") -> Any:
    """pysqa's ``execute_command`` hook, raising instead of returning None on failure."""
    if isinstance(commands, str):
        commands = shlex.split(commands)
    out = run_command(list(commands), cwd=working_directory)
    return out.split("\n") if split_output else out


class BatchSpawner(Spawner):
    """A spawner that submits one batch script per task through pysqa."""

    submits_with_dependencies = True
    #: while nothing changes, squeue / flux jobs at most every 30 s (reached only after ~5 minutes
    #: without a change, see executorlib.cadence); results on disk are still seen within seconds
    max_poll_interval = 30.0
    #: squeue / flux jobs at most twice a second, however many jobs change (slurmctld is shared)
    min_poll_interval = 0.5
    result_grace_period = 5.0
    #: pysqa's name of the queuing system
    queue_type: str = ""
    #: file name of the default template in executorlib/templates
    template_name: str = ""
    #: the longest job name the scheduler accepts (sbatch refuses names over 1024 characters)
    job_name_limit: int = 1024

    def __init__(self, pysqa_config_directory: Optional[str | os.PathLike] = None):
        for module in ("jinja2", "pysqa"):  # found, not imported: pysqa imports pandas (~0.6 s),
            if importlib.util.find_spec(module) is None:  # which a fully cached run never needs
                raise missing_extra(module, "submission", f"backend {self.name!r}")
        self._adapter: Any = None  # made at the first submission (make_adapter)
        if pysqa_config_directory is not None:
            from pysqa import QueueAdapter

            directory = Path(pysqa_config_directory).expanduser()
            if not directory.is_dir():
                raise ValueError(f"pysqa_config_directory {str(directory)!r} is not a directory")
            try:
                self._adapter = QueueAdapter(directory=str(directory), execute_command=_pysqa_execute)
            except Exception as error:  # noqa: BLE001 - pysqa's own message, with our context
                raise ValueError(f"pysqa_config_directory {str(directory)!r} cannot be used: {error}") from None
            self._uses_config = True
        else:
            self._uses_config = False
        self._default_template = (TEMPLATE_DIR / self.template_name).read_text()

    def check_resources(self, resources: dict) -> None:
        if self._uses_config and resources.get("submission_template"):
            raise ValueError(
                "resource_dict['submission_template'] cannot be combined with "
                "pysqa_config_directory: the job script comes from the queue's template in "
                "queue.yaml. Drop one of the two."
            )

    # -- hooks for subclasses ---------------------------------------------------------------------
    def make_adapter(self) -> Any:
        """The submitter without a pysqa_config_directory: pysqa's adapter for ``queue_type``.

        It must offer pysqa's ``submit_job(**template_variables, submission_template=...)``.
        """
        from pysqa import QueueAdapter

        return QueueAdapter(queue_type=self.queue_type, execute_command=_pysqa_execute)

    def launch_command(self, resources: dict, worker: list[str]) -> list[str]:
        """The command line inside the job: the worker, under the MPI launcher when cores > 1."""
        return worker

    def default_partition(self) -> Optional[str]:
        return None

    def template_variables(self, resources: dict) -> dict:
        """Scheduler-specific extra variables for the template (e.g. converted units)."""
        return {}

    # -- submission --------------------------------------------------------------------------------
    def context(self, job: JobSpec, dependencies: list[str]) -> dict:
        """Everything a template may use."""
        resources = job.resources
        argv = self.launch_command(resources, job.command) if job.launcher else job.command
        command = " ".join(shlex.quote(part) for part in argv)
        context = dict(resources)
        context.update(
            job_name=tagged_job_name(resources.get("job_name") or job.function_name, job.tag,
                                     self.job_name_limit),
            working_directory=str(job.task_dir),
            partition=resources.get("partition") or self.default_partition(),
            dependency=list(dependencies),
            dependency_list=list(dependencies),
            output=str(job.log_path) if job.log_path else "job.out",
            command=f"export OMP_NUM_THREADS={resources['threads_per_core']}\n{command}",
        )
        context.update(self.template_variables(resources))
        context.pop("submission_template", None)
        return context

    def _template(self, job: JobSpec) -> Any:
        """The job's template, compiled once per text (compiling costs ~6 ms, rendering ~0.03 ms)."""
        import jinja2

        text = job.resources.get("submission_template") or self._default_template
        try:
            return _compile(text)
        except jinja2.TemplateError as error:
            raise SubmissionError(f"the submission_template of task {job.key} cannot be rendered: {error}") from None

    def render(self, job: JobSpec, dependencies: list[str]) -> str:
        """The job script for ``job`` (for inspection and tests; pysqa renders the same)."""
        import jinja2

        template = self._template(job)
        try:
            return template.render(**self.context(job, dependencies))
        except jinja2.TemplateError as error:
            raise SubmissionError(f"the submission_template of task {job.key} cannot be rendered: {error}") from None

    def submit(self, job: JobSpec, dependencies: list[str]) -> str:
        context = self.context(job, dependencies)
        if " " in context["working_directory"]:
            raise SubmissionError(
                f"the cache directory path {context['working_directory']!r} contains a space, which "
                "job scripts cannot use as working directory; choose a cache_directory without spaces"
            )
        # template errors surface with a clear message; pysqa then renders the same compiled template
        self.render(job, dependencies)
        template = self._template(job)
        fixed = {k: context.pop(k) for k in ("job_name", "working_directory", "command",
                                              "dependency_list", "memory_max", "run_time_max", "cores")}
        if self._uses_config:
            # no partition given: the queue_primary of queue.yaml, not the cluster's default
            kwargs: dict[str, Any] = {"queue": job.resources.get("partition")}
        else:
            kwargs = {"submission_template": template}
        if self._adapter is None:
            self._adapter = self.make_adapter()
        try:
            job_id = self._adapter.submit_job(**fixed, **kwargs, **context)
        except SubmissionError:
            raise
        except Exception as error:  # noqa: BLE001 - pysqa's checks (queue limits, unknown queue)
            raise SubmissionError(f"pysqa refused task {job.key}: {error}") from None
        if job_id is None:
            raise SubmissionError(f"submitting task {job.key} returned no job id")
        return str(job_id)

    # -- logs --------------------------------------------------------------------------------------
    # "-o" is --output for sbatch only; in "# flux:" lines it means --setopt
    _OUTPUT_PATTERN = re.compile(
        r"^#\s*(?:SBATCH\s+(?:--output[= ]|-o\s*)|flux:\s+--output[= ])(\S+)", re.MULTILINE)

    def log_file(self, task_dir: Path, job_id: Optional[str] = None) -> Optional[Path]:
        """The job's output file, read off the submitted script (user templates choose their own)."""
        try:
            script = (task_dir / SCRIPT_NAME).read_text()
        except OSError:
            return None
        match = self._OUTPUT_PATTERN.search(script)
        if match is None:
            return None
        name = match.group(1).strip("'\"")
        if job_id is not None:
            name = name.replace("%j", job_id).replace("{{id}}", job_id)
        path = Path(name)
        return path if path.is_absolute() else task_dir / path
