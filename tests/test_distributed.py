"""Data-parallel training through `Trainer` on 2 CPU processes (gloo), launched by `torchrun`.

`distributed_worker.py` trains the same tiny models once in 2 processes × 4 rows and once in 1 process × 8 rows,
reading the data in the same order. With the loss normalised over the global batch, both runs take the same steps:
every rank ends with the single-process weights, and the logged loss is the single-process loss (transformers
multiplies a model's loss by the number of processes when the model accepts loss kwargs; a loss that was not
divided by the global `num_items_in_batch` then comes out, and trains, that many times too large).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from distributed_worker import TASKS, build_model

WORKER = Path(__file__).with_name("distributed_worker.py")
NUM_PROCESSES = 2
GLOBAL_BATCH_SIZE = 8
ATOL = 1e-5

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.skipif(
        not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is unavailable"
    ),
]


def can_open_local_port() -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
        return True
    except OSError:
        return False


def run_worker(output_dir: Path, num_processes: int) -> dict:
    """Runs the worker under torchrun (or as a plain script for 1 process) and returns rank 0's summary."""
    if num_processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={num_processes}"]
    else:
        launcher = [sys.executable]
    command = [*launcher, str(WORKER), "--output-dir", str(output_dir)]
    command += ["--per-device-batch-size", str(GLOBAL_BATCH_SIZE // num_processes)]
    # CPU processes even where CUDA is present: the test is about Trainer's DDP bookkeeping, not the device.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    except OSError as error:
        pytest.skip(f"cannot spawn worker processes: {error}")
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return json.loads((output_dir / "rank0.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, tuple[Path, dict]]:
    """{number of processes: (output folder, rank 0's summary)} for 1 and `NUM_PROCESSES` processes."""
    if not can_open_local_port():
        pytest.skip("cannot open a local TCP port for torchrun's rendezvous")
    results = {}
    for num_processes in (1, NUM_PROCESSES):
        output_dir = tmp_path_factory.mktemp(f"processes{num_processes}")
        results[num_processes] = (output_dir, run_worker(output_dir, num_processes))
    return results


def load_weights(output_dir: Path, rank: int, task: str) -> dict[str, torch.Tensor]:
    return torch.load(output_dir / f"rank{rank}-{task}.pt", weights_only=True)


def test_training_ran_data_parallel(runs):
    output_dir, summary = runs[NUM_PROCESSES]
    assert summary["world_size"] == NUM_PROCESSES
    for task in TASKS:
        # `trainer.evaluate()` before `trainer.train()` leaves the model unwrapped (no gradient all-reduce)
        assert summary["runs"][task]["model_wrapper"] == "DistributedDataParallel", task
        assert len(summary["runs"][task]["losses"]) == 4, task
        assert all((output_dir / f"rank{rank}-{task}.pt").exists() for rank in range(NUM_PROCESSES)), task


@pytest.mark.parametrize("task", TASKS)
def test_every_rank_ends_with_the_same_weights(runs, task):
    output_dir, _ = runs[NUM_PROCESSES]
    rank0_weights = load_weights(output_dir, 0, task)
    for rank in range(1, NUM_PROCESSES):
        for name, tensor in load_weights(output_dir, rank, task).items():
            assert torch.equal(tensor, rank0_weights[name]), f"rank {rank}: {name}"


@pytest.mark.parametrize("task", TASKS)
def test_weights_match_one_process_with_the_same_global_batch(runs, task):
    single_weights = load_weights(runs[1][0], 0, task)
    distributed_weights = load_weights(runs[NUM_PROCESSES][0], 0, task)
    initial_weights = build_model(task, seed=0).state_dict()
    moved = max((single_weights[name] - initial_weights[name]).abs().max() for name in single_weights)
    assert moved > 100 * ATOL, "training hardly moved the weights, so agreeing within ATOL would prove nothing"
    for name, tensor in distributed_weights.items():
        torch.testing.assert_close(tensor, single_weights[name], atol=ATOL, rtol=0, msg=name)


@pytest.mark.parametrize("task", TASKS)
def test_logged_loss_is_the_single_process_loss(runs, task):
    """Not `NUM_PROCESSES` times it."""
    single_losses = runs[1][1]["runs"][task]["losses"]
    distributed_losses = runs[NUM_PROCESSES][1]["runs"][task]["losses"]
    assert distributed_losses == pytest.approx(single_losses, abs=ATOL)
