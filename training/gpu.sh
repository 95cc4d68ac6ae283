#!/usr/bin/env bash
# Continue the long training runs of training/*/ on a lent GPU machine and bring their run
# folders back through $OUT. Prepared here, run there with the device tool:
#
#   here:  training/gpu.sh --prepare      (wheels the GPU image lacks -> .whl/, data -> .gpu-data/)
#   there: run(command="bash training/gpu.sh", carry=[".whl", ".gpu-data"], timeout_s=...)
#
# The GPU image has Python 3.12 with a CUDA torch but no Brevitas: the prepared wheels go to
# /tmp/site and the repository runs from source (only the train subcommand's own module is loaded,
# not the FINN stages). Each run continues exactly from its state.pt
# (bnnflow train --resume picks CUDA by itself and writes the same checkpoint format) for at most
# STOP_AFTER epochs, so a time-out loses at most the epoch in progress: copy back, rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS="brevitas==0.13.4 dependencies==2.0.1 unfoldnd==0.2.3"
if [ "${1:-}" = "--prepare" ]; then
  mkdir -p .git/info && touch .git/info/exclude
  grep -qx '/.whl/' .git/info/exclude || echo /.whl/ >> .git/info/exclude
  grep -qx '/.gpu-data/' .git/info/exclude || echo /.gpu-data/ >> .git/info/exclude
  rm -rf .whl && mkdir -p .whl .gpu-data
  # shellcheck disable=SC2086
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform any -d .whl $WHEELS
  cp -r ../shared/data/cifar10 ../shared/data/mnist .gpu-data/
  du -sh .whl .gpu-data training
  exit 0
fi
STOP_AFTER="${STOP_AFTER:-40}"
OUT="${OUT:-/tmp/gpu_out}"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" BNNFLOW_DATA_DIR="$PWD/.gpu-data" PYTHONUNBUFFERED=1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
for run in training/*/; do
  test -f "$run/command" || continue
  echo "== $run: $(cat "$run/command")"
  # shellcheck disable=SC2046
  python3 -c "import argparse, sys; from bnnflow import cli; p = argparse.ArgumentParser(); cli._train_opts(p); \
sys.exit(cli._train(p.parse_args(sys.argv[1:])))" $(cat "$run/command") --out "$run" --resume \
    --stop-after "$STOP_AFTER" || true
  mkdir -p "$OUT/$run"
  cp "$run"/state.pt "$run"/model.pt "$OUT/$run" 2>/dev/null || true
done
