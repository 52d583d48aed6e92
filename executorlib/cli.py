"""The cache command line: ``executorlib`` or ``python -m executorlib``.

    executorlib list   CACHE_DIR [--state STATE ...]
    executorlib show   CACHE_DIR KEY
    executorlib cancel CACHE_DIR [KEY ...]
    executorlib clean  CACHE_DIR [--state STATE ...] [--older-than AGE] [--key KEY ...] [--all]
                       [--grace AGE] [--dry-run] [--force] [--verbose]

Output is for people; ``--json`` prints the same as JSON for scripts. Exit codes: 0 done, 1 nothing
matched or an error, 2 wrong usage. KEY may be a unique prefix of a task key. Imports only the
standard library until a command runs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import Any, Callable, Optional, Sequence

__all__ = ["main"]

STATES = ("pending", "running", "done", "failed", "cancelled")  # as executorlib.cache.STATES
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class _Failure(Exception):
    """An error for the user: printed without a traceback, exit code 1."""


# -- formatting ----------------------------------------------------------------------------------
def parse_age(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``12h``, ``2d``, ``1w`` -> seconds (for ``--older-than``)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([smhdw]?)\s*", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(
            f"invalid age {text!r}: use a number with an optional unit s, m, h, d or w, e.g. 2d or 12h")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _size(n: Optional[int]) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    return f"{hours // 24}d {hours % 24:02d}h"


def _when(stamp: Optional[float]) -> str:
    return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(row[i])) for row in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(header, widths)).rstrip()]
    for row in rows:
        lines.append("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
    return "\n".join(lines)


def _summary(records: list[dict]) -> str:
    counts: dict[str, int] = {}
    for record in records:
        counts[record["state"]] = counts.get(record["state"], 0) + 1
    parts = [f"{counts[s]} {s}" for s in STATES if s in counts]
    return f"{len(records)} task(s): " + ", ".join(parts)


def _short_repr(value: Any, limit: int = 400) -> str:
    import reprlib

    shortener = reprlib.Repr()
    shortener.maxlevel, shortener.maxstring, shortener.maxother = 3, 80, 80
    shortener.maxlist = shortener.maxtuple = shortener.maxdict = shortener.maxset = 8
    try:
        text = shortener.repr(value)
    except Exception as error:  # noqa: BLE001 - a broken __repr__
        text = f"<{type(value).__name__}, repr failed: {error}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


# -- helpers ---------------------------------------------------------------------------------------
def _resolve_keys(cache_directory: str, wanted: Sequence[str], store: Any = None) -> list[str]:
    """Full keys for ``wanted`` (exact keys or unique prefixes); _Failure names those that match
    nothing or several tasks."""
    from executorlib.store import TaskStore

    known = (store or TaskStore(cache_directory, create=False)).keys()
    known_set = set(known)
    keys, problems = [], []
    for key in wanted:
        if key in known_set:
            keys.append(key)
            continue
        matches = [k for k in known if k.startswith(key)]
        if len(matches) == 1:
            keys.append(matches[0])
        elif not matches:
            problems.append(f"no task {key!r} in {cache_directory} (see: executorlib list {cache_directory})")
        else:
            problems.append(f"{key!r} matches {len(matches)} tasks: {', '.join(matches[:5])}"
                            f"{', ...' if len(matches) > 5 else ''}; give more of the key")
    if problems:
        raise _Failure("\n".join(problems))
    return keys


def _records_table(records: list[dict]) -> str:
    rows = [[r["key"], r["function"], r["state"], r["job_id"] or "-", _duration(r["runtime"]), _size(r["size"])]
            for r in records]
    return _table(rows, ["KEY", "FUNCTION", "STATE", "JOB ID", "RUN TIME", "SIZE"])


# -- commands --------------------------------------------------------------------------------------
def _cmd_list(args: argparse.Namespace) -> int:
    from executorlib.cache import LAZY_FIELDS, get_cache_data

    # the call's arguments and result are not listed: they would be unpickled
    records = [{k: v for k, v in dict.items(r) if k not in LAZY_FIELDS}
               for r in get_cache_data(args.cache_dir, query=not args.no_query)]
    if args.state:
        records = [r for r in records if r["state"] in args.state]
    if args.json:
        _print_json(records)
    elif records:
        print(_records_table(records))
        print(_summary(records))
    else:
        which = f" in state {', '.join(args.state)}" if args.state else ""
        print(f"no tasks{which} in {args.cache_dir}", file=sys.stderr)
    return 0 if records else 1


def _cmd_show(args: argparse.Namespace) -> int:
    import warnings

    from executorlib.cache import _collect
    from executorlib.scheduler import log_tail
    from executorlib.store import TaskStore, read_task_arguments

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = TaskStore(args.cache_dir, create=False)
    for warning in caught:
        warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    trusted = not caught  # only unpickle from a cache that no one else can write to
    (key,) = _resolve_keys(args.cache_dir, [args.key], store)
    record = _collect(store, [key], True)[0][0]
    details: dict[str, Any] = dict(record)
    try:
        info = store.read_task_info(key)
        details["resources"], details["parents"] = info["resources"], info["parents"]
    except Exception as error:  # noqa: BLE001 - missing or corrupt task file: say so, go on
        details["resources"] = details["parents"] = None
        details["task_problem"] = f"{type(error).__name__}: {error}"
    if not trusted:
        details["arguments"] = "(not loaded: other users can write to this cache, and loading it could run their code)"
    else:
        try:
            call_args, call_kwargs = read_task_arguments(store, key)
            details["arguments"] = f"args={_short_repr(call_args)} kwargs={_short_repr(call_kwargs)}"
        except FileNotFoundError:
            details["arguments"] = "(no task file)"
        except Exception as error:  # noqa: BLE001 - e.g. a class that does not import here
            details["arguments"] = f"(cannot be loaded here: {type(error).__name__}: {error})"
    from executorlib.claims import read_job

    details["attempts"] = (read_job(store, key) or {}).get("attempts") or []  # jobs the cluster lost
    details["result"] = None
    if record["state"] == "done" and trusted:
        try:
            details["result"] = _short_repr(store.read_result(key).value)
        except Exception as error:  # noqa: BLE001
            details["result"] = f"(cannot be loaded here: {type(error).__name__}: {error})"
    try:
        result_info = store.read_result_info(key)
    except Exception:  # noqa: BLE001 - already reported in the record's error
        result_info = None
    details["traceback"] = (result_info or {}).get("traceback") or None
    log_path = store.job_log(key)
    details["log"] = str(log_path)
    details["log_tail"] = log_tail(log_path, lines=20) or None
    if args.json:
        _print_json(details)
        return 0
    job = "-"
    if record["job_id"]:
        job = f"{record['job_id']} ({record['backend']}" + (f", {record['job_state']})" if record["job_state"] else ")")
    lines = [
        ("key", key), ("function", record["function"]), ("state", record["state"]), ("job", job),
        ("created", _when(record["created"])), ("submitted", _when(record["submitted"])),
        ("finished", _when(record["finished"])), ("run time", _duration(record["runtime"])),
        ("size", _size(record["size"])), ("folder", record["path"]),
        ("resources", json.dumps(details["resources"]) if details["resources"] is not None else "-"),
        ("parents", ", ".join(details["parents"]) if details["parents"] else "-"),
        ("arguments", details["arguments"]),
    ]
    if details.get("task_problem"):
        lines.append(("task file", details["task_problem"]))
    for number, attempt in enumerate(details["attempts"], 1):
        if not isinstance(attempt, dict):
            continue
        reason = attempt.get("reason") or ""
        lines.append((f"attempt {number}", f"job {attempt.get('job_id', '?')} lost by the cluster: "
                      f"{attempt.get('state', '?')}" + (f" (reason {reason})" if reason and reason not in
                                                         str(attempt.get("state", "")) else "")
                      + (f", at {_when(attempt['time'])}" if attempt.get("time") else "")))
    if details["result"] is not None:
        lines.append(("result", details["result"]))
    if record["error"]:
        lines.append(("error", record["error"]))
    print("\n".join(f"{name + ':':<11} {value}" for name, value in lines))
    if details["traceback"]:
        print("\nremote traceback:\n" + _indent(details["traceback"]))
    if details["log_tail"]:
        print(f"\nlast lines of {details['log']}:\n" + _indent(details["log_tail"]))
    return 0


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.rstrip().splitlines())


def _cmd_cancel(args: argparse.Namespace) -> int:
    from executorlib.cache import cancel_cache_jobs

    keys = _resolve_keys(args.cache_dir, args.keys) if args.keys else None
    cancelled = cancel_cache_jobs(args.cache_dir, keys)
    if args.json:
        _print_json(cancelled)
    elif cancelled:
        print("\n".join(f"cancelled {key}" for key in cancelled))
    else:
        print("no queued or running jobs to cancel", file=sys.stderr)
    return 0 if cancelled else 1


#: how ``clean`` words the reasons of executorlib.cache.KEEP_REASONS in its summary
_KEPT_WORDS = {
    "job": "with a queued or running job",
    "claim": "claimed by a live process",
    "client": "of a live client that may not have read the result",
    "parent": "whose result a kept task needs",
    "young": "changed within the grace period",
}


def _cmd_clean(args: argparse.Namespace) -> int:
    from executorlib.cache import CLEAN_GRACE, KEEP_REASONS, CleanResult, _clean

    if not (args.all or args.state or args.older_than is not None or args.key):
        raise _UsageError("clean needs --state, --older-than, --key or --all (to delete every task)")
    keys = _resolve_keys(args.cache_dir, args.key) if args.key else None
    grace = CLEAN_GRACE if args.grace is None else args.grace
    result: CleanResult = _clean(args.cache_dir, states=args.state, older_than=args.older_than, keys=keys,
                                 dry_run=args.dry_run, force=args.force, grace=grace)
    deleted, kept = list(result), result.kept
    if args.json:
        _print_json({"deleted": deleted, "kept": kept,
                     "kept_running": [r for r in kept if r["kept"] in ("job", "claim")],
                     "kept_counts": result.kept_counts(), "grace": grace,
                     "removed_temporaries": result.removed_temporaries, "dry_run": args.dry_run})
        return 0 if deleted else 1
    verb = "would delete" if args.dry_run else "deleted"
    for record in deleted:
        print(f"{verb} {record['key']} ({record['state']}, {_size(record['size'])})")
    if deleted:
        print(f"{verb} {len(deleted)} task(s), {_size(sum(r['size'] or 0 for r in deleted))}")
    if kept:
        counts = ", ".join(f"{n} {_KEPT_WORDS.get(reason, reason)}" for reason, n in result.kept_counts().items())
        print(f"kept {len(kept)} task(s): {counts}", file=sys.stderr)
        if args.verbose:
            for record in kept:
                job = f" (job {record['job_id']})" if record.get("job_id") else ""
                print(f"  kept {record['key']}{job}: {KEEP_REASONS.get(record['kept'], record['kept'])}",
                      file=sys.stderr)
        hints = []
        if not args.verbose:
            hints.append("--verbose lists them")
        if any(r["kept"] == "young" for r in kept):
            hints.append(f"--grace 0 deletes what changed in the last {_duration(grace)}")
        hints.append("--force cancels their jobs and deletes them anyway")
        print(f"  ({'; '.join(hints)})", file=sys.stderr)
    if result.removed_temporaries:
        print(f"removed {result.removed_temporaries} leftover file(s) of killed writers", file=sys.stderr)
    if not deleted and not kept:
        print("no tasks matched", file=sys.stderr)
    return 0 if deleted else 1


class _UsageError(Exception):
    pass


def _show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
                  line: Optional[str] = None) -> None:
    print(f"executorlib: warning: {message}", file=sys.stderr)


# -- parser ----------------------------------------------------------------------------------------
def _states(text: str) -> list[str]:
    states = [s.strip() for s in text.split(",") if s.strip()]
    for state in states:
        if state not in STATES:
            raise argparse.ArgumentTypeError(f"invalid state {state!r}; valid states are: {', '.join(STATES)}")
    return states


def _flatten(values: Optional[list]) -> Optional[list[str]]:
    if not values:
        return None
    return [s for group in values for s in group]


def build_parser() -> argparse.ArgumentParser:
    from executorlib import __version__

    parser = argparse.ArgumentParser(
        prog="executorlib",
        description="Inspect, cancel and clean the tasks of an executorlib cache directory.",
        epilog="Exit codes: 0 done, 1 nothing matched or an error, 2 wrong usage.",
    )
    parser.add_argument("--version", action="version", version=f"executorlib {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help_text: str, handler: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("cache_dir", metavar="CACHE_DIR", help="the Executor's cache_directory")
        sub.add_argument("--json", action="store_true", help="print JSON instead of text")
        sub.set_defaults(handler=handler)
        return sub

    state_help = f"only tasks in this state ({', '.join(STATES)}); repeat or separate by commas"
    sub = command("list", "list the tasks: key, function, state, job id, run time, size", _cmd_list)
    sub.add_argument("--state", type=_states, action="append", help=state_help)
    sub.add_argument("--no-query", action="store_true",
                     help="do not ask the job scheduler (submitted jobs then count as running)")

    sub = command("show", "show one task: arguments, error with remote traceback, end of job.out", _cmd_show)
    sub.add_argument("key", metavar="KEY", help="the task's key (or a unique prefix of it)")

    sub = command("cancel", "cancel the queued and running jobs of the cache, or of these tasks", _cmd_cancel)
    sub.add_argument("keys", metavar="KEY", nargs="*", help="only these tasks (keys or unique prefixes)")

    sub = command("clean", "delete task folders by state, age or key; --all deletes every task", _cmd_clean)
    sub.add_argument("--state", type=_states, action="append", help=state_help)
    sub.add_argument("--older-than", type=parse_age, metavar="AGE",
                     help="only tasks whose last activity is older than AGE, e.g. 90s, 15m, 12h, 2d, 1w")
    sub.add_argument("--key", action="append", metavar="KEY", help="only this task (repeatable)")
    sub.add_argument("--all", action="store_true", help="select every task (a purge)")
    sub.add_argument("--grace", type=parse_age, metavar="AGE",
                     help="keep task folders that changed within AGE (default 60s): a live Executor "
                          "may still be writing them or reading their results; 0 turns it off")
    sub.add_argument("--dry-run", action="store_true", help="only print what would be deleted")
    sub.add_argument("--force", action="store_true",
                     help="also delete live work: cancel queued and running jobs, ignore claims, "
                          "live clients and the grace period")
    sub.add_argument("--verbose", "-v", action="store_true", help="name each task kept, with the reason")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if hasattr(args, "state"):
        args.state = _flatten(args.state)
    import warnings

    try:
        with warnings.catch_warnings():  # a warning reads as one line, without a source line
            warnings.showwarning = _show_warning
            return args.handler(args)
    except _UsageError as error:
        print(f"executorlib {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (_Failure, KeyError) as error:
        print(f"executorlib {args.command}: {error.args[0] if error.args else error}", file=sys.stderr)
        return 1
    except Exception as error:  # noqa: BLE001 - CacheError, a missing backend package, ...
        print(f"executorlib {args.command}: error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
