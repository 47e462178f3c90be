#!/usr/bin/env bash
# Fetch libtorch if needed, then build and run every test.
# Tests run in release mode: they train real (small) networks, and release
# builds share their compiled dependencies with `binadd train`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-libtorch.sh
cargo test --release "$@"
