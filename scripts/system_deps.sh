#!/usr/bin/env bash
# Install the system packages the browser, daemon and Postgres tests need (Debian/Ubuntu, apt-get):
# Chromium and its WebDriver (the UI test drives the system browser; nothing downloads one) and
# PostgreSQL (the test creates its own cluster with initdb/pg_ctl). Idempotent: installs only what
# is missing and does nothing when everything is present. scripts/test.sh runs it.
set -euo pipefail

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "system_deps.sh: missing ${missing[*]} and no apt-get here; install them with your package manager" >&2
    exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "system_deps.sh: need root (or sudo) to install ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
fi
echo "==> apt-get install ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
