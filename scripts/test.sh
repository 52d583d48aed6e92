#!/usr/bin/env bash
# The whole test suite, as CI runs it: on a fresh Debian machine as root this installs executorlib with
# its extras, starts a one-node SLURM cluster when none answers (scripts/start_slurm.sh), runs every
# test against it (a missing SLURM is then a failure, not a skip); the tests include executing the
# notebooks, the README's code blocks and building the docs with warnings as errors. Extra arguments
# go to pytest.
#
# Two passes: first the whole suite on the plain cluster (no accounting database; the tests marked
# "accounting" are deselected), then the cluster is switched to accounting (slurmdbd on MariaDB:
# start_slurm.sh --accounting) and the tests marked "accounting" run. Both passes always run; the
# script fails when either does.
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e ".[all,test,docs]" mpich
bash scripts/start_slurm.sh --no-accounting
export EXECUTORLIB_REQUIRE_SLURM=1

plain=0
python -m pytest -ra -m "not accounting" "$@" || plain=$?

accounting=0
if bash scripts/start_slurm.sh --accounting; then
    EXECUTORLIB_REQUIRE_ACCOUNTING=1 python -m pytest -ra -m accounting tests/slurm "$@" || accounting=$?
    # 5 = no test selected: fine when the arguments chose other tests, a failure without arguments
    if [ "$accounting" = 5 ] && [ "$#" -gt 0 ]; then accounting=0; fi
else
    echo "test.sh: the cluster could not be switched to accounting (scripts/start_slurm.sh --accounting)" >&2
    accounting=1
fi

echo "test.sh: plain cluster pass exit code $plain, accounting pass exit code $accounting"
[ "$plain" = 0 ] && [ "$accounting" = 0 ]
