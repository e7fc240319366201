# Two commands for a newcomer on a fresh machine (see README):
#   make demo   z-augment the bundled sample stack 4x with the shipped ZAugNet+ (no download) and draw the
#               orthogonal views before and after
#   make test   run the whole test suite
# Both create .venv and install what they need first (CPU torch before the project).
# make train-demo: simulate phantoms, train the small preset briefly, predict and evaluate (a few minutes).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch: the CPU-only build from PyTorch's CPU wheel index on a machine without an NVIDIA GPU (about 190 MB
# to download), PyPI's default CUDA build where nvidia-smi is found (about 0.5 GB plus several GB of NVIDIA
# packages). Override with `make TORCH_INDEX= ...` (plain PyPI) or another --index-url.
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
TORCH_INDEX ?= $(if $(shell command -v nvidia-smi 2>/dev/null),,--extra-index-url $(TORCH_CPU_INDEX))
DEMO := demo_output
SAMPLE := samples/membrane_phantom.tif

.PHONY: install demo train-demo test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0 $(TORCH_INDEX)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: install
	$(BIN)/zaugnet predict $(SAMPLE) -o $(DEMO)/membrane_phantom_x4.tif --factor 4 \
		--figure $(DEMO)/membrane_phantom_x4_views.png --overwrite
	@echo "z-augmented: $(DEMO)/membrane_phantom_x4.tif   views: $(DEMO)/membrane_phantom_x4_views.png"
	@echo "next, on your own stack:  . $(VENV)/bin/activate   (puts zaugnet on the PATH), then"
	@echo "  zaugnet predict my_stack.tif -o my_stack_x2.tif --figure views.png"

train-demo: install
	$(BIN)/zaugnet simulate -o $(DEMO)/train/phantom1.tif --shape 24 96 96 --z-step 0.6 --seed 1 --overwrite
	$(BIN)/zaugnet simulate -o $(DEMO)/train/phantom2.tif --shape 24 96 96 --z-step 0.6 --seed 2 --overwrite
	$(BIN)/zaugnet simulate -o $(DEMO)/unseen.tif --shape 17 128 128 --z-step 0.6 --seed 42 --overwrite
	$(BIN)/zaugnet train $(DEMO)/train -o $(DEMO)/run --preset small --max-steps 300 \
		--set train.val_every=50 --overwrite
	$(BIN)/zaugnet predict $(DEMO)/unseen.tif -o $(DEMO)/unseen_x4.tif --model $(DEMO)/run/final.pt \
		--factor 4 --overwrite
	$(BIN)/zaugnet evaluate $(DEMO)/unseen.tif -o $(DEMO)/evaluation --model $(DEMO)/run/final.pt --overwrite
	@echo "z-augmented: $(DEMO)/unseen_x4.tif   figures: $(DEMO)/evaluation/   training curves: $(DEMO)/run/"

test: install
	$(BIN)/pytest

clean:
	rm -rf $(VENV) $(DEMO)
