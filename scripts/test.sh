#!/usr/bin/env bash
# Set up .venv (Python >= 3.12) and run the whole test suite. Exit status is pytest's, except that
# "no tests collected" (pytest exit 5) is a failure too.
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/_env.sh
source scripts/_env.sh
hasher_venv dev || exit 1
# Chromium, chromedriver and PostgreSQL for the browser/daemon/postgres tests (apt-get, only when missing)
bash scripts/system_deps.sh || { echo "scripts/system_deps.sh failed: the browser and postgres tests need its packages" >&2; exit 1; }
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-$PWD/.venv/numba-cache}"
echo "==> ruff check"
ruff check . || exit 1
echo "==> pytest"
python -m pytest -q "$@"
status=$?
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: failing" >&2
    exit 1
fi
exit "$status"
