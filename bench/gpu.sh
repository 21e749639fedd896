#!/usr/bin/env bash
# One-shot GPU check for a CUDA machine, from a fresh clone, in under 8 minutes:
#   bash bench/gpu.sh              the full-size random-weight pipeline in fp16 and bf16 (s per frame·step, peak
#                                  VRAM, decode) and the tiny-weight parity of GPU fp16/bf16 against CPU fp32
#   bash bench/gpu.sh --dry-run    the same code paths on the CPU at tiny sizes (tests/test_gpu_check.py runs it)
# Other arguments go to bench/gpu_check.py (--dtypes, --size, --frames, --steps, --device, --shared).
# Python: $FYE_PYTHON_BIN, else .venv/bin/python or python3 when they have torch and diffusers, else ./dev setup.
# Not covered: the same run through a ComfyUI server (tests/test_comfyui_animate_e2e.py does that on the CPU).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

usable() { "$1" -c 'import torch, diffusers, safetensors, numpy, PIL' >/dev/null 2>&1; }

py=${FYE_PYTHON_BIN:-}
if [ -z "$py" ]; then
  for candidate in .venv/bin/python python3; do
    if command -v "$candidate" >/dev/null 2>&1 && usable "$candidate"; then py=$candidate; break; fi
  done
fi
if [ -z "$py" ]; then
  echo "[gpu.sh] no Python with torch and diffusers: ./dev setup" >&2
  ./dev setup
  py=.venv/bin/python
fi

if [[ " $* " != *" --dry-run "* ]] && command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
start=$(date +%s)
rc=0
PYTHONUNBUFFERED=1 timeout 470 "$py" bench/gpu_check.py "$@" || rc=$?
[ "$rc" -eq 124 ] && echo "[gpu.sh] stopped after 470 s: the check did not fit in 8 minutes" >&2
echo "[gpu.sh] $(( $(date +%s) - start )) s, exit $rc"
exit "$rc"
