"""BiRNNForTokenClassification against raw nn.LSTM taggers with the same weights, and whether running the two
directions as separate nn.LSTM calls (as BiRNNLayer does) costs against one bidirectional call."""

import argparse
from functools import partial

import torch
from torch import nn

from .common import Report, Row, Section, interleaved, median, ms, ratio
from .sizes import Sizes
from .workloads import RawBiLSTMTagger, birnn_tagger, random_batch, raw_training_step, training_step

CALL_TOKENS = 128  # short lengths run several calls per sample, up to about this many steps per row


def run(args: argparse.Namespace, sizes: Sizes, report: Report) -> None:
    """The BiRNN's cost over the raw taggers, in inference and for a training step, then the directions' table."""
    generator = torch.Generator().manual_seed(0)
    rounds = 2 * args.repeats  # short calls, easily disturbed by other processes: more rounds, several calls each
    rows = []
    for length in sizes.overhead_lengths:
        rows += _rows_at_length(sizes, length, rounds, generator)
    report.table(
        "overhead",
        f"Overhead: BiRNNForTokenClassification vs raw nn.Embedding → nn.LSTM → nn.Linear (batch {sizes.batch_size}, "
        f"lengths in [L/2, L], right padding; {rounds} rounds)",
        ["L", "mode", "BiRNN ms", "packed ms", "padded ms", "BiRNN / packed", "BiRNN / padded", "max |Δ| vs packed"],
        rows,
    )
    directions(args, sizes, report)


def _rows_at_length(sizes: Sizes, length: int, rounds: int, generator: torch.Generator) -> list[Row]:
    """The inference row and the training-step row at one length."""
    calls = max(1, CALL_TOKENS // length)
    torch.manual_seed(0)  # same weights in all three at the start of each length (training moves them apart)
    birnn = birnn_tagger(sizes)
    raws = {"packed": RawBiLSTMTagger(birnn, packed=True), "padded": RawBiLSTMTagger(birnn, packed=False)}
    optimizers = {name: torch.optim.AdamW(model.parameters()) for name, model in [("birnn", birnn), *raws.items()]}
    input_ids, mask, labels = random_batch(sizes, length, sizes.batch_size, generator)
    for model in (birnn, *raws.values()):
        model.eval()
    with torch.inference_mode():
        real = mask.bool()[..., None]
        exact = (birnn(input_ids=input_ids, attention_mask=mask).logits - raws["packed"](input_ids, mask)) * real
        times = interleaved(
            {
                "birnn": partial(birnn, input_ids=input_ids, attention_mask=mask),
                "packed": partial(raws["packed"], input_ids, mask),
                "padded": partial(raws["padded"], input_ids, mask),
            },
            rounds,
            calls=calls,
        )
    inference_row = _overhead_row(length, "inference", times, float(exact.abs().max()))
    for model in (birnn, *raws.values()):
        model.train()
    times = interleaved(
        {
            "birnn": partial(
                training_step, birnn, optimizers["birnn"], input_ids=input_ids, attention_mask=mask, labels=labels
            ),
            **{
                name: partial(raw_training_step, raw, optimizers[name], input_ids, mask, labels)
                for name, raw in raws.items()
            },
        },
        rounds,
        calls=calls,
    )
    return [inference_row, _overhead_row(length, "training step", times, None)]


def _overhead_row(length: int, mode: str, times: dict[str, list[float]], difference: float | None) -> Row:
    return [
        length,
        mode,
        ms(median(times["birnn"])),
        ms(median(times["packed"])),
        ms(median(times["padded"])),
        ratio(times, "birnn", "packed"),
        ratio(times, "birnn", "padded"),
        "—" if difference is None else f"{difference:.1e}",
    ]


def directions(args: argparse.Namespace, sizes: Sizes, report: Report) -> None:
    """Does running the directions as two nn.LSTM calls (as BiRNNLayer does) cost against one bidirectional call?"""
    length = sizes.overhead_lengths[-1]
    inputs = torch.randn(sizes.batch_size, length, sizes.embedding_size)
    both = nn.LSTM(sizes.embedding_size, sizes.hidden_size, batch_first=True, bidirectional=True)
    forward = nn.LSTM(sizes.embedding_size, sizes.hidden_size, batch_first=True)
    backward = nn.LSTM(sizes.embedding_size, sizes.hidden_size, batch_first=True)

    def separate() -> torch.Tensor:
        return torch.cat([forward(inputs)[0], backward(inputs.flip(1))[0].flip(1)], dim=-1)

    with torch.inference_mode():
        inference = interleaved({"one call": lambda: both(inputs), "two calls": separate}, 2 * args.repeats)
    training = interleaved(
        {"one call": lambda: both(inputs)[0].sum().backward(), "two calls": lambda: separate().sum().backward()},
        2 * args.repeats,
    )
    report.table(
        "directions",
        f"One bidirectional nn.LSTM layer vs two unidirectional calls (batch {sizes.batch_size}, L = {length})",
        ["mode", "one call ms", "two calls ms", "two / one"],
        [
            [
                mode,
                ms(median(times["one call"])),
                ms(median(times["two calls"])),
                ratio(times, "two calls", "one call"),
            ]
            for mode, times in (("inference", inference), ("forward + backward", training))
        ],
    )


SECTION = Section(
    name="overhead",
    run=run,
    title="Overhead: BiRNN vs raw nn.LSTM",
    summary=(
        "`BiRNNForTokenClassification` against raw `nn.Embedding → nn.LSTM(bidirectional) → nn.Linear` taggers "
        "with the same weights: on a `PackedSequence` (padding-exact, like the BiRNN) and on the padded batch (not "
        "padding-exact), in inference and for a training step; then one bidirectional `nn.LSTM` call against the "
        "two unidirectional calls a `BiRNNLayer` makes."
    ),
    goal="BiRNN / packed ≤ 1.05× the time, in inference and for a training step.",
)
