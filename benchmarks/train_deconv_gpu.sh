#!/usr/bin/env bash
# One command on a machine with a CUDA GPU: train ZS-DeconvNet's `paper` preset (2.00 M parameters) on
# ../shared/data/neubias_dna_conf_wf.tif (channel c1, widefield) for at most 9 minutes with
# benchmarks/recipes/deconv_paper_gpu.yaml, then run benchmarks/deconv.py with that model (Richardson-Lucy rows,
# the self-check, the network's rows, the views; a few more minutes).
#
#   bash benchmarks/train_deconv_gpu.sh [RUN_DIR [OUTPUT_DIR]]
#
# RUN_DIR (default runs/deconv_paper_gpu) gets the run; OUTPUT_DIR (default benchmarks/results/gpu) gets deconv.md,
# deconv.csv and the figures. PYTHON (default .venv/bin/python, else python3) is the interpreter with zaugnet
# installed. Without a CUDA device it refuses at once: one line on stderr, exit status 2.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
RUN_DIR=${1:-runs/deconv_paper_gpu}
OUTPUT_DIR=${2:-benchmarks/results/gpu}
if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "train_deconv_gpu.sh: error: no CUDA device visible to $PYTHON (torch.cuda.is_available() is False); this script trains the paper preset on a GPU" >&2
    exit 2
fi
exec "$PYTHON" benchmarks/deconv.py --recipe benchmarks/recipes/deconv_paper_gpu.yaml --max-minutes 9 \
    --device cuda --threads "$(nproc)" --run-dir "$RUN_DIR" -o "$OUTPUT_DIR"
