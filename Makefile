# darts_lit: `make book` builds the executed book, `make test` runs every check CI runs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_QUIET := 2>&1 | { grep -v -E "is ignored: it is neither|^$$" || true; }
STAMP := $(VENV)/.installed
CHAPTER_NB := build/chapters

.PHONY: setup export book test chapter golden lint clean browser-test

setup: $(STAMP)

# Re-install when the dependencies change; torch/torchvision pinned by constraints.txt.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip $(PIP_QUIET)
	$(PY) -m pip install -q -c constraints.txt -e ".[book,test]" $(PIP_QUIET)
	$(PY) -c "import darts_lit, torch; print('installed darts_lit', darts_lit.__version__, 'torch', torch.__version__)"
	touch $(STAMP)

export: setup
	$(PY) tools/export.py

# MathJax is served with the book (a reader offline, or the browser test, has no CDN).
MATHJAX := build/static/mathjax/tex-chtml.js
MATHJAX_VERSION := 3.2.2
$(MATHJAX):
	mkdir -p build/npm build/static/mathjax
	if (cd build/npm && npm pack -s mathjax@$(MATHJAX_VERSION) >/dev/null && tar xzf mathjax-$(MATHJAX_VERSION).tgz); then \
	  cp -r build/npm/package/es5/tex-chtml.js build/npm/package/es5/output build/static/mathjax/; \
	else \
	  echo "npm unavailable: the book will load MathJax from its CDN"; \
	  echo 'document.write("<script src=\"https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js\"></"+"script>");' > $@; \
	fi

book: setup export $(MATHJAX)
	$(VENV)/bin/jupyter-book build . -W --keep-going
	@echo "Book: _build/html/index.html"

lint: setup
	$(PY) -m ruff check darts_lit tools tests $(wildcard benchmarks)

test: setup lint
	$(PY) tools/chapters.py prepare $(CHAPTER_NB)
	$(PY) -m pytest tests $(CHAPTER_NB) --ignore=tests/browser --nbval-lax --nbval-current-env --nbval-cell-timeout=900 -p no:cacheprovider

# One chapter while writing it: make chapter NAME=02_ops
chapter: setup
	$(PY) tools/export.py book/$(NAME).md
	$(PY) tools/chapters.py prepare build/chapter-$(NAME) $(NAME)
	$(PY) -m pytest build/chapter-$(NAME) --nbval-lax --nbval-current-env --nbval-cell-timeout=900 -p no:cacheprovider -q

# The built book in headless Chromium (Debian's package; installed here when missing).
browser-test: book
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	$(PY) -m pytest tests/browser -p no:cacheprovider -v

golden: setup
	$(PY) tools/chapters.py golden $(CHAPTERS)

clean:
	rm -rf _build build
