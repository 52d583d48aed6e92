"""flux job ids and ``flux jobs`` output → the scheduler's view of a job.

The F58 pairs are flux-core's own (``src/common/libutil/test/fluid.c``); the ``flux jobs`` lines
are what ``flux jobs -n --format=JOBS_FORMAT`` prints for the job states of RFC 21 and the results
documented in flux-jobs(1).
"""

from __future__ import annotations

import random

import pytest

from executorlib.spawners.flux import (
    JOBS_FORMAT,
    FluxJob,
    f58_decode,
    f58_encode,
    match_jobs,
    parse_flux_jobs,
    parse_job_id,
    submitted_job_id,
)

# (integer, F58) from flux-core's fluid tests
F58_PAIRS = [
    (0, "ƒ1"),
    (1, "ƒ2"),
    (57, "ƒz"),
    (1234, "ƒNH"),
    (1888, "ƒZZ"),
    (3363, "ƒzz"),
    (3364, "ƒ211"),
    (4369, "ƒ2JL"),
    (65535, "ƒLUv"),
    (4294967295, "ƒ7YXq9G"),
    (633528662, "ƒxyzzy"),
    (6731191091817518, "ƒuZZybuNNy"),
    (18446744073709551614, "ƒjpXCZedGfVP"),
    (18446744073709551615, "ƒjpXCZedGfVQ"),
]


class TestF58:
    @pytest.mark.parametrize("number,text", F58_PAIRS)
    def test_encode_matches_flux(self, number, text):
        assert f58_encode(number) == text
        assert f58_encode(number, ascii_prefix=True) == "f" + text[1:]

    @pytest.mark.parametrize("number,text", F58_PAIRS)
    def test_decode_both_prefixes(self, number, text):
        assert f58_decode(text) == number
        assert f58_decode("f" + text[1:]) == number

    def test_leading_ones_are_zeros(self):
        assert f58_decode("f111") == 0
        assert f58_decode("ƒ11NH") == 1234

    @pytest.mark.parametrize("text", ["1234", "aaa", "f", "flux", "f1230", "x1", "ƒO1", "ƒIl", ""])
    def test_decode_rejects_what_flux_rejects(self, text):
        with pytest.raises(ValueError, match="F58"):
            f58_decode(text)

    def test_decode_rejects_more_than_64_bits(self):
        with pytest.raises(ValueError, match="64 bits"):
            f58_decode("ƒjpXCZedGfVR")  # 2**64

    @pytest.mark.parametrize("bad", [-1, 2**64, True, "12"])
    def test_encode_rejects_non_ids(self, bad):
        with pytest.raises(ValueError, match="2\\*\\*64-1"):
            f58_encode(bad)

    def test_round_trip(self):
        rng = random.Random(19)
        for number in [rng.randrange(2**64) for _ in range(2000)] + [2**k for k in range(64)]:
            assert f58_decode(f58_encode(number)) == number
            assert parse_job_id(f58_encode(number, ascii_prefix=True)) == number


class TestParseJobId:
    @pytest.mark.parametrize("text,number", [
        ("ƒ2JL", 4369), ("f2JL", 4369), ("4369", 4369), ("0x1111", 4369),
        ("0000.0000.0000.1111", 4369), ("0.0.0.ffff", 65535), (" 0xffff   ", 65535),
        ("18446744073709551615", 2**64 - 1), ("ffff.ffff.ffff.ffff", 2**64 - 1), (4369, 4369),
    ])
    def test_every_form_flux_prints(self, text, number):
        assert parse_job_id(text) == number

    @pytest.mark.parametrize("text", ["", "boo", "f", "-1", "18446744073709551616", "1.2.3", "ƒ", "12 34"])
    def test_rejects_non_ids_naming_the_forms(self, text):
        with pytest.raises(ValueError, match="flux job id"):
            parse_job_id(text)


class TestSubmittedJobId:
    def test_f58_as_printed(self):
        assert submitted_job_id("ƒM7Zq9AKHno\n") == "ƒM7Zq9AKHno"
        assert submitted_job_id("fM7Zq9AKHno\n") == "fM7Zq9AKHno"

    def test_last_line_wins_over_warnings(self):
        assert submitted_job_id("flux-batch: warning: something\nƒ2JL\n") == "ƒ2JL"

    def test_decimal(self):
        assert submitted_job_id("4369") == "4369"

    @pytest.mark.parametrize("output", ["", "\n", "flux-batch: ERROR: no"])
    def test_none_without_an_id(self, output):
        assert submitted_job_id(output) is None


# What ``flux jobs -n --format=JOBS_FORMAT ID...`` prints: empty fields stay empty, the note is last
# and may itself contain the separator.
FLUX_JOBS_OUTPUT = """\
ƒ2JL|DEPEND||||
ƒNH|PRIORITY||||
fZZ|SCHED||||
ƒzz|RUN||||
ƒ211|CLEANUP||||
ƒ7YXq9G|INACTIVE|COMPLETED|0||
ƒxyzzy|INACTIVE|FAILED|1||
ƒLUv|INACTIVE|TIMEOUT|143|timeout|resource allocation expired
ƒuZZybuNNy|INACTIVE|CANCELED|-128|cancel|
ƒjpXCZedGfVP|INACTIVE|FAILED|-128|dependency|dependency: afterok | job ƒ2JL failed
57|INACTIVE|FAILED|-9|exec|
"""


