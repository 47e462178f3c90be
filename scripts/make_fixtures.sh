#!/usr/bin/env bash
# Regenerate the TensorFlow reference fixtures in tests/fixtures/.
#
# Needs a Python with TensorFlow, numpy and pandas (pip install tensorflow-cpu numpy pandas).
# Set PYTHON to choose the interpreter, for example PYTHON=/root/tfenv/bin/python.
# Every run uses one TensorFlow thread. A 2-thread run of the full-size fixture gave
# bit-identical output, but other thread counts are untested.
# The fixtures were written with TensorFlow 2.21.0. The whole script took 28 s on a
# 2-vCPU Xeon VM, of which the full-size run trained for about 10 s.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}
script="$repo_root/scripts/tf_reference.py"
fixtures="$repo_root/tests/fixtures"
mkdir -p "$fixtures"

"$python" "$script" --threads 1 --seed 0 --samples 64 --iters 50 --out "$fixtures/tf_seed0_n64_i50.json"
"$python" "$script" --threads 1 --seed 1 --samples 1000 --iters 300 --out "$fixtures/tf_seed1_n1000_i300.json"
"$python" "$script" --threads 1 --seed 2 --samples 200 --iters 100 --out "$fixtures/tf_seed2_n200_i100.json"
"$python" "$script" --threads 1 --seed 0 --samples 10000 --iters 2000 --out "$fixtures/tf_seed0_full.json"
