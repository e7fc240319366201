#!/usr/bin/env bash
# Rebuild the shipped models from scratch: training data, training, packages, benchmark.
# Usage (from the repository root, after `make install`): bash bioimageio_models/build.sh [WORK_DIR]
# WORK_DIR (default /tmp/zaugnet_shipped) receives the phantoms, the training runs and draft packages.
# Real training stacks: ../shared/data (mitograph and cellfinder are held out for the benchmark).
# Each training ran with OMP_NUM_THREADS=1 on a 2-core CPU (two or three runs side by side); on a GPU
# add --device cuda. The seeds make the data and batches reproducible; CPU float results may differ
# in the last bits between machines.
set -euo pipefail
WORK=${1:-/tmp/zaugnet_shipped}
BIN=.venv/bin
DATA=../shared/data
TRAIN="$DATA/neubias_dna_conf_wf.tif $DATA/neubias_chromosomes.tif $DATA/deconwolf_dapi_001.tif $WORK/phantoms"
mkdir -p "$WORK/phantoms"
for s in 1 2; do  # membrane and nuclei phantoms at z steps 0.6 and 0.8 um
  $BIN/zaugnet simulate -o "$WORK/phantoms/membrane_$s.tif" --kind membrane --seed $s --shape 40 192 192 \
    --z-step 0.$((4 + s * 2)) --overwrite
  $BIN/zaugnet simulate -o "$WORK/phantoms/nuclei_$s.tif" --kind nuclei --seed $((10 + s)) --shape 40 192 192 \
    --z-step 0.$((4 + s * 2)) --overwrite
done
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
$BIN/zaugnet train $TRAIN -o "$WORK/zaugnet" --variant zaugnet --config bioimageio_models/recipes/zaugnet.yaml --overwrite &
$BIN/zaugnet train $TRAIN -o "$WORK/zaugnet_plus" --variant zaugnet+ --config bioimageio_models/recipes/zaugnet.yaml --overwrite &
$BIN/zaugnet train $TRAIN -o "$WORK/zaugnet_c" --config bioimageio_models/recipes/zaugnet_c.yaml --overwrite &
wait
for m in zaugnet zaugnet_plus zaugnet_c; do  # draft packages (for the benchmark's runtimes)
  $BIN/zaugnet export "$WORK/$m/final.pt" -o "$WORK/draft_$m" --sample samples/membrane_phantom.tif --overwrite
done
$BIN/python benchmarks/models.py --model zaugnet="$WORK/draft_zaugnet" --model zaugnet+="$WORK/draft_zaugnet_plus" \
  --model zaugnet-c="$WORK/draft_zaugnet_c" --auto -o benchmarks/results
for m in zaugnet zaugnet_plus zaugnet_c; do  # the shipped packages, with the benchmark in their documentation
  $BIN/zaugnet export "$WORK/$m/final.pt" -o "bioimageio_models/$m" --sample samples/membrane_phantom.tif \
    --documentation benchmarks/results/accuracy.md --figure benchmarks/results/accuracy.png --overwrite
done
