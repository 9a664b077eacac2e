#!/usr/bin/env python
"""Checks a BiRNN on a CUDA GPU: padding invariance on the cuDNN path, a bf16 autocast training run, and throughput.

    python scripts/gpu_check.py                                    # all three checks
    python scripts/gpu_check.py --checks throughput --batch-sizes 32 256 1024 4096

(with `hf_birnn` installed, or `PYTHONPATH=src`). Without CUDA it says so, runs the padding check on CPU and exits 0
when that passes. It exits 1 when a check fails.

- padding: each row's outputs alone equal its outputs in a right- or left-padded batch, for every cell type, in fp32
  (TF32 off, so only the kernels' own rounding differs) and under bf16 autocast.
- training: a few hundred bf16 autocast steps of `BiRNNForTokenClassification` on a synthetic tagging task whose tags
  need both directions; the loss must fall below half its start.
- throughput: training tokens/s of the seed configuration (d2l's character model: 2 BiLSTM layers of 256 units,
  embeddings of 28 and a linear output over the 28 characters, batches of 35 steps) next to d2l's figure.
"""

import argparse
import contextlib
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from hf_birnn import BiRNNConfig, BiRNNForTokenClassification, BiRNNModel
from hf_birnn.testing_utils import pad_batch

CHECKS = ("padding", "training", "throughput")
CELL_TYPES = ("rnn", "gru", "lstm")
# Largest |Δ| between a row alone and in a padded batch: fp32 differs by kernel rounding only; under autocast the
# cuDNN RNN computes in half precision (a 10-bit mantissa), and alone vs batched may take different kernels.
PADDING_ATOL = {"fp32": 1e-4, "bf16": 2e-2}
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16}
# d2l.ai's bidirectional LSTM language model (2 layers × 256 hidden units, 28 characters, batch 32 × 35 steps),
# as printed in the book on its own GPU.
D2L_TOKENS_PER_SECOND = 131_129
D2L_NUM_STEPS = 35
D2L_VOCAB_SIZE = 28


@dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    dtype = AUTOCAST_DTYPES[precision]
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


@contextlib.contextmanager
def tf32_disabled() -> Iterator[None]:
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved




# ---------------------------------------------------------------------------------------------------------------------
# (a) padding invariance
# ---------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def check_padding(device: torch.device, precisions: list[str], seed: int) -> list[CheckResult]:
    generator = torch.Generator().manual_seed(seed)
    rows = [torch.randint(1, 100, (length,), generator=generator) for length in (7, 40, 1, 0, 23, 16)]
    results = []
    with tf32_disabled():
        for cell_type in CELL_TYPES:
            torch.manual_seed(seed)
            config = BiRNNConfig(
                vocab_size=100, embedding_size=32, hidden_size=48, backward_hidden_size=32, cell_type=cell_type
            )
            model = BiRNNModel(config).to(device).eval()
            for precision in precisions:
                for side in ("right", "left"):
                    worst, padding_leak = padding_differences(model, rows, side, device, precision)
                    atol = PADDING_ATOL[precision]
                    detail = f"max |alone - batched| {worst:.1e} (atol {atol:.0e}), at padding {padding_leak:.0e}"
                    passed = worst <= atol and padding_leak == 0
                    results.append(CheckResult(f"padding {cell_type} {precision} {side}", passed, detail))
    return results


def padding_differences(
    model: BiRNNModel, rows: list[torch.Tensor], side: str, device: torch.device, precision: str
) -> tuple[float, float]:
    """(largest |Δ| of hidden states and pooled outputs between each row alone and in the batch, largest |output| at
    padding and of empty rows, which must be exactly 0)."""
    input_ids, attention_mask = pad_batch(rows, side, seq_len=max(len(row) for row in rows) + 3)
    real = attention_mask.bool().to(device)
    with autocast(device, precision):
        batched = model(input_ids.to(device), attention_mask=attention_mask.to(device))
        padding_leak = batched.last_hidden_state[~real].abs().max().item()
        worst = 0.0
        for i, row in enumerate(rows):
            if len(row) == 0:
                padding_leak = max(padding_leak, batched.pooler_output[i].abs().max().item())
                continue
            alone = model(row[None].to(device))
            hidden_gap = (batched.last_hidden_state[i, real[i]] - alone.last_hidden_state[0]).abs().max().item()
            pooled_gap = (batched.pooler_output[i] - alone.pooler_output[0]).abs().max().item()
            worst = max(worst, hidden_gap, pooled_gap)
    return worst, padding_leak


def rnn_compute_dtype(device: torch.device, precision: str) -> torch.dtype:
    """The dtype a recurrent kernel returns under `precision`: PyTorch's cuDNN autocast wrapper casts RNNs to fp16
    whatever dtype autocast was given."""
    rnn = nn.LSTM(8, 8, batch_first=True).to(device)
    with torch.no_grad(), autocast(device, precision):
        return rnn(torch.zeros(1, 2, 8, device=device))[0].dtype


# ---------------------------------------------------------------------------------------------------------------------
# (b) bf16 autocast training, (c) throughput
# ---------------------------------------------------------------------------------------------------------------------


