#!/usr/bin/env python
"""Reproduce the seed's wrong application of a BiRNN (d2l.ai, "Bidirectional Recurrent Neural Networks") with this
package's classes, next to the two right ones.

On "The Time Machine" with d2l's preprocessing and character vocabulary, three 2-layer LSTMs (256 hidden units a
direction, as d2l's `nn.LSTM(28, 256, num_layers=2, bidirectional=True)`) train with d2l's schedule: batches of
32 × 35 characters from its sequential iterator, SGD at learning rate 1, gradients clipped to norm 1.

- (a) bidirectional, next-character prediction: the leak. The backward direction has already read the character to
  predict, so the training perplexity falls towards 1 by copying it, while greedy generation, where that character
  does not exist yet, produces garbage ("time travellerererer").
- (b) unidirectional, next-character prediction: the model for generating text.
- (c) bidirectional, masked characters: the objective for a BiRNN; scored by filling in masked held-out characters.

The last 10 % of the corpus is held out. With the same held-out windows, "prefix only" scores each character from
the characters before it alone, as generation sees them: for (b) it equals the usual perplexity, for (a) it shows
what the model really learnt.

    python scripts/reproduce_seed.py                         # 60 epochs: 5-10 minutes on 2 shared CPU cores
    python scripts/reproduce_seed.py --num_epochs 500 --device cuda --output_file outputs/seed/seed_500.md  # d2l's

As in d2l, the input is a one-hot vector (here a fixed identity embedding) and the output one linear layer (the LM
head's projection; its decoder is a fixed identity). Unlike d2l, each 35-step window starts from a zero state (d2l's
sequential iterator carries the state over) and the weights start from the package's initialisation.
"""

import logging
import math
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from transformers import HfArgumentParser

from hf_birnn import BiRNNConfig, BiRNNForCausalLM, BiRNNForMaskedLM, BiRNNPreTrainedModel
from hf_birnn.tagging import IGNORE_INDEX

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
TIME_MACHINE = REPO_ROOT.parent / "shared" / "data" / "timemachine" / "timemachine.txt"
MASK_TOKEN = "<mask>"
EXPERIMENTS = {
    "a": ("BiLSTM", "next character", True),
    "b": ("LSTM", "next character", False),
    "c": ("BiLSTM", "masked characters", True),
}


