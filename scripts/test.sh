#!/usr/bin/env bash
# The whole test suite, as CI runs it: on a fresh Debian machine as root this installs executorlib with
# its extras, starts a one-node SLURM cluster when none answers (scripts/start_slurm.sh), runs every
# test against it (a missing SLURM is then a failure, not a skip); the tests include executing the
# notebooks, the README's code blocks and building the docs with warnings as errors. Extra arguments
# go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e ".[all,test,docs]" mpich
bash scripts/start_slurm.sh
export EXECUTORLIB_REQUIRE_SLURM=1
python -m pytest -ra "$@"
