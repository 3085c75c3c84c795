# One command each: `make demo` (index the bundled samples, answer a question; or serve the
# bot when Slack tokens are set) and `make test`. Both create .venv and install what they need.
VENV ?= .venv
PY := $(VENV)/bin/python
# Where torch comes from. CPU machines must install the CPU build first: an unpinned torch pulls
# GBs of CUDA wheels. Elsewhere set e.g. TORCH_INDEX=--index-url=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
FAISS_EXTRA := $(if $(HAS_GPU),gpu,cpu)
QUESTION ?= 経費精算の締め切りはいつですか？

.PHONY: install redis-server test lint demo demo-offline serve bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(HAS_GPU),,$(PY) -m pip install -q torch==2.13.0 $(TORCH_INDEX))
	$(PY) -m pip install -q -c constraints.txt -e ".[$(FAISS_EXTRA),test]"
	touch $@

# The Redis tests start a real redis-server (Debian's package) on a free port.
redis-server:
	command -v redis-server >/dev/null || { \
		SUDO=$$(command -v sudo >/dev/null && [ "$$(id -u)" != 0 ] && echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server >/dev/null; }
	redis-server --version

test: install redis-server
	NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost $(VENV)/bin/ruff check .
	NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost $(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .

demo: install
	$(VENV)/bin/kotae demo "$(QUESTION)"

# No hub access and no local bge-m3? A model with RANDOM weights runs the real pipeline
# (answers are meaningless, everything else is real).
demo-offline: install
	test -f .kotae/tiny-model/config.json || $(VENV)/bin/kotae tiny-model .kotae/tiny-model
	KOTAE_EMBEDDING_MODEL=.kotae/tiny-model KOTAE_INDEX_DIR=.kotae/tiny-index \
		$(VENV)/bin/kotae demo "$(QUESTION)"

serve: install
	$(VENV)/bin/kotae serve

clean:
	rm -rf $(VENV) .kotae
