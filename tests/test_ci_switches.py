"""CI's switches: without ../shared a golden test skips with the reason, under FYE_REQUIRE_SHARED=1 it fails."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO, REQUIRE_SHARED_ENV

GOLDEN_TEST = "tests/test_networks_parity.py::test_stored_positional_tables_are_the_computed_ones"


def _run_golden_test(tmp_path, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != REQUIRE_SHARED_ENV}
    environ.update(FYE_SHARED_DIR=str(tmp_path / "no-shared-here"), OMP_NUM_THREADS="1", **env)
    return subprocess.run([sys.executable, "-m", "pytest", GOLDEN_TEST, "-rs", "-q", "-p", "no:randomly"],
                          cwd=REPO, env=environ, capture_output=True, text=True, timeout=300)


def test_a_fresh_clone_without_shared_skips_with_the_reason(tmp_path):
    run = _run_golden_test(tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 skipped" in run.stdout and "needs the shared fixtures folder" in run.stdout


def test_ci_fails_without_shared(tmp_path):
    run = _run_golden_test(tmp_path, **{REQUIRE_SHARED_ENV: "1"})
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 error" in run.stdout or "1 failed" in run.stdout
    assert f"{REQUIRE_SHARED_ENV}=1: these tests must run" in run.stdout
