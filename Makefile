# Two commands for a newcomer on a fresh machine (see README):
#   make demo   z-augment a bundled sample (for now: simulate a stack and train the small preset briefly)
#   make test   run the whole test suite
# Both create .venv and install what they need first (CPU torch before the project).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO := demo_output

.PHONY: install demo test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: install
	$(BIN)/zaugnet simulate -o $(DEMO)/phantom.tif --shape 32 128 128 --z-step 0.6 --overwrite
	$(BIN)/zaugnet train $(DEMO)/phantom.tif -o $(DEMO)/run --preset small --max-steps 300 \
		--set train.val_every=50 --overwrite
	@echo "Model: $(DEMO)/run/final.pt   training curves: $(DEMO)/run/training_curves.png"

test: install
	$(BIN)/pytest

clean:
	rm -rf $(VENV) $(DEMO)
