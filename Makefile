PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: install test test-fast demo bench lint docs

# torch is pinned to the CPU build this machine type carries; a GPU machine can install its own first.
install:
	$(PIP) install -q "torch==2.13.0" || $(PIP) install -q "torch>=2.2,<3"
	$(PIP) install -q -e ".[dev,hf,serve,onnx]"
	@# Debian's chromium, driven by Playwright in the page's browser test (skipped without it).
	-command -v chromium >/dev/null || apt-get install -y -q chromium >/dev/null 2>&1 || \
		(apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)
	@# Debian's espeak-ng speaks the generated speech corpus of the asr-* recipes.
	-command -v espeak-ng >/dev/null || apt-get install -y -q espeak-ng >/dev/null 2>&1 || \
		(apt-get update -q >/dev/null && apt-get install -y -q espeak-ng >/dev/null)
	-$(PYTHON) -c "from seqlab.nn.scan import build_compiled; build_compiled()"

test: install
	$(PYTHON) -m pytest -q

test-fast: install
	$(PYTHON) -m pytest -q -m "not slow"

demo: install
	seqlab train charlm-lstm

bench: install
	$(PYTHON) benchmarks/recurrent.py

lint:
	$(PYTHON) -m ruff check src tests benchmarks

# The documentation site (MkDocs Material) in site/; `python -m mkdocs serve` serves it locally.
docs: install
	$(PYTHON) -m mkdocs build --strict --site-dir site
