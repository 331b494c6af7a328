#!/usr/bin/env bash
# Cold-process latency: `bertctl --help`, `bertctl predict "one text"` and a transformers pipeline one-liner.
#
#   benchmarks/cold_start.sh [RUN_DIR] [RUNS] [EXPORT_DIR]   # defaults: runs/agnews, 3 runs per command, RUN_DIR/onnx
#
# Each command starts a fresh Python process (the OS file cache is warm: one untimed warm-up run first).
# Reported: the median wall time of RUNS runs (hyperfine when installed, else a bash loop), and
# predict / pipeline one-liner. Targets: --help < 0.3 s; predict <= 0.6 x the one-liner. A 4th row times
# benchmarks/lean_predict_probe.py (the same prediction without transformers) for comparison. When EXPORT_DIR
# (`bertctl export RUN_DIR`) exists, a 5th row times `bertctl predict --model EXPORT_DIR` (onnxruntime, no torch):
# target <= 0.15 x the one-liner.
set -euo pipefail

RUN_DIR=${1:-runs/agnews}
RUNS=${2:-3}
EXPORT_DIR=${3:-$RUN_DIR/onnx}
cd "$(dirname "$0")/.."
if [[ ! -f "$RUN_DIR/config.json" ]]; then
    echo "cold_start.sh: $RUN_DIR is not a trained run; train one (bertctl train recipes/agnews.toml) or pass a run dir" >&2
    exit 2
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
BERTCTL=${BERTCTL:-bertctl}
PYTHON=${PYTHON:-python}
TEXT="Stocks fell as oil prices rose"
PIPELINE_PY="from transformers import pipeline; print(pipeline('text-classification', model='$RUN_DIR')('$TEXT'))"

names=("bertctl --help" "bertctl predict" "pipeline one-liner" "probe: no transformers")
# the 4th row is benchmarks/lean_predict_probe.py: the same prediction with torch + tokenizers only, to show
# what a predict path that never imports transformers could reach (benchmarks/NOTES.md)
cmds=("$BERTCTL --help" "$BERTCTL predict --model $RUN_DIR '$TEXT'" "$PYTHON -c \"$PIPELINE_PY\"" "$PYTHON benchmarks/lean_predict_probe.py $RUN_DIR '$TEXT'")
if [[ -f "$EXPORT_DIR/export.json" ]]; then
    names+=("predict: ONNX export")
    cmds+=("$BERTCTL predict --model $EXPORT_DIR '$TEXT'")
fi

median_seconds() {  # median wall seconds of RUNS runs of "$1"
    local cmd=$1 times=() i start end
    if command -v hyperfine >/dev/null 2>&1; then
        local json
        json=$(mktemp)
        hyperfine --warmup 1 --runs "$RUNS" --export-json "$json" -N "$cmd" >/dev/null 2>&1 \
            || hyperfine --warmup 1 --runs "$RUNS" --export-json "$json" "$cmd" >/dev/null 2>&1
        "$PYTHON" -c "import json,sys; print(f\"{json.load(open(sys.argv[1]))['results'][0]['median']:.3f}\")" "$json"
        rm -f "$json"
        return
    fi
    bash -c "$cmd" >/dev/null 2>&1  # warm-up
    for ((i = 0; i < RUNS; i++)); do
        start=$(date +%s%N)
        bash -c "$cmd" >/dev/null 2>&1
        end=$(date +%s%N)
        times+=("$(( (end - start) / 1000000 ))")
    done
    printf '%s\n' "${times[@]}" | sort -n | awk -v n="$RUNS" '{a[NR]=$1} END {m = (n % 2) ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2; printf "%.3f\n", m / 1000}'
}

tool=$(command -v hyperfine >/dev/null 2>&1 && echo hyperfine || echo "bash loop")
echo "# benchmarks/cold_start.sh $RUN_DIR $RUNS   ($tool, median of $RUNS after 1 warm-up; $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg))"
declare -a results
for k in "${!cmds[@]}"; do
    # a failing command must not be timed as a fast one
    if ! bash -c "${cmds[$k]}" >/dev/null 2>&1; then
        echo "cold_start.sh: '${cmds[$k]}' failed; run it by hand to see why" >&2
        exit 1
    fi
    results[$k]=$(median_seconds "${cmds[$k]}")
done

printf '\n| %-22s | %9s |\n|------------------------|----------:|\n' "command" "median s"
for k in "${!cmds[@]}"; do
    printf '| %-22s | %9s |\n' "${names[$k]}" "${results[$k]}"
done
ratio=$(awk -v a="${results[1]}" -v b="${results[2]}" 'BEGIN {printf "%.2f", a / b}')
probe_ratio=$(awk -v a="${results[3]}" -v b="${results[2]}" 'BEGIN {printf "%.2f", a / b}')
export_s=${results[4]:-null}
export_ratio=$([[ -n "${results[4]:-}" ]] && awk -v a="${results[4]}" -v b="${results[2]}" 'BEGIN {printf "%.3f", a / b}' || echo null)
echo
echo "predict / pipeline one-liner = ${ratio}x   (targets: --help < 0.3 s, ratio <= 0.6); probe / one-liner = ${probe_ratio}x; ONNX export / one-liner = ${export_ratio}x (target <= 0.15)"
printf '{"benchmark": "cold_start", "run_dir": "%s", "runs": %s, "tool": "%s", "help_s": %s, "predict_s": %s, "pipeline_s": %s, "probe_s": %s, "export_s": %s, "predict_over_pipeline": %s, "probe_over_pipeline": %s, "export_over_pipeline": %s}\n' \
    "$RUN_DIR" "$RUNS" "$tool" "${results[0]}" "${results[1]}" "${results[2]}" "${results[3]}" "$export_s" "$ratio" "$probe_ratio" "$export_ratio"
