#!/usr/bin/env bash
# Rebuild the shipped models from scratch: training, draft packages, the benchmark, the packages.
# Usage (from the repository root, after `make install`): bash bioimageio_models/build.sh [WORK_DIR]
# WORK_DIR (default /tmp/zaugnet_shipped) receives the training runs and the draft packages.
# Training stacks: three of the real stacks in ../shared/data; the five others are held out for the benchmark.
# Recipes: recipes/zaugnet_plus.yaml for ZAugNet+ (the default model; 8,000 steps, 24 minutes with one
# thread on a 2-core CPU), recipes/shipped.yaml for ZAugNet and ZAugNet-C (1,500 steps, about 5 minutes each);
# the three run side by side. On a GPU add --device cuda. Batches are seeded per step, so the runs are
# reproducible up to float rounding (ZAugNet+'s bfloat16 autocast: up to its rounding).
set -euo pipefail
WORK=${1:-/tmp/zaugnet_shipped}
BIN=.venv/bin
DATA=../shared/data
TRAIN=("$DATA/neubias_dna_conf_wf.tif" "$DATA/neubias_chromosomes.tif" "$DATA/deconwolf_dapi_001.tif")
for variant in zaugnet zaugnet+ zaugnet-c; do
  run=$(echo "$variant" | sed 's/+/_plus/; s/-c/_c/')
  recipe=bioimageio_models/recipes/$([ "$variant" = zaugnet+ ] && echo zaugnet_plus || echo shipped).yaml
  $BIN/zaugnet train "${TRAIN[@]}" -o "$WORK/$run" --variant "$variant" --config "$recipe" --threads 1 \
    --overwrite --quiet &
done
wait
for m in zaugnet zaugnet_plus zaugnet_c; do  # draft packages (the benchmark times their three runtimes)
  $BIN/zaugnet export "$WORK/$m/final.pt" -o "$WORK/draft_$m" --sample samples/membrane_phantom.tif --overwrite
done
$BIN/python benchmarks/models.py --model zaugnet="$WORK/draft_zaugnet" --model zaugnet+="$WORK/draft_zaugnet_plus" \
  --model zaugnet-c="$WORK/draft_zaugnet_c" --auto -o benchmarks/results
# The packages' added documentation: their training data (the rdf has no training_data entry: bioimageio.spec
# accepts there only a zoo dataset id or a complete dataset description), then the benchmark.
DOC="$WORK/documentation.md"
cat > "$DOC" <<'EOF'
# Training data

Three real stacks (four volumes, one of them held out for validation at random, seed 0), unchanged from public
repositories; not the paper's data (the original authors' datasets and pretrained models are on Zenodo,
https://doi.org/10.5281/zenodo.14961732, cited in the rdf):

- `neubias_dna_conf_wf.tif`, both channels (`:c0` confocal, `:c1` widefield) of one Hoechst-stained nucleus:
  NEUBIAS/training-resources, `image_data/xyzc_16bit__dna_conf_wf.tif`, commit 8bbaa51d, CC-BY-4.0.
- `neubias_chromosomes.tif`, mitotic chromosomes: NEUBIAS/training-resources, `image_data/xyz_8bit__chromosomes.tif`,
  commit 8bbaa51d, CC-BY-4.0.
- `deconwolf_dapi_001.tif`, DAPI-stained nuclei, widefield: elgw/deconwolf, `demo/dapi_001.tif`, commit 0d6f6c7c,
  GPL-3.0 (the repository's licence).
EOF
printf '\n' >> "$DOC"
echo "The benchmark below uses the five other real stacks of the project's data, never seen in training." >> "$DOC"
printf '\n' >> "$DOC" && cat benchmarks/results/accuracy.md >> "$DOC"
for m in zaugnet zaugnet_plus zaugnet_c; do  # the shipped packages (rdf in the form deepImageJ 3.1 reads)
  $BIN/zaugnet export "$WORK/$m/final.pt" -o "bioimageio_models/$m" --sample samples/membrane_phantom.tif \
    --documentation "$DOC" --figure benchmarks/results/accuracy.png --overwrite
done
