# BlockRank: every user-facing job is one target. The first target that needs
# Python builds .venv and installs the project; it reinstalls only when
# pyproject.toml changes (the stamp file records the last install).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?= default
TABLE ?=
FIGURE ?=
# Extra runner options for `make reproduce`, e.g. ARGS='--data-root /data --jobs 4'.
ARGS ?=

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: verify test test-unit test-theory bench reproduce figures clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch and torchvision first, pinned, so that no other package pulls a newer build.
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[all]'
	touch $(STAMP)

## verify: check every claim of section 3 and appendices A-C; writes reports/verification.{md,json}
verify: $(STAMP)
	$(BIN)/blockrank verify --profile $(PROFILE)

## test: unit tests and the theory suite with the deterministic Hypothesis profile
test: $(STAMP)
	HYPOTHESIS_PROFILE=ci $(BIN)/python -m pytest -q tests theory_tests

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q tests

test-theory: $(STAMP)
	HYPOTHESIS_PROFILE=ci $(BIN)/python -m pytest -q theory_tests

## bench: speed and memory ratios, measured side by side in one run
bench: $(STAMP)
	$(BIN)/python -m benchmarks

## reproduce: rerun the paper's experiments (GPU), or the CPU profile without a GPU
reproduce: $(STAMP)
	$(BIN)/python -m experiments.reproduce $(if $(TABLE),--table $(TABLE)) $(if $(FIGURE),--figure $(FIGURE)) $(if $(ARGS),-- $(ARGS))

## figures: regenerate every table and figure from the result files (rules in figures/figures.mk)
figures: $(STAMP) figures-all

include figures/figures.mk

clean-venv:
	rm -rf $(VENV)
