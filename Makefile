# bnnflow: every target creates .venv on first use.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
BOARD   ?= Pynq-Z1
# build-pynq builds the shipped CNV pruned to fit Pynq-Z1 when present, else the unpruned one.
# At 3000 FPS (100 MHz) FINN estimates about half of the xc7z020's LUTs and BRAM18 for CNV.
MODEL   ?= $(if $(wildcard models/zoo/cnv_w1a1_fit.pt),models/zoo/cnv_w1a1_fit.pt,models/zoo/cnv_w1a1.pt)
TARGET_FPS ?= 3000
OUT     ?= build

.PHONY: venv verilator lint test test-slow build-pynq clean

venv: $(STAMP)

# Verilator (Debian's package) runs the RTL co-simulation tests (tests/test_rtl.py, `bnnflow
# verify --rtl`); installed here when missing, where apt-get can (root), else one line says why.
verilator:
	@command -v verilator >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make: installing verilator (Debian package) for the RTL co-simulation"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q verilator >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q verilator >/dev/null; } \
	      || echo "make: apt-get could not install verilator; the RTL co-simulation tests will be skipped"; \
	  else echo "make: verilator is missing and only root can apt-get install it here (apt-get install verilator); the RTL co-simulation tests will be skipped"; fi; }

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps finn-plus==1.6.1
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# ruff (lint + format) and mypy on the project's own code, pinned in requirements.lock; run before pytest.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(STAMP) verilator lint
	$(BIN)/python -m pytest -q

test-slow: $(STAMP) verilator
	$(BIN)/python -m pytest -q -m slow

# Into $(OUT)/<model>_<board>/: estimates and generated code without Vivado; with Vivado and
# Vitis HLS on PATH, on to the bitfile and PYNQ deployment package. Prints a summary.
build-pynq: $(STAMP)
	@test -f $(MODEL) || { echo "make build-pynq: $(MODEL) not found (train one with bnnflow train --model cnv, or give MODEL=)"; exit 2; }
	$(BIN)/bnnflow build $(MODEL) --board $(BOARD) --target-fps $(TARGET_FPS) --out $(OUT)/$(basename $(notdir $(MODEL)))_$(BOARD)

# Resource report: the shipped unpruned and pruned CNV on $(BOARD) at the same TARGET_FPS,
# each simulated bit-exactly on the full test set (DIR/sim.json: the accuracy the report shows),
# side by side (reports/cnv/report.md, .html, PNGs), plus a throughput sweep of both
# (equal FPS and equal resources; reports/cnv/sweep/). No Vivado needed.
CNV        ?= models/zoo/cnv_w1a1.pt
CNV_PRUNED ?= models/zoo/cnv_w1a1_fit.pt
REPORT_OUT ?= reports/cnv
SWEEP_FPS  ?= 1000,2000,4000

.PHONY: report
report: $(STAMP)
	@test -f $(CNV) || { echo "make report: $(CNV) not found (the shipped CNV checkpoint; train it with bnnflow train --model cnv)"; exit 2; }
	@test -f $(CNV_PRUNED) || { echo "make report: $(CNV_PRUNED) not found (the shipped pruned CNV; create it with bnnflow prune, or point CNV_PRUNED at a pruned checkpoint)"; exit 2; }
	$(BIN)/bnnflow build $(CNV) --board $(BOARD) --target-fps $(TARGET_FPS) --out $(OUT)/report/cnv_unpruned
	$(BIN)/bnnflow build $(CNV_PRUNED) --board $(BOARD) --target-fps $(TARGET_FPS) --out $(OUT)/report/cnv_pruned
	$(BIN)/bnnflow sim $(OUT)/report/cnv_unpruned
	$(BIN)/bnnflow sim $(OUT)/report/cnv_pruned
	$(BIN)/bnnflow report $(OUT)/report/cnv_unpruned $(OUT)/report/cnv_pruned --labels unpruned,pruned --out $(REPORT_OUT)
	$(BIN)/bnnflow sweep $(CNV) $(CNV_PRUNED) --labels unpruned,pruned --board $(BOARD) --fps $(SWEEP_FPS) --out $(OUT)/report/sweep
	mkdir -p $(REPORT_OUT)/sweep
	cp $(OUT)/report/sweep/sweep.md $(OUT)/report/sweep/sweep.html $(OUT)/report/sweep/sweep.png $(OUT)/report/sweep/sweep.json $(REPORT_OUT)/sweep/

clean:
	rm -rf build runs reports/cnv .pytest_cache

# Docker image (docker/build.sh: docker if an engine answers, else podman; see
# docker/README.md). IMAGE names the image; the selftest needs the data.
IMAGE   ?= bnnflow
BNNFLOW_DATA_DIR ?= $(abspath ../shared/data)
.PHONY: docker docker-selftest

docker:
	IMAGE=$(IMAGE) docker/build.sh runtime

docker-selftest:
	IMAGE=$(IMAGE) BNNFLOW_DATA_DIR=$(BNNFLOW_DATA_DIR) docker/build.sh selftest
