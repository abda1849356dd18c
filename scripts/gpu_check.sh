#!/usr/bin/env bash
# The one thing to run when a GPU machine is at hand: writes gpu_check.json (or --out PATH) with llmkit's
# throughput, MFU, FSDP2 / DeepSpeed resume checks and fine-tuning wall time. Without a GPU it runs a
# seconds-long CPU fallback. The work is in benchmarks/gpu_check.py.
#   bash scripts/gpu_check.sh [--out PATH] [--cpu] [--only PART ...]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}"
exec "$PYTHON" -m benchmarks.gpu_check "$@"
