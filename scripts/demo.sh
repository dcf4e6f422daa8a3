#!/usr/bin/env bash
# The main job: install what is missing, build, run the sim-backend demo.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target sim_demo >/dev/null
IOALLOC_BACKEND=sim build/examples/sim_demo
