#!/usr/bin/env bash
# Benchmark binadd against TensorFlow and PyTorch eager (see scripts/bench.py).
#
#   scripts/bench.sh                 # side-by-side timing, 3 rounds
#   scripts/bench.sh --reps 5
#   scripts/bench.sh --scaling       # binadd's time per iteration over sizes
#
# PyTorch comes from the per-user install of scripts/fetch-libtorch.sh.
# TensorFlow: set TF_PYTHON to an interpreter that has it, e.g. after
#   python3 -m venv ~/tfenv && ~/tfenv/bin/pip install tensorflow-cpu numpy pandas
#   TF_PYTHON=~/tfenv/bin/python scripts/bench.sh
# A peer that is not installed is skipped with a hint.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-libtorch.sh >/dev/null
cargo build --release --quiet
torch_path=$(cd -P .libtorch/.. && pwd)
exec python3 scripts/bench.py --torch-path "$torch_path" --tf-python "${TF_PYTHON:-}" "$@"
