#!/usr/bin/env bash
# Download, on a machine with network, the wheels benchmarks/gpu_check.sh needs on a GPU machine that has
# none (this project's lent H200: Python 3.12, torch + triton installed, no pydantic, no liger-kernel).
# Writes .whl/ in the repo root (ignored by git); pass carry=[".whl"] to the device run.
#   bash benchmarks/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
PLAT="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
# always installed there: sweeps.config.trial_config needs pydantic; loss_bench's Liger contender needs liger-kernel
ALWAYS="pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0 liger-kernel==0.8.5"
# installed there only if its transformers lacks the PIL image processors the tiny models use
TRANSFORMERS="transformers==5.24.0 regex==2026.11.19"
for spec in $ALWAYS; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLAT -d .whl "$spec"
done
mkdir -p .whl/transformers
for spec in $TRANSFORMERS; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLAT \
    -d .whl/transformers "$spec"
done
du -sh .whl
