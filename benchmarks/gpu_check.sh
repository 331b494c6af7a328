#!/usr/bin/env bash
# GPU check (issue 24): train, predict, export, serve and accelerate launch against the stock way on one CUDA GPU
# in under 8 minutes, one table at the end (also written to $OUT/gpu_check.md, or a temp file it names).
#
#   bash benchmarks/gpu_check.sh              # on the GPU machine, from anywhere; PYTHON=... picks the interpreter
#   bash benchmarks/gpu_check.sh --dry-run    # the same steps on CPU with a tiny random BERT, < 1 min (CI runs it)
#
# Where packages cannot be fetched, bring them as wheels in .whl/ (benchmarks/README.md, "GPU check"): they are
# installed into /tmp/site first (not in --dry-run, which uses what is installed), and bertctl runs from this
# checkout (PYTHONPATH), as `python3 -m bertctl`. benchmarks/gpu_check.py does the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [[ " $* " != *" --dry-run "* ]] && compgen -G ".whl/*.whl" >/dev/null; then
  site=${GPU_CHECK_SITE:-/tmp/site}
  echo "# installing $(ls .whl/*.whl | wc -l) wheels from .whl/ into $site"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
  export PYTHONPATH="$site:$PYTHONPATH"
fi
exec "$PYTHON" benchmarks/gpu_check.py "$@"
