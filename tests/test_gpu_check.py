"""`scripts/gpu_check.py` where there is no GPU: its help, its CPU fallback, and the rule of its training task."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "gpu_check.py"
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import gpu_check  # noqa: E402


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300)


def test_help_names_every_option():
    result = run_script("--help")
    assert result.returncode == 0, result.stderr
    for option in ("--checks", "--batch-sizes", "--training-steps", "--timed-steps"):
        assert option in result.stdout


@pytest.mark.slow
def test_without_cuda_it_says_so_and_passes_the_padding_check_on_cpu():
    result = run_script()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CUDA is not available" in result.stdout
    assert result.stdout.count("PASS") == 6 and "FAIL" not in result.stdout  # 3 cell types × right and left


def test_training_task_tags_read_both_neighbours():
    batch = gpu_check.neighbour_tagging_batch(4, 9, vocab_size=32, generator=torch.Generator().manual_seed(0))
    input_ids, labels = batch["input_ids"], batch["labels"]
    for row in range(4):
        length = int(batch["attention_mask"][row].sum())
        padded = [0, *input_ids[row, :length].tolist(), 0]
        expected = [2 * (padded[t - 1] % 2) + padded[t + 1] % 2 for t in range(1, length + 1)]
        assert labels[row, :length].tolist() == expected
        assert (labels[row, length:] == -100).all()
