#!/usr/bin/env bash
# Refresh constraints.txt: resolve every dependency afresh (newest versions pyproject.toml allows), in a new
# virtualenv with an empty pip cache, then run the whole test suite against the result. constraints.txt is
# replaced only when the suite passes; otherwise the candidate is kept as constraints.candidate.txt to study.
#
#   bash scripts/refresh_constraints.sh            # ~30 min on 2 cores (install + suite)
#
# Bound a package in pyproject.toml (with a comment saying why) when a new release breaks the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --no-cache-dir -e ".[dev]"
{
  echo "# Tested versions of every dependency of edgecap[dev] (CPython 3.11, Linux x86_64)."
  echo "# Used by the README's commands and .ci/run: pip install -c constraints.txt -e \".[...]\""
  echo "# Refresh: bash scripts/refresh_constraints.sh (resolves afresh, runs the whole suite, then replaces this file)."
  "$work/venv/bin/python" -m pip freeze --exclude-editable | grep -v '^edgecap' | LC_ALL=C sort -f
} > constraints.candidate.txt
VIRTUAL_ENV="$work/venv" PATH="$work/venv/bin:$PATH" EDGECAP_CONSTRAINTS=constraints.candidate.txt bash .ci/run
mv constraints.candidate.txt constraints.txt
echo "constraints.txt refreshed: review 'git diff constraints.txt' and commit it"