class TestParseFluxJobs:
    def test_format_lists_the_fields_in_order(self):
        assert JOBS_FORMAT == "{id.f58}|{state}|{result}|{returncode}|{exception.type}|{exception.note}"

    def test_every_state_and_result(self):
        jobs = parse_flux_jobs(FLUX_JOBS_OUTPUT)
        assert {n: (j.state, j.result) for n, j in jobs.items()} == {
            4369: ("DEPEND", ""),
            1234: ("PRIORITY", ""),
            1888: ("SCHED", ""),
            3363: ("RUN", ""),
            3364: ("CLEANUP", ""),
            4294967295: ("INACTIVE", "COMPLETED"),
            633528662: ("INACTIVE", "FAILED"),
            65535: ("INACTIVE", "TIMEOUT"),
            6731191091817518: ("INACTIVE", "CANCELED"),
            18446744073709551614: ("INACTIVE", "FAILED"),
            57: ("INACTIVE", "FAILED"),
        }

    def test_note_keeps_the_separator(self):
        job = parse_flux_jobs(FLUX_JOBS_OUTPUT)[18446744073709551614]
        assert job.exception_type == "dependency"
        assert job.exception_note == "dependency: afterok | job ƒ2JL failed"

    def test_header_warnings_and_blank_lines_are_skipped(self):
        output = ("JOBID|STATE|RESULT|RETURNCODE|EXCEPTION-TYPE|EXCEPTION-NOTE\n\n"
                  "flux-jobs: WARNING: Filtering options ignored with jobid list\n"
                  "ƒ2JL|RUN||||\n")
        assert list(parse_flux_jobs(output)) == [4369]

    def test_short_lines_fill_missing_fields(self):
        job = parse_flux_jobs("ƒ2JL|inactive|completed\n")[4369]
        assert (job.state, job.result, job.returncode, job.exception_type) == ("INACTIVE", "COMPLETED", "", "")


class TestStatusMapping:
    """The scheduler waits on active jobs and reads the result of ended ones; ``state`` names it."""

    @pytest.mark.parametrize("line,state,active,running", [
        ("ƒ2JL|DEPEND||||", "DEPEND", True, False),
        ("ƒ2JL|PRIORITY||||", "PRIORITY", True, False),
        ("ƒ2JL|SCHED||||", "SCHED", True, False),
        ("ƒ2JL|RUN||||", "RUN", True, True),
        ("ƒ2JL|CLEANUP||||", "CLEANUP", True, True),
        ("ƒ2JL|INACTIVE|COMPLETED|0||", "COMPLETED", False, False),
        ("ƒ2JL|INACTIVE|FAILED|1||", "FAILED", False, False),
        ("ƒ2JL|INACTIVE|CANCELED|-128|cancel|", "CANCELED", False, False),
        ("ƒ2JL|INACTIVE|TIMEOUT|143|timeout|", "TIMEOUT", False, False),
        ("ƒ2JL|NEWSTATE||||", "NEWSTATE", True, False),  # a state added later: keep waiting
        ("ƒ2JL|NEWSTATE|FAILED|1||", "FAILED", False, False),  # ... until it has a result
    ])
    def test_state_to_status(self, line, state, active, running):
        status = parse_flux_jobs(line)[4369].status()
        assert (status.state, status.active, status.running) == (state, active, running)

    @pytest.mark.parametrize("job,final", [
        (FluxJob(1, "INACTIVE", "COMPLETED", "0"), "COMPLETED"),
        (FluxJob(1, "INACTIVE", "FAILED", "1"), "FAILED (exit code 1)"),
        (FluxJob(1, "INACTIVE", "FAILED", "-9", "exec"), "FAILED (exec exception; killed by signal 9)"),
        (FluxJob(1, "INACTIVE", "CANCELED", "-128", "cancel"), "CANCELED (cancel exception)"),
        (FluxJob(1, "INACTIVE", "TIMEOUT", "143", "timeout", "resource allocation expired"),
         "TIMEOUT (timeout exception: resource allocation expired; exit code 143)"),
        (FluxJob(1, "INACTIVE", "FAILED", "-128", "dependency", "dependency: job ƒ2 failed"),
         "FAILED (dependency exception: dependency: job ƒ2 failed)"),
    ])
    def test_final_state_names_the_result_and_why(self, job, final):
        assert job.final_state() == final


class TestMatchJobs:
    def test_the_callers_spelling_is_kept(self):
        found = parse_flux_jobs("ƒ2JL|RUN||||\nƒNH|INACTIVE|COMPLETED|0||\n")
        matched = match_jobs(["f2JL", "1234", "ƒzz", "not-a-job"], found)
        assert {k: v.state for k, v in matched.items()} == {"f2JL": "RUN", "1234": "INACTIVE"}

    def test_decimal_output_matches_f58_ids(self):
        found = parse_flux_jobs("4369|SCHED||||\n")
        assert list(match_jobs(["ƒ2JL"], found)) == ["ƒ2JL"]
