# bnnflow: every target creates .venv on first use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
BOARD   ?= Pynq-Z1
MODEL   ?= models/zoo/cnv_w1a1.pt
TARGET_FPS ?= 1000
OUT     ?= build

.PHONY: venv test test-slow build-pynq clean

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps finn-plus==1.6.1
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

build-pynq: $(STAMP)
	$(BIN)/bnnflow build $(MODEL) --board $(BOARD) --target-fps $(TARGET_FPS) --out $(OUT)

clean:
	rm -rf build runs reports .pytest_cache