def neighbour_tagging_batch(
    batch_size: int, max_length: int, vocab_size: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Right-padded rows whose tag at t is 2·(x_{t-1} mod 2) + (x_{t+1} mod 2), with x = 0 beyond the ends: one bit
    from each neighbour, so the tagger needs both directions."""
    lengths = torch.randint(max_length // 4, max_length + 1, (batch_size,), generator=generator)
    attention_mask = (torch.arange(max_length) < lengths[:, None]).long()
    input_ids = torch.randint(1, vocab_size, (batch_size, max_length), generator=generator) * attention_mask
    previous_ids = nn.functional.pad(input_ids[:, :-1], (1, 0))
    next_ids = nn.functional.pad(input_ids[:, 1:], (0, 1))
    labels = (2 * (previous_ids % 2) + next_ids % 2).masked_fill(attention_mask == 0, -100)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def training_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    device: torch.device,
    precision: str,
) -> torch.Tensor:
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, precision):
        loss = model(**batch).loss
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    optimizer.step()
    return loss.detach()


def check_training(device: torch.device, precision: str, num_steps: int, seed: int) -> CheckResult:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    vocab_size = 32
    config = BiRNNConfig(vocab_size=vocab_size, embedding_size=32, hidden_size=64, num_labels=4)
    model = BiRNNForTokenClassification(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(num_steps):
        batch = neighbour_tagging_batch(64, 32, vocab_size, generator)
        losses.append(training_step(model, optimizer, {k: v.to(device) for k, v in batch.items()}, device, precision))
    window = max(1, num_steps // 10)
    first, last = (torch.stack(part).mean().item() for part in (losses[:window], losses[-window:]))
    return CheckResult(
        name=f"training, {precision} autocast, {num_steps} steps",
        passed=last < 0.5 * first,
        detail=f"loss {first:.3f} → {last:.3f} (means of the first and last {window} steps; must halve)",
    )


def measure_throughput(
    device: torch.device, precision: str, batch_size: int, warmup_steps: int, timed_steps: int, seed: int
) -> tuple[float, float]:
    """(training tokens/s, last loss) of the seed configuration on full rows of `D2L_NUM_STEPS` tokens, no mask."""
    torch.manual_seed(seed)
    config = BiRNNConfig(
        vocab_size=D2L_VOCAB_SIZE,
        embedding_size=D2L_VOCAB_SIZE,
        hidden_size=256,
        num_hidden_layers=2,
        cell_type="lstm",
        num_labels=D2L_VOCAB_SIZE,
        embedding_dropout=0.0,
        hidden_dropout=0.0,
        classifier_dropout=0.0,
    )
    model = BiRNNForTokenClassification(config).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)  # d2l's optimiser for the character model
    batch = {
        "input_ids": torch.randint(1, D2L_VOCAB_SIZE, (batch_size, D2L_NUM_STEPS), device=device),
        "labels": torch.randint(0, D2L_VOCAB_SIZE, (batch_size, D2L_NUM_STEPS), device=device),
    }
    for _ in range(warmup_steps):
        training_step(model, optimizer, batch, device, precision)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(timed_steps):
        loss = training_step(model, optimizer, batch, device, precision)
    synchronize(device)
    elapsed = time.perf_counter() - start
    return batch_size * D2L_NUM_STEPS * timed_steps / elapsed, loss.item()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_throughput(
    device: torch.device, batch_sizes: list[int], warmup_steps: int, timed_steps: int, seed: int
) -> list[CheckResult]:
    results = []
    print(
        f"\n{'precision':<10} {'batch':>6} {'tokens/s':>12} {'× d2l':>7}   (d2l: {D2L_TOKENS_PER_SECOND:,} tokens/s)"
    )
    for precision in AUTOCAST_DTYPES:
        for batch_size in batch_sizes:
            tokens_per_second, loss = measure_throughput(
                device, precision, batch_size, warmup_steps, timed_steps, seed
            )
            ratio = tokens_per_second / D2L_TOKENS_PER_SECOND
            print(f"{precision:<10} {batch_size:>6} {tokens_per_second:>12,.0f} {ratio:>7.2f}")
            results.append(
                CheckResult(
                    name=f"throughput {precision} batch {batch_size}",
                    passed=math.isfinite(loss),
                    detail=f"{tokens_per_second:,.0f} tokens/s, final loss {loss:.3f}",
                )
            )
    return results


# ---------------------------------------------------------------------------------------------------------------------


def print_table(results: list[CheckResult]) -> None:
    width = max(len(result.name) for result in results)
    print(f"\n{'check':<{width}}  result  detail")
    for result in results:
        print(f"{result.name:<{width}}  {'PASS' if result.passed else 'FAIL':<6}  {result.detail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--checks", nargs="+", choices=CHECKS, default=list(CHECKS), help="the checks to run (default: all)"
    )
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 256, 1024], help="throughput batch sizes")
    parser.add_argument("--training-steps", type=int, default=300, help="steps of the bf16 training check")
    parser.add_argument("--warmup-steps", type=int, default=5, help="untimed steps before each throughput timing")
    parser.add_argument("--timed-steps", type=int, default=20, help="timed steps per throughput figure")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if not torch.cuda.is_available():
        print("CUDA is not available: running the padding check on CPU (fp32) only; the cuDNN, bf16 training and")
        print("throughput checks need a CUDA GPU.")
        results = check_padding(torch.device("cpu"), ["fp32"], args.seed)
        print_table(results)
        return 0 if all(result.passed for result in results) else 1

    device = torch.device("cuda")
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    print(f"RNN kernels under bf16 autocast compute in {rnn_compute_dtype(device, 'bf16')}")
    results = []
    if "padding" in args.checks:
        results += check_padding(device, list(AUTOCAST_DTYPES), args.seed)
    if "training" in args.checks:
        results.append(check_training(device, "bf16", args.training_steps, args.seed))
    if "throughput" in args.checks:
        results += check_throughput(device, args.batch_sizes, args.warmup_steps, args.timed_steps, args.seed)
    print_table(results)
    return 0 if all(result.passed for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
