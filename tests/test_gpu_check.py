"""``bench/gpu.sh --dry-run``: the GPU check's code paths (random full-size-layout networks, sampling, decoding, the
fp16/bf16 parity against fp32) on the CPU at tiny sizes, so the script works the first time a GPU is at hand."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_runs_every_part():
    env = {**os.environ, "FYE_PYTHON_BIN": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(REPO / "bench" / "gpu.sh"), "--dry-run"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    for dtype in ("fp16", "bf16"):
        assert re.search(rf"\[pipeline {dtype}\] 6 frames × 2 steps .* s per frame·step", out), out
        assert re.search(rf"\[parity {dtype}\] .* ok;", out), out
    assert "[gpu.sh]" in out and "exit 0" in out


def test_gpu_check_refuses_a_missing_cuda_device():
    import torch

    if torch.cuda.is_available():
        return
    done = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py")], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2 and "no CUDA device" in done.stdout
