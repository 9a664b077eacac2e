"""Subnormal floats on padded batches at long lengths: a training step with and without flush-to-zero."""

import argparse

import torch

from .common import Report, Section, interleaved, median, ms, ratio
from .sizes import Sizes
from .workloads import birnn_tagger, random_batch, training_step


def run(args: argparse.Namespace, sizes: Sizes, report: Report) -> None:
    """The same training step timed with subnormals kept and flushed; flushing is switched off after each step."""
    torch.manual_seed(0)
    model = birnn_tagger(sizes).train()
    optimizer = torch.optim.AdamW(model.parameters())
    generator = torch.Generator().manual_seed(0)
    input_ids, mask, labels = random_batch(sizes, sizes.denormal_length, sizes.denormal_batch_size, generator)

    def step(flush: bool) -> None:
        torch.set_flush_denormal(flush)
        try:
            training_step(model, optimizer, input_ids=input_ids, attention_mask=mask, labels=labels)
        finally:
            torch.set_flush_denormal(False)

    times = interleaved({"default": lambda: step(False), "flush-to-zero": lambda: step(True)}, args.repeats)
    report.table(
        "denormal",
        f"Training step on a padded batch (batch {sizes.denormal_batch_size}, lengths in [L/2, L], "
        f"L = {sizes.denormal_length}): subnormal floats kept vs flushed to zero",
        ["default ms", "flush-to-zero ms", "default / flush-to-zero"],
        [[ms(median(times["default"])), ms(median(times["flush-to-zero"])), ratio(times, "default", "flush-to-zero")]],
    )


SECTION = Section(
    name="denormal",
    run=run,
    title="Subnormal floats: flush-to-zero",
    summary=(
        "Whether subnormal floats slow a training step on a padded batch at a long length: the same step with "
        "subnormals kept (the default) and flushed to zero (`torch.set_flush_denormal(True)`)."
    ),
)
