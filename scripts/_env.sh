# Shared by quickstart.sh and test.sh: find Python >= 3.12 and make .venv with hasher installed.
# Sourced, not run. Honours HASHER_PYTHON=/path/to/python3.12.

hasher_find_python() {
    local candidates=()
    [ -n "${HASHER_PYTHON:-}" ] && candidates+=("$HASHER_PYTHON")
    candidates+=(python3.13 python3.12)
    if command -v pyenv >/dev/null 2>&1; then
        # pyenv's shims refuse a version that PYENV_VERSION does not name; call the binaries directly.
        local root
        root=$(pyenv root 2>/dev/null)
        for p in "$root"/versions/3.1[2-9]*/bin/python3 "$root"/versions/3.1[2-9]*/bin/python3.1[2-9]; do
            [ -x "$p" ] && candidates+=("$p")
        done
    fi
    for p in /usr/local/bin/python3.1[2-9] /usr/bin/python3.1[2-9] "$HOME"/.local/bin/python3.1[2-9] python3 python; do
        candidates+=("$p")
    done
    local c
    for c in "${candidates[@]}"; do
        if "$c" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; then
            command -v "$c" 2>/dev/null || echo "$c"
            return 0
        fi
    done
    cat >&2 <<'MSG'
hasher needs Python 3.12 or newer (numpy 2.5 requires it), with the venv module, and none was found.
Install one, then run this command again:
  Debian/Ubuntu:  sudo apt-get install python3.12 python3.12-venv   (or: deadsnakes PPA on older Ubuntu)
  pyenv:          pyenv install 3.12
  uv:             uv python install 3.12
or point HASHER_PYTHON at an existing interpreter:  HASHER_PYTHON=/path/to/python3.12 bash scripts/...
MSG
    return 1
}

# hasher_venv [EXTRAS]: create .venv (if missing or on an old Python) and install hasher editable.
hasher_venv() {
    local extras="${1:-dev}"
    local root
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    VENV="$root/.venv"
    if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
        local py
        py=$(hasher_find_python) || return 1
        echo "==> creating .venv with $py ($("$py" --version 2>&1))"
        rm -rf "$VENV"
        "$py" -m venv "$VENV" || return 1
    fi
    local stamp="$VENV/.hasher-installed"
    local want
    want="$(sha256sum "$root/pyproject.toml" | cut -c1-16)-$extras"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        echo "==> installing hasher[$extras] into .venv (first time: about a minute)"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
        "$VENV/bin/python" -m pip install --quiet -e "$root[$extras]" || return 1
        echo "$want" > "$stamp"
    fi
    export PATH="$VENV/bin:$PATH"
}
