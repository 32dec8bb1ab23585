#!/usr/bin/env bash
# The GPU check of issue 14 (and issue 22's real-size row), in one go (~6-9 minutes on one H200), from the repo root:
#   bash benchmarks/gpu_check.sh
# It writes under $OUT (default ./gpu-check-out; at most 9 files):
#   env.txt              nvidia-smi, python/torch/triton/transformers/liger versions
#   triton_tests.txt     tests/test_triton_kernels.py compiled on the GPU (CI runs them in the interpreter)
#   loss_bfloat16.json   benchmarks/loss_bench.py --device cuda, N=16384, V=151936 (hard CE, soft label
#   loss_float32.json    auto=Triton and torch, dense, linear+loss, fused Triton and torch, Liger FLCE)
#   real_size_qwen2vl2b.json benchmarks/real_size.py, Qwen2-VL-2B-sized, LoRA bf16, micro-batch 8, planner vs peak
#   throughput_tiny.json benchmarks/trial_throughput.py, tiny model, workers 0 and 8
#   throughput_smolvlm.json  the same with the SmolVLM-256M-shaped model
#   trial_counting50.json    run_trial of sweeps/specs/trials/counting.yaml, 50 steps, bf16, 500 eval images
#   log.txt              everything the steps printed
#
# On this project's lent H200 (no network; torch and triton installed, pydantic and liger-kernel not):
# here, first `bash benchmarks/gpu_wheels.sh` (fills the ignored .whl/), then
#   device run: command "bash benchmarks/gpu_check.sh", carry [".whl"], timeout_s 580
# Each step has its own time cap, so one that hangs or fails leaves the others' results.
# ONLY="step names" reruns just those steps (e.g. ONLY="throughput_tiny").
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
PY=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export SLSWEEP_CACHE_DIR=${SLSWEEP_CACHE_DIR:-/tmp/slsweep-cache}
unset TRITON_INTERPRET

step() {  # step NAME SECONDS CMD...: run with a cap, log it, never stop the script
  local name=$1 cap=$2; shift 2
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi  # ONLY="a b": a rerun of some steps
  echo "=== $name (cap ${cap}s): $*" >>"$LOG"
  local t0=$SECONDS
  timeout "$cap" "$@" 2>>"$LOG"
  echo "=== $name: exit $? after $((SECONDS - t0)) s" >>"$LOG"
}

# Carried wheels (benchmarks/gpu_wheels.sh): pydantic, liger-kernel; transformers only if the installed
# one lacks the PIL image processors of the tiny models.
SITE=/tmp/slsweep-site
if ls .whl/*.whl >/dev/null 2>&1; then
  wheels=(.whl/*.whl)
  if ! $PY -c "import transformers.models.idefics3.image_processing_pil_idefics3" 2>/dev/null; then
    wheels+=(.whl/transformers/*.whl)
  fi
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}" \
    >>"$LOG" 2>&1
  export PYTHONPATH="$SITE:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
# The npm tokenizers of the real-size presets, carried in .whl/tokenizers (benchmarks/gpu_wheels.sh).
[ -d .whl/tokenizers ] && export SLSWEEP_TOKENIZER_CACHE=$PWD/.whl/tokenizers

{
  nvidia-smi
  $PY - <<'EOF'
import importlib, sys
import torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "|", torch.cuda.get_device_name() if torch.cuda.is_available() else "NO GPU")
for name in ("triton", "transformers", "pydantic", "liger_kernel", "ntloss"):
    try:
        mod = importlib.import_module(name)
        print(name, getattr(mod, "__version__", "?"))
    except Exception as exc:
        print(name, "missing:", type(exc).__name__, exc)
EOF
} >"$OUT/env.txt" 2>&1

CORES=$(nproc)
W=$(( CORES > 9 ? 8 : (CORES > 1 ? CORES - 1 : 1) ))
# Most wanted first: a step the device's time limit cuts off leaves the earlier ones' results.
step triton_tests 100 $PY -m pytest -q -p no:cacheprovider tests/test_triton_kernels.py >"$OUT/triton_tests.txt"

for dt in bfloat16 float32; do
  step "loss_$dt" 90 $PY benchmarks/loss_bench.py --device cuda --tokens 16384 --vocab 151936 --hidden 896 \
    --dtype "$dt" --repeats 10 --fused-repeats 5 --json >"$OUT/loss_$dt.json"
done

# Qwen2-VL-2B at its published size (random weights), LoRA in bf16, micro-batch 8: the slsweep step
# against the plain HF step, and the memory planner's estimate against the CUDA peak.
step real_size_qwen2vl2b 130 $PY benchmarks/real_size.py --preset qwen2-vl-2b --lora --dtype bfloat16 \
  --micro-batch 8 --steps 3 --out "$OUT/real_size_qwen2vl2b.json"

step throughput_smolvlm 120 $PY benchmarks/trial_throughput.py --device cuda --model smolvlm-256m-shape \
  --workers "0,$W" --steps 30 --batch-size 16 --json --out "$OUT/throughput_smolvlm.json" >/dev/null

# The default counting trial (sweeps/specs/trials/counting.yaml), 50 steps in bf16, through run_trial (what
# `slsweep trial` runs; the CLI itself needs Ray, absent there), scored on its 500 held-out images.
step trial_counting50 90 $PY benchmarks/trial_throughput.py --device cuda --model tiny --workers "$W" --steps 50 \
  --batch-size 32 --mixed-precision bf16 --eval-size 500 --json --out "$OUT/trial_counting50.json" >/dev/null
step throughput_tiny 60 $PY benchmarks/trial_throughput.py --device cuda --model tiny --workers "0,$W" \
  --steps 60 --json --out "$OUT/throughput_tiny.json" >/dev/null

ls -la "$OUT" >>"$LOG"
echo "gpu_check done: results in $OUT"
