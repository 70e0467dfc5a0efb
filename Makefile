# Two commands a user needs: `make run` and `make test` (both install first); `make report` after a run.
VENV ?= .venv
PYTHON ?= python3
CORES ?= 2
PRESET ?=
CONFIGS := config.yaml $(foreach preset,$(PRESET),presets/$(preset).yaml)  # PRESET: names, applied in order
SNAKEMAKE := $(VENV)/bin/snakemake --profile profiles/local --configfile $(CONFIGS) --cores $(CORES)

# every preset sets `results: results/<its name>`, so the last one named says where the run wrote
REPORT := $(if $(PRESET),results/$(lastword $(PRESET)),results)/report/report.html

.PHONY: install run report dry-run lint test test-fast bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[torch,workflow,dev]'
	touch $@

install: $(VENV)/.installed

run: install
	$(SNAKEMAKE)

# the self-contained HTML report (tables, figures, config) of the last `make run`
report: install
	$(SNAKEMAKE) --report $(REPORT)

dry-run: install
	$(SNAKEMAKE) -n

lint: install
	$(VENV)/bin/ruff check src scripts tests bench
	$(VENV)/bin/snakemake --lint --configfile $(CONFIGS)
	$(VENV)/bin/snakefmt --check Snakefile rules

# the unit tests and dry runs in two processes, then the end-to-end runs (which use both cores)
test: install
	$(VENV)/bin/pytest -m "not slow" -n 2
	$(VENV)/bin/pytest -m slow

test-fast: install
	$(VENV)/bin/pytest -m "not slow"

bench: install
	$(VENV)/bin/python bench/ddpm_recipe.py

clean:
	rm -rf results .snakemake
