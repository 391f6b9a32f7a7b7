# Everything a fresh machine needs: `make demo` and `make test` each build .venv first.
VENV   := .venv
BIN    := $(VENV)/bin
PY312  := $(shell for p in python3.12 $(HOME)/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12 /usr/local/bin/python3.12; do \
            $$p -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && echo $$p && break; done)
STAMP  := $(VENV)/.installed

.PHONY: venv demo test bench data clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -n "$(PY312)" || { echo "make: python3.12 not found; install it (e.g. pyenv install 3.12) and retry" >&2; exit 1; }
	test -x $(BIN)/python || $(PY312) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,eval,ray,onnx]'  # ray: the --workers tests; onnx: export-onnx
	$(BIN)/vapoursynth config  # lets vspipe find this venv's Python (keyed by venv, user-level file)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/vs-hdrvid demo

test: $(STAMP)
	$(BIN)/python -m pytest -q tests; rc=$$?; [ $$rc -eq 5 ] && { echo "no tests collected"; exit 0; }; exit $$rc

bench: $(STAMP)
	$(BIN)/vs-hdrvid bench

data: $(STAMP)
	$(BIN)/vs-hdrvid synth --fetch-panoramas
	$(BIN)/vs-hdrvid synth --preset val
	$(BIN)/vs-hdrvid synth --preset test
	$(BIN)/vs-hdrvid synth --preset test3d

clean:
	rm -rf $(VENV) build *.egg-info
