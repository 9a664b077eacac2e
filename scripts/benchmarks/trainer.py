"""Trainer against a hand-written loop on the same data: what the Trainer's machinery costs per token."""

import argparse
import copy
import statistics
import tempfile
from collections.abc import Callable

import torch
from transformers import (
    DataCollatorForTokenClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    get_linear_schedule_with_warmup,
)
from transformers.trainer_callback import PrinterCallback
from transformers.trainer_pt_utils import LengthGroupedSampler

from .common import Report, Section, median, now
from .sizes import Sizes
from .workloads import birnn_tagger, encode_tagged, label_names_of, wnut_split, wnut_tokenizer

LEARNING_RATE = 2e-3
MAX_GRAD_NORM = 1.0
MAX_ROUNDS = 3  # each round trains twice from the start: a few rounds keep the section short


class StepClock(TrainerCallback):
    """Notes the time at the end of every training step."""

    def __init__(self, step_ends: list[float]):
        self.step_ends = step_ends

    def on_step_end(self, args, state, control, **kwargs):
        self.step_ends.append(now())


class TrainingRun:
    """Trains the same model from the same weights either with Trainer or by hand, with the same sampler, collator,
    optimizer, clipping and schedule; counts the real tokens of each batch and notes the end of each step."""

    def __init__(self, sizes: Sizes, model: PreTrainedModel, features: list[dict], tokenizer: PreTrainedTokenizerBase):
        self.sizes = sizes
        self.model = model
        self.features = features
        self.collator = DataCollatorForTokenClassification(tokenizer)
        self.batch_tokens: list[int] = []
        self.step_ends: list[float] = []

    def counting_collator(self, batch: list[dict]) -> dict:
        collated = self.collator(batch)
        self.batch_tokens.append(int(collated["attention_mask"].sum()))
        return collated

    def with_trainer(self, output_dir: str) -> None:
        arguments = TrainingArguments(
            output_dir=output_dir,
            per_device_train_batch_size=self.sizes.batch_size,
            max_steps=self.sizes.trainer_steps,
            learning_rate=LEARNING_RATE,
            max_grad_norm=MAX_GRAD_NORM,
            train_sampling_strategy="group_by_length",
            eval_strategy="no",
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=True,
            seed=0,
        )
        trainer = Trainer(
            model=self.model, args=arguments, train_dataset=self.features, data_collator=self.counting_collator
        )
        trainer.remove_callback(PrinterCallback)  # it prints the final metrics even with logging off
        trainer.add_callback(StepClock(self.step_ends))
        trainer.train()

    def by_hand(self) -> None:
        self.model.train()
        torch.manual_seed(0)
        lengths = [len(feature["input_ids"]) for feature in self.features]
        sampler = LengthGroupedSampler(self.sizes.batch_size, lengths=lengths)
        loader = torch.utils.data.DataLoader(
            self.features, batch_size=self.sizes.batch_size, sampler=sampler, collate_fn=self.counting_collator
        )
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=LEARNING_RATE, weight_decay=0.0)
        scheduler = get_linear_schedule_with_warmup(optimizer, 0, self.sizes.trainer_steps)
        for step, batch in enumerate(loader):
            if step == self.sizes.trainer_steps:
                break
            self.model(**batch).loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), MAX_GRAD_NORM)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            self.step_ends.append(now())


def run(args: argparse.Namespace, sizes: Sizes, report: Report) -> None:
    """Tokens/s of the whole `train()` call and of the steps after the first, for Trainer and for the loop."""
    tokenizer = wnut_tokenizer(sizes)
    rows = wnut_split("wnut17train.conll", None)
    label_names = label_names_of(rows)
    label2id = {label: i for i, label in enumerate(label_names)}
    features = [
        {key: feature[key] for key in ("input_ids", "labels")} for feature in encode_tagged(rows, tokenizer, label2id)
    ]
    torch.manual_seed(0)
    model = birnn_tagger(sizes, num_labels=len(label_names))
    initial_state = copy.deepcopy(model.state_dict())
    training = TrainingRun(sizes, model, features, tokenizer)
    whole: dict[str, list[float]] = {"Trainer": [], "loop": []}
    steady: dict[str, list[float]] = {"Trainer": [], "loop": []}
    batches_seen = set()
    steps = sizes.trainer_steps
    with tempfile.TemporaryDirectory(prefix="benchmark-trainer-") as output_dir:
        runs: dict[str, Callable[[], None]] = {
            "Trainer": lambda: training.with_trainer(output_dir),
            "loop": training.by_hand,
        }
        for _ in range(max(1, min(args.repeats, MAX_ROUNDS))):
            for name, train in runs.items():
                model.load_state_dict(initial_state)
                training.batch_tokens.clear()
                training.step_ends.clear()
                start = now()
                train()
                whole[name].append(sum(training.batch_tokens[:steps]) / (now() - start))
                # from the end of the first step: without Trainer's one-off setup and the first step's warm-up
                steady_seconds = training.step_ends[-1] - training.step_ends[0]
                steady[name].append(sum(training.batch_tokens[1:steps]) / steady_seconds)
                batches_seen.add(tuple(training.batch_tokens[:steps]))
    report.table(
        "trainer",
        f"Training on WNUT-17: Trainer (group_by_length) vs a hand-written loop (same sampler, collator, AdamW, "
        f"clipping, schedule), {steps} steps of {sizes.batch_size} rows; both saw "
        f"{'the same batches' if len(batches_seen) == 1 else 'different batches'}",
        ["timed", "Trainer tokens/s", "loop tokens/s", "Trainer / loop"],
        [
            [
                label,
                median(speeds["Trainer"]),
                median(speeds["loop"]),
                statistics.median(a / b for a, b in zip(speeds["Trainer"], speeds["loop"], strict=True)),
            ]
            for label, speeds in (("whole `train()` call", whole), ("steps 2 … N", steady))
        ],
    )


SECTION = Section(
    name="trainer",
    run=run,
    title="Trainer vs a hand-written loop",
    summary=(
        "Tokens/s of `Trainer` (`group_by_length`) against a hand-written loop with the same sampler, collator, "
        "AdamW, clipping and schedule, training a BiLSTM tagger on WNUT-17 from the same weights."
    ),
    goal="Trainer ≥ 0.9× the loop's tokens/s.",
    packages=("accelerate",),
)
