"""Length scaling: tokens/s and peak memory of the BiLSTM tagger against a BERT tagger of the same non-embedding
size, in inference and for a training step, with a plot of both."""

import argparse
import contextlib
import os
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity
from transformers import BertConfig, BertForTokenClassification

from .common import Report, Row, Section, interleaved, median, ratio
from .sizes import Sizes
from .workloads import NUM_RANDOM_LABELS, Batch, birnn_tagger, training_step

PLOT_FILE = "length_scaling.png"
MODES = ("inference", "training")
BERT_LAYERS = 12
BERT_HEADS = 2
MAX_ROUNDS = 3  # rounds per measurement up to LONG_LENGTH, and one round above it: keeps the run bounded
LONG_LENGTH = 2048


def run(args: argparse.Namespace, sizes: Sizes, report: Report) -> None:
    """One row per length and mode; BERT's training step is left out above `bert_training_max_length`."""
    torch.manual_seed(0)
    birnn = birnn_tagger(sizes)
    bert_config = _matched_bert_config(sizes)
    bert = BertForTokenClassification._from_config(bert_config, attn_implementation="sdpa")
    models = {"BiLSTM": birnn, "BERT": bert}
    parameters = {name: _non_embedding_parameters(model) for name, model in models.items()}
    optimizers = {name: torch.optim.AdamW(model.parameters()) for name, model in models.items()}
    generator = torch.Generator().manual_seed(0)
    rows: list[Row] = []
    points: list[dict] = []
    for length in sizes.scaling_lengths:
        batch_size = max(1, sizes.scaling_tokens // length)
        batch = {
            "input_ids": torch.randint(1, sizes.vocab_size, (batch_size, length), generator=generator),
            "attention_mask": torch.ones(batch_size, length, dtype=torch.long),
            "labels": torch.randint(0, NUM_RANDOM_LABELS, (batch_size, length), generator=generator),
        }
        repeats = min(args.repeats, MAX_ROUNDS) if length <= LONG_LENGTH else 1
        for mode in MODES:
            too_long = mode == "training" and length > sizes.bert_training_max_length
            measured = {name: model for name, model in models.items() if not (name == "BERT" and too_long)}
            speed, memory, times = _scaling_measurement(measured, optimizers, batch, mode, repeats)
            rows.append(
                [length, batch_size, mode, speed["BiLSTM"], speed.get("BERT", "—")]
                + [1 / ratio(times, "BiLSTM", "BERT") if "BERT" in times else "—"]
                + [round(memory["BiLSTM"], 1), round(memory["BERT"], 1) if "BERT" in memory else "—"]
            )
            points += [
                {"model": name, "length": length, "mode": mode, "tokens/s": speed[name], "peak MiB": memory[name]}
                for name in measured
            ]
        print(f"(scaling: L = {length} measured)", flush=True)
    report.table(
        "scaling",
        f"Length scaling: BiLSTM vs BERT ({parameters['BiLSTM']:,} vs {parameters['BERT']:,} non-embedding "
        f"parameters; {BERT_LAYERS} × {bert_config.hidden_size} BERT, sdpa), ~{sizes.scaling_tokens} tokens per "
        "batch, no padding",
        [
            "L",
            "batch",
            "mode",
            "BiLSTM tok/s",
            "BERT tok/s",
            "BiLSTM / BERT speed",
            "BiLSTM peak MiB",
            "BERT peak MiB",
        ],
        rows,
    )
    plot_path = Path(args.output_dir) / PLOT_FILE
    plot_scaling(points, plot_path, args.threads)
    report.figure(plot_path, "Tokens/s and peak memory per step of the BiLSTM and BERT taggers against length")


def _matched_bert_config(sizes: Sizes) -> BertConfig:
    """A BERT whose non-embedding parameter count matches the BiLSTM tagger's of the same `sizes`."""
    return BertConfig(
        vocab_size=sizes.vocab_size,
        hidden_size=sizes.hidden_size // 2,
        num_hidden_layers=BERT_LAYERS,
        num_attention_heads=BERT_HEADS,
        intermediate_size=sizes.hidden_size * 2,
        max_position_embeddings=max(sizes.scaling_lengths),
        num_labels=NUM_RANDOM_LABELS,
    )


def _scaling_measurement(
    models: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer], batch: Batch, mode: str, repeats: int
) -> tuple[dict[str, float], dict[str, float], dict[str, list[float]]]:
    """(tokens/s, peak MiB, times) of each model, in inference or for a training step."""
    for model in models.values():
        model.train(mode == "training")
    with torch.inference_mode(mode == "inference"):
        if mode == "training":
            runs = {name: partial(training_step, model, optimizers[name], **batch) for name, model in models.items()}
        else:
            inputs = {key: batch[key] for key in ("input_ids", "attention_mask")}
            runs = {name: partial(model, **inputs) for name, model in models.items()}
        memory = {name: peak_memory_mb(run) for name, run in runs.items()}  # also the warm-up call
        times = interleaved(runs, repeats, warm_up=False)
    tokens = batch["input_ids"].numel()
    return {name: tokens / median(values) for name, values in times.items()}, memory, times


def _non_embedding_parameters(model: nn.Module) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name)


def peak_memory_mb(run: Callable[[], object]) -> float:
    """Peak of the bytes torch allocates while `run` runs, above what was allocated before (profiler memory events;
    weights are not counted, activations, gradients and optimizer states created inside are)."""
    with _silenced_stderr(), torch.profiler.profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profile:
        run()
    events = profile.profiler.kineto_results.events()
    changes = sorted((event.start_ns(), event.nbytes()) for event in events if event.name() == "[memory]")
    allocated = peak = 0
    for _, nbytes in changes:
        allocated += nbytes
        peak = max(peak, allocated)
    return peak / 2**20


@contextlib.contextmanager
def _silenced_stderr() -> Iterator[None]:
    """The profiler's C++ side logs every start and stop on stderr."""
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def plot_scaling(points: list[dict], path: Path, threads: int) -> None:
    """Throughput and peak memory against length, log-log, one line per model and mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for mode, style in zip(MODES, ("-", "--"), strict=True):
        for name, color in (("BiLSTM", "C0"), ("BERT", "C1")):
            selected = [point for point in points if point["mode"] == mode and point["model"] == name]
            lengths = [point["length"] for point in selected]
            for axis, key in zip(axes, ("tokens/s", "peak MiB"), strict=True):
                values = [point[key] for point in selected]
                axis.plot(lengths, values, style, color=color, marker="o", label=f"{name} {mode}")
    for axis, ylabel in zip(axes, ("tokens / s", "peak MiB allocated"), strict=True):
        axis.set(xscale="log", yscale="log", xlabel="sequence length L", ylabel=ylabel)
        axis.grid(alpha=0.3)
        axis.legend()
    axes[0].set_title(f"Throughput ({threads} thread{'s' if threads != 1 else ''})")
    axes[1].set_title("Peak memory per step")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


SECTION = Section(
    name="scaling",
    run=run,
    title="Length scaling: BiLSTM vs BERT",
    summary=(
        "Tokens/s and peak memory allocated per call of the BiLSTM tagger against a `BertForTokenClassification` "
        "(sdpa attention) with the same non-embedding parameter count, in inference and for a training step, from "
        "short to long sequences at about the same number of tokens per batch, without padding."
    ),
)
