#!/usr/bin/env bash
# Set up .venv, train a model on the bundled sample data and use it, with the embedded defaults:
# a SQLite Dagster instance in .dagster_home, the CPU SHA-256 kernel and the emulated ASIC.
#   knowledge_base → training_frames → seeds → checkpoints   (one run per trained partition)
#   deployment + its recall check                            (one run over every partition)
#   hasher generate                                          (the model continues a sample text)
# Seeds are searched at 17 bits, an exact token (about 2^17 evaluations per frame, 15-24k frames an
# hour on 2 cores); by default the quickstart trains the Gettysburg Address and the Zen of Python
# (555 frames, about 4 minutes) and registers the rest (all 2,544 frames: about 20 minutes).
# HASHER_QUICKSTART_PARTITIONS=all trains everything. Override any of HASHER_MINER_DIR,
# HASHER_INBOX_DIR, HASHER_DATA_DIR, DAGSTER_HOME or HASHER_DIFFICULTY_BITS (below 17 the seeds
# match only a prefix of the token and the model predicts nothing) to run it elsewhere.
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
difficulty="${HASHER_DIFFICULTY_BITS:-17}"
train="${HASHER_QUICKSTART_PARTITIONS:-gettysburg_address.txt zen_of_python.txt}"
prompt="${HASHER_QUICKSTART_PROMPT:-Four score and seven years ago}"
mkdir -p "$DAGSTER_HOME" "$HASHER_DATA_DIR"
[ -f "$DAGSTER_HOME/dagster.yaml" ] || cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"

echo "==> sample data: miner=$HASHER_MINER_DIR inbox=$HASHER_INBOX_DIR"
echo "==> registering source_files partitions in $DAGSTER_HOME"
# sync prints the keys on stdout and what it skipped on stderr; it fails when it found nothing, could not
# read an input, or DAGSTER_HOME is a path Dagster's SQLite storage cannot use: stop there, not later.
if ! synced="$(hasher partitions sync)"; then
    echo "==> hasher partitions sync failed (see above); nothing was trained" >&2
    exit 1
fi
mapfile -t keys <<<"$synced"
printf '    %s\n' "${keys[@]}"
if [ "$train" = all ]; then
    trained=("${keys[@]}")
else
    read -r -a trained <<<"$train"
fi
echo "==> ${#keys[@]} partitions; training ${#trained[@]} with seeds at difficulty_bits=$difficulty (about 2^$difficulty evaluations per frame)"

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

for key in "${trained[@]}"; do
    echo "==> partition $key: knowledge_base, training_frames, seeds, checkpoints"
    materialize "$logs/$key.log" --select knowledge_base,training_frames,seeds,checkpoints \
        --partition "$key" --config-json "$config"
done
echo "==> deployment (every trained partition) and its recall check"
materialize "$logs/deployment.log" --select deployment --config-json '{"execution": {"config": {"in_process": {}}}}'
grep -o "deployment_recall of .*" "$logs/deployment.log" | head -n 1 | sed 's/^/    /' || true
grep -o "Asset check 'deployment_recall'.*" "$logs/deployment.log" | head -n 1 | sed 's/^/    /' || true

hasher status
echo "==> the model at work: hasher generate --prompt \"$prompt\" --max-tokens 400"
continuation="$(hasher generate --prompt "$prompt" --max-tokens 400 2>"$logs/generate.err")" || { cat "$logs/generate.err" >&2; exit 1; }
echo "$prompt$continuation" | fold -s -w 100 | sed 's/^/    /'
sed 's/^/    /' "$logs/generate.err"
echo "==> done in $(( $(date +%s) - start )) s. Outputs under $HASHER_DATA_DIR; Dagster instance in $DAGSTER_HOME."
echo "    Use it:     HASHER_DATA_DIR=$HASHER_DATA_DIR .venv/bin/hasher generate --prompt \"The Zen of Python\""
echo "    Serve it:   HASHER_DATA_DIR=$HASHER_DATA_DIR .venv/bin/hasher serve    (then open http://127.0.0.1:8420/)"
echo "    Browse it:  DAGSTER_HOME=$DAGSTER_HOME HASHER_MINER_DIR=$HASHER_MINER_DIR HASHER_INBOX_DIR=$HASHER_INBOX_DIR HASHER_DATA_DIR=$HASHER_DATA_DIR .venv/bin/dagster dev -h 127.0.0.1"
