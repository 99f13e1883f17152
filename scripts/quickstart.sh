#!/usr/bin/env bash
# Set up .venv and run the whole pipeline on the bundled sample data, with the embedded defaults:
# a SQLite Dagster instance in .dagster_home, the CPU SHA-256 kernel and the emulated ASIC.
#   knowledge_base → training_frames → seeds → checkpoints   (one run per source-file partition)
#   deployment                                              (one run over every partition)
# Override any of HASHER_MINER_DIR, HASHER_INBOX_DIR, HASHER_DATA_DIR, DAGSTER_HOME or
# HASHER_DIFFICULTY_BITS (default 12) to run it elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/_env.sh
source scripts/_env.sh
hasher_venv dev

export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster_home}"
export HASHER_MINER_DIR="${HASHER_MINER_DIR:-$PWD/sample_data/miner}"
export HASHER_INBOX_DIR="${HASHER_INBOX_DIR:-$PWD/sample_data/inbox}"
export HASHER_DATA_DIR="${HASHER_DATA_DIR:-$PWD/.hasher_data}"
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-$PWD/.venv/numba-cache}"
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::UserWarning}"
difficulty="${HASHER_DIFFICULTY_BITS:-12}"
mkdir -p "$DAGSTER_HOME" "$HASHER_DATA_DIR"
[ -f "$DAGSTER_HOME/dagster.yaml" ] || cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"

echo "==> sample data: miner=$HASHER_MINER_DIR inbox=$HASHER_INBOX_DIR"
echo "==> registering source_files partitions in $DAGSTER_HOME"
mapfile -t keys < <(hasher partitions sync)
printf '    %s\n' "${keys[@]}"
echo "==> ${#keys[@]} partitions; seeds at difficulty_bits=$difficulty (about 2^$difficulty evaluations per frame)"

config=$(printf '{"ops": {"seeds": {"config": {"difficulty_bits": %d}}}, "execution": {"config": {"in_process": {}}}}' "$difficulty")
logs="$HASHER_DATA_DIR/logs"
mkdir -p "$logs"
start=$(date +%s)

materialize() {  # materialize LOG ARGS...: run the CLI, keep its log, show the outcome
    local log="$1"
    shift
    local t0=$SECONDS
    if dagster asset materialize -m hasher_assets.definitions "$@" >"$log" 2>&1; then
        echo "    ok in $((SECONDS - t0)) s ($(grep -c ASSET_CHECK_EVALUATION "$log" || true) checks evaluated; log: $log)"
    else
        echo "    FAILED after $((SECONDS - t0)) s; last lines of $log:" >&2
        tail -n 30 "$log" >&2
        return 1
    fi
}

for key in "${keys[@]}"; do
    echo "==> partition $key: knowledge_base, training_frames, seeds, checkpoints"
    materialize "$logs/$key.log" --select knowledge_base,training_frames,seeds,checkpoints \
        --partition "$key" --config-json "$config"
done
echo "==> deployment (all partitions)"
materialize "$logs/deployment.log" --select deployment --config-json '{"execution": {"config": {"in_process": {}}}}'

hasher status
echo "==> done in $(( $(date +%s) - start )) s. Outputs under $HASHER_DATA_DIR; Dagster instance in $DAGSTER_HOME."
echo "    Browse it:  DAGSTER_HOME=$DAGSTER_HOME HASHER_MINER_DIR=$HASHER_MINER_DIR HASHER_INBOX_DIR=$HASHER_INBOX_DIR HASHER_DATA_DIR=$HASHER_DATA_DIR .venv/bin/dagster dev -h 127.0.0.1"