@dataclass
class SeedExperimentArguments:
    data_file: str = field(default=str(TIME_MACHINE), metadata={"help": "d2l's timemachine.txt."})
    experiments: str = field(default="a,b,c", metadata={"help": "Which of (a), (b), (c) to run, comma-separated."})
    num_epochs: int = field(default=60, metadata={"help": "Epochs over the training characters; d2l runs 500."})
    max_tokens: int = field(
        default=10_000,
        metadata={
            "help": "Train on the first this many characters, as d2l's `load_data_time_machine` (10,000) does; -1 "
            "for every character before the held-out tail."
        },
    )
    held_out_fraction: float = field(default=0.1, metadata={"help": "Share of the corpus held out, at its end."})
    batch_size: int = field(default=32, metadata={"help": "Rows per batch (d2l: 32)."})
    num_steps: int = field(default=35, metadata={"help": "Characters per row (d2l: 35)."})
    learning_rate: float = field(default=1.0, metadata={"help": "SGD learning rate (d2l: 1)."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (d2l: 1)."})
    hidden_size: int = field(default=256, metadata={"help": "Hidden units per direction (d2l: 256)."})
    num_layers: int = field(default=2, metadata={"help": "Stacked layers (d2l: 2)."})
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of characters masked in (c)."})
    prefix: str = field(default="time traveller", metadata={"help": "Start of the greedy continuations."})
    num_predictions: int = field(default=50, metadata={"help": "Characters generated after the prefix (d2l: 50)."})
    log_every: int = field(default=5, metadata={"help": "Log (and tabulate) the training perplexity every N epochs."})
    device: str = field(default="cuda" if torch.cuda.is_available() else "cpu", metadata={"help": "torch device."})
    seed: int = field(default=0, metadata={"help": "Seed of the weights, the window offsets and the masks."})
    output_file: str = field(
        default="outputs/seed/seed_experiment.md", metadata={"help": "Where the markdown results table goes."}
    )


# ---------------------------------------------------------------------------------------------------------------------
# d2l's data: `read_time_machine`, `Vocab`, `load_corpus_time_machine`, `seq_data_iter_sequential`
# ---------------------------------------------------------------------------------------------------------------------


def read_time_machine(path: str | Path) -> list[str]:
    """Each line with every run of non-letters turned into one space, stripped and lower-cased (d2l's
    `read_time_machine`)."""
    with open(path, encoding="utf-8") as text:
        return [re.sub("[^A-Za-z]+", " ", line).strip().lower() for line in text]


def build_char_corpus(lines: list[str]) -> tuple[list[int], list[str]]:
    """The characters of all lines glued end to end, as ids, and the vocabulary (d2l's `load_corpus_time_machine`
    with `max_tokens=-1`). d2l puts no space between lines ("h g wells" + "i" gives "h g wellsi"); keeping that
    keeps its 170,580 characters. The vocabulary is `<unk>`, then the characters by falling frequency, ties in
    order of first appearance (d2l's `Vocab`)."""
    counts = Counter(char for line in lines for char in line)
    vocabulary = ["<unk>"] + [char for char, _ in sorted(counts.items(), key=lambda item: item[1], reverse=True)]
    char_to_id = {char: index for index, char in enumerate(vocabulary)}
    return [char_to_id[char] for line in lines for char in line], vocabulary


def sequential_batches(corpus: torch.Tensor, batch_size: int, num_steps: int, rng: random.Random):
    """d2l's `seq_data_iter_sequential`: from a random offset, `batch_size` parallel streams of the corpus, read
    `num_steps` at a time; targets are the inputs shifted by one character."""
    offset = rng.randint(0, num_steps)
    num_tokens = ((len(corpus) - offset - 1) // batch_size) * batch_size
    inputs = corpus[offset : offset + num_tokens].reshape(batch_size, -1)
    targets = corpus[offset + 1 : offset + 1 + num_tokens].reshape(batch_size, -1)
    for start in range(0, (inputs.size(1) // num_steps) * num_steps, num_steps):
        yield inputs[:, start : start + num_steps], targets[:, start : start + num_steps]


def held_out_windows(held_out: torch.Tensor, num_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Consecutive, non-overlapping windows of the held-out characters and their next-character targets."""
    num_windows = (len(held_out) - 1) // num_steps
    inputs = held_out[: num_windows * num_steps].reshape(num_windows, num_steps)
    targets = held_out[1 : num_windows * num_steps + 1].reshape(num_windows, num_steps)
    return inputs, targets


def mask_characters(
    inputs: torch.Tensor,
    mask_id: int,
    probability: float,
    generator: torch.Generator,
    mask_all: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick characters with `probability`; labels hold them (-100 elsewhere). Picked inputs become `<mask>`, or,
    unless `mask_all`, 80 % `<mask>`, 10 % a random character and 10 % unchanged (BERT's recipe, as
    `DataCollatorForLanguageModeling`)."""
    picked = torch.rand(inputs.shape, generator=generator) < probability
    labels = torch.where(picked, inputs, IGNORE_INDEX)
    draw = torch.rand(inputs.shape, generator=generator)
    masked = picked if mask_all else picked & (draw < 0.8)
    randomised = picked & ~masked & (draw < 0.9)
    random_chars = torch.randint(1, mask_id, inputs.shape, generator=generator)  # real characters: not <unk>, <mask>
    masked_inputs = torch.where(masked, mask_id, torch.where(randomised, random_chars, inputs))
    return masked_inputs, labels


# ---------------------------------------------------------------------------------------------------------------------
# Training and evaluation
# ---------------------------------------------------------------------------------------------------------------------


class LeakingBiRNNForCausalLM(BiRNNForCausalLM):
    """A bidirectional next-token model, which `BiRNNForCausalLM` refuses: experiment (a) trains one on purpose to
    show the failure the guard prevents."""

    @staticmethod
    def check_left_to_right(config: BiRNNConfig) -> None:
        pass


def build_model(experiment: str, vocab_size: int, args: SeedExperimentArguments) -> BiRNNPreTrainedModel:
    _, objective, bidirectional = EXPERIMENTS[experiment]
    config = BiRNNConfig(
        vocab_size=vocab_size,
        embedding_size=vocab_size,
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_layers,
        cell_type="lstm",
        bidirectional=bidirectional,
        embedding_dropout=0.0,
        hidden_dropout=0.0,
        classifier_dropout=0.0,
        pad_token_id=None,
        tie_word_embeddings=False,  # d2l's output layer is its own `nn.Linear`
    )
    if objective == "masked characters":
        model = BiRNNForMaskedLM(config)
    else:  # (a) builds the leaking model on purpose, to show what the guard in BiRNNForCausalLM prevents
        model = (LeakingBiRNNForCausalLM if bidirectional else BiRNNForCausalLM)(config)
    # d2l feeds one-hot vectors to the LSTM and reads its states with one `nn.Linear(512, 28)`. A fixed identity
    # embedding is the one-hot input; a fixed identity decoder leaves the head's projection as that linear layer.
    # (Trained, from the package's N(0, 0.02) init, the two small factors keep SGD at the unigram perplexity long.)
    for layer in (model.get_input_embeddings(), model.get_output_embeddings()):
        layer.weight.data.copy_(torch.eye(vocab_size))
        layer.weight.requires_grad_(False)
    model.get_output_embeddings().bias.data.zero_()
    model.get_output_embeddings().bias.requires_grad_(False)
    return model


def training_step_loss(
    model: BiRNNPreTrainedModel, inputs: torch.Tensor, targets: torch.Tensor, mask_id: int | None, generator, args
) -> tuple[torch.Tensor, int]:
    """Mean loss of a batch and the number of characters it scores."""
    if mask_id is None:
        # d2l scores all 35 targets, the last one lying past the window, so the loss is taken here rather than by
        # the model's shifted `labels`, which would have no target for the last step
        logits = model(input_ids=inputs).logits
        return nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten()), targets.numel()
    masked_inputs, labels = mask_characters(inputs.cpu(), mask_id, args.mlm_probability, generator)
    loss = model(input_ids=masked_inputs.to(inputs.device), labels=labels.to(inputs.device)).loss
    return loss, int((labels != IGNORE_INDEX).sum())


def train(
    model: BiRNNPreTrainedModel, train_ids: torch.Tensor, mask_id: int | None, args: SeedExperimentArguments, name: str
) -> tuple[dict[int, float], float]:
    """d2l's `train_ch8` without carried state: the training perplexity of every epoch, and tokens per second."""
    optimizer = torch.optim.SGD(model.parameters(), lr=args.learning_rate)
    rng = random.Random(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    perplexities, num_inputs, seconds = {}, 0, 0.0
    model.train()
    for epoch in range(1, args.num_epochs + 1):
        total_loss, num_scored = 0.0, 0
        start = time.perf_counter()
        for inputs, targets in sequential_batches(train_ids, args.batch_size, args.num_steps, rng):
            inputs, targets = inputs.to(args.device), targets.to(args.device)
            loss, num_targets = training_step_loss(model, inputs, targets, mask_id, generator, args)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            total_loss += loss.item() * num_targets
            num_scored += num_targets
            num_inputs += inputs.numel()
        seconds += time.perf_counter() - start
        perplexities[epoch] = math.exp(total_loss / num_scored)
        if epoch % args.log_every == 0 or epoch in (1, args.num_epochs):
            logger.info("(%s) epoch %d: training perplexity %.2f", name, epoch, perplexities[epoch])
    return perplexities, num_inputs / seconds


@torch.no_grad()
def next_char_perplexity(model: BiRNNPreTrainedModel, inputs: torch.Tensor, targets: torch.Tensor, prefix_only: bool):
    """Perplexity of the targets, each scored from the whole window or, with `prefix_only`, from the characters up
    to its own position alone (one forward pass per position: what generation can see)."""
    model.eval()
    if not prefix_only:
        logits = model(input_ids=inputs).logits
    else:
        logits = torch.stack([model(input_ids=inputs[:, : t + 1]).logits[:, -1] for t in range(inputs.size(1))], 1)
    return math.exp(nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten()).item())


@torch.no_grad()
def fill_in_scores(
    model: BiRNNPreTrainedModel, inputs: torch.Tensor, mask_id: int, args: SeedExperimentArguments
) -> tuple[float, float]:
    """Accuracy and perplexity on held-out characters replaced by `<mask>`."""
    model.eval()
    generator = torch.Generator().manual_seed(args.seed + 1)
    masked_inputs, labels = mask_characters(inputs.cpu(), mask_id, args.mlm_probability, generator, mask_all=True)
    labels = labels.to(inputs.device)
    output = model(input_ids=masked_inputs.to(inputs.device), labels=labels)
    picked = labels != IGNORE_INDEX
    accuracy = (output.logits.argmax(-1)[picked] == labels[picked]).float().mean().item()
    return accuracy, math.exp(output.loss.item())


@torch.no_grad()
def continue_greedily(model: BiRNNPreTrainedModel, vocabulary: list[str], args: SeedExperimentArguments) -> str:
    """d2l's `predict_ch8`: the prefix, then the most likely next character, `num_predictions` times."""
    model.eval()
    char_to_id = {char: index for index, char in enumerate(vocabulary)}
    ids = [char_to_id[char] for char in args.prefix]
    for _ in range(args.num_predictions):
        logits = model(input_ids=torch.tensor([ids], device=args.device)).logits
        ids.append(int(logits[0, -1].argmax()))
    return "".join(vocabulary[index] for index in ids)


@torch.no_grad()
def fill_in_example(model: BiRNNPreTrainedModel, text_ids: torch.Tensor, vocabulary: list[str], mask_id: int, args):
    """A held-out snippet with `_` for its masked characters, and the model's filled-in version."""
    model.eval()
    generator = torch.Generator().manual_seed(args.seed + 2)
    masked_inputs, labels = mask_characters(text_ids[None].cpu(), mask_id, 0.25, generator, mask_all=True)
    predicted = model(input_ids=masked_inputs.to(args.device)).logits.argmax(-1)[0].cpu()
    filled = torch.where(labels[0] != IGNORE_INDEX, predicted, text_ids.cpu())
    shown = "".join("_" if index == mask_id else vocabulary[index] for index in masked_inputs[0].tolist())
    return f"{shown} → {''.join(vocabulary[index] for index in filled.tolist())}"


def run_experiment(
    experiment: str, corpus: torch.Tensor, vocabulary: list[str], args: SeedExperimentArguments
) -> dict[str, object]:
    cell, objective, bidirectional = EXPERIMENTS[experiment]
    held_out_length = int(len(corpus) * args.held_out_fraction)
    train_ids = corpus[: len(corpus) - held_out_length]
    train_ids = train_ids[: args.max_tokens] if args.max_tokens > 0 else train_ids
    inputs, targets = held_out_windows(corpus[-held_out_length:], args.num_steps)
    inputs, targets = inputs.to(args.device), targets.to(args.device)

    mask_id = len(vocabulary) if objective == "masked characters" else None
    vocabulary = vocabulary + [MASK_TOKEN] if mask_id is not None else vocabulary
    torch.manual_seed(args.seed)
    model = build_model(experiment, len(vocabulary), args).to(args.device)
    logger.info("(%s) %s, %s: %s parameters", experiment, cell, objective, f"{model.num_parameters():,}")
    perplexities, tokens_per_second = train(model, train_ids, mask_id, args, experiment)

    result = {"experiment": experiment, "model": cell, "objective": objective, "perplexities": perplexities}
    result["tokens_per_second"] = tokens_per_second
    if mask_id is None:
        result["held_out_perplexity"] = next_char_perplexity(model, inputs, targets, prefix_only=False)
        result["prefix_only_perplexity"] = next_char_perplexity(model, inputs, targets, prefix_only=True)
        result["sample"] = continue_greedily(model, vocabulary, args)
    else:
        result["fill_in_accuracy"], result["held_out_perplexity"] = fill_in_scores(model, inputs, mask_id, args)
        result["sample"] = fill_in_example(model, inputs[0, :35], vocabulary, mask_id, args)
    logger.info("(%s) %s", experiment, result["sample"])
    return result


# ---------------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------------


def results_markdown(results: list[dict[str, object]], args: SeedExperimentArguments, corpus_size: int) -> str:
    def number(value: float | None, digits: int = 2) -> str:
        return "–" if value is None else f"{value:,.{digits}f}"

    header = [
        "| | model | objective | training perplexity | held-out perplexity | held-out perplexity, prefix only "
        "| held-out fill-in accuracy | tokens/s | sample |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    rows = [
        f"| ({r['experiment']}) | {r['model']} | {r['objective']} | {number(r['perplexities'][args.num_epochs])} "
        f"| {number(r['held_out_perplexity'])} | {number(r.get('prefix_only_perplexity'))} "
        f"| {number(r['fill_in_accuracy'] * 100 if 'fill_in_accuracy' in r else None, 1)}"
        f"{' %' if 'fill_in_accuracy' in r else ''} | {number(r['tokens_per_second'], 0)} | `{r['sample']}` |"
        for r in results
    ]
    logged_epochs = sorted({1, args.num_epochs, *range(args.log_every, args.num_epochs + 1, args.log_every)})
    trend = [
        "| epoch | " + " | ".join(f"({r['experiment']})" for r in results) + " |",
        "| ---: |" + " ---: |" * len(results),
    ]
    for epoch in logged_epochs:
        trend.append(f"| {epoch} | " + " | ".join(number(r["perplexities"][epoch]) for r in results) + " |")
    held_out = int(corpus_size * args.held_out_fraction)
    num_train = corpus_size - held_out if args.max_tokens <= 0 else min(args.max_tokens, corpus_size - held_out)
    setup = (
        f"2-layer LSTMs, {args.hidden_size} hidden units a direction, trained for {args.num_epochs} epochs on the "
        f"first {num_train:,} of the {corpus_size:,} characters of *The Time Machine* (d2l's preprocessing and "
        f"28-entry vocabulary; (c) adds `<mask>`), batches of {args.batch_size} × {args.num_steps}, SGD at learning "
        f"rate {args.learning_rate:g}, gradient norm clipped to {args.max_grad_norm:g}, on {args.device}. Held out: "
        f"the last {held_out:,} characters. Perplexities of (a) and (b) are per next character; of (c), per masked "
        f"character ({args.mlm_probability:.0%} masked). *Prefix only* scores each character from the characters "
        "before it alone, as generation sees them. Samples: greedy continuations of "
        f'"{args.prefix}" for (a) and (b); for (c), held-out text with `_` for masked characters and its fill-in.'
    )
    return "\n".join([setup, "", *header, *rows, "", "Training perplexity by epoch:", "", *trend]) + "\n"


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    (args,) = HfArgumentParser(SeedExperimentArguments).parse_args_into_dataclasses(args=argv)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    corpus_ids, vocabulary = build_char_corpus(read_time_machine(args.data_file))
    logger.info("Corpus: %d characters, vocabulary of %d", len(corpus_ids), len(vocabulary))
    corpus = torch.tensor(corpus_ids)

    experiments = [name.strip() for name in args.experiments.split(",")]
    unknown = sorted(set(experiments) - set(EXPERIMENTS))
    if unknown:
        raise ValueError(f"--experiments: unknown {unknown}; choose from {sorted(EXPERIMENTS)}.")
    results = [run_experiment(name, corpus, vocabulary, args) for name in experiments]

    table = results_markdown(results, args, len(corpus_ids))
    print("\n" + table)
    output_file = Path(args.output_file)
    output_file.parent.mkdir(parents=True, exist_ok=True)
    output_file.write_text(table, encoding="utf-8")
    logger.info("Wrote %s", output_file)
    return results


if __name__ == "__main__":
    main()
