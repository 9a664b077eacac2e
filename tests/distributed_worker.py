"""Trains tiny BiRNN models for a few `Trainer` steps and saves what `test_distributed.py` compares.

Run it under `torchrun --nproc_per_node N` (or `accelerate launch`) for data-parallel training on CPU processes, or
as a plain script for one process. Into `--output-dir`, every rank writes `rank{R}-{task}.pt` (its final weights
per task) and `rank{R}.json` (the world size and, per task, the model's wrapper and the logged training losses).

The run is deterministic so that N processes × `per_device_train_batch_size` B match one process × N·B: the data
is read in order, dropout is off, and plain SGD without clipping makes the weights move in proportion to the
gradient (Adam would hide a wrongly scaled loss).
"""

import argparse
import functools
import json
from pathlib import Path

import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments

from hf_birnn import BiRNNConfig, BiRNNForSequenceClassification, BiRNNForTokenClassification

VOCAB_SIZE = 50
NUM_LABELS = 5
MAX_LENGTH = 12
# Token tagging (cross-entropy or CRF) normalises by `num_items_in_batch`; the two sequence losses are plain means.
TASKS = ("token_classification", "token_classification_crf", "regression", "multi_label_classification")
TOKEN_TASKS = ("token_classification", "token_classification_crf")


class SyntheticDataset(Dataset):
    """Rows of 1 to `MAX_LENGTH` tokens, each with a tag that is a fixed function of the token.

    For the token tasks the labels are the tags, some of them `-100` (like non-first sub-tokens), so that
    ranks see different numbers of labelled tokens per step. The sequence tasks label a row with its length
    (`regression`) or with the set of tags it holds (`multi_label_classification`).
    """

    def __init__(self, task: str, num_rows: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        lengths = torch.randint(1, MAX_LENGTH + 1, (num_rows,), generator=generator).tolist()
        self.rows = []
        for length in lengths:
            input_ids = torch.randint(1, VOCAB_SIZE, (length,), generator=generator)
            tags = input_ids % NUM_LABELS
            if task in TOKEN_TASKS:
                unlabelled = torch.rand(length, generator=generator) < 0.2
                labels = tags.masked_fill(unlabelled, -100)
            elif task == "regression":
                labels = torch.tensor(length / MAX_LENGTH)
            else:
                labels = torch.zeros(NUM_LABELS).index_fill(0, tags, 1.0)
            self.rows.append({"input_ids": input_ids, "labels": labels})

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.rows[index]


def pad_right(rows: list[dict[str, torch.Tensor]], token_labels: bool) -> dict[str, torch.Tensor]:
    """Right-pads a batch to its longest row (ids with 0, token labels with -100) and adds the attention mask."""
    seq_len = max(len(row["input_ids"]) for row in rows)
    input_ids = torch.zeros(len(rows), seq_len, dtype=torch.long)
    attention_mask = torch.zeros(len(rows), seq_len, dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row["input_ids"])] = row["input_ids"]
        attention_mask[i, : len(row["input_ids"])] = 1
    if token_labels:
        labels = torch.full((len(rows), seq_len), -100, dtype=torch.long)
        for i, row in enumerate(rows):
            labels[i, : len(row["labels"])] = row["labels"]
    else:
        labels = torch.stack([row["labels"] for row in rows])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def build_model(task: str, seed: int) -> BiRNNForTokenClassification | BiRNNForSequenceClassification:
    torch.manual_seed(seed)
    config = BiRNNConfig(
        vocab_size=VOCAB_SIZE,
        embedding_size=8,
        hidden_size=16,
        backward_hidden_size=12,
        num_labels=1 if task == "regression" else NUM_LABELS,
        embedding_dropout=0.0,
        hidden_dropout=0.0,
        classifier_dropout=0.0,
        use_crf=task == "token_classification_crf",
    )
    if task in TOKEN_TASKS:
        return BiRNNForTokenClassification(config)
    config.problem_type = task
    return BiRNNForSequenceClassification(config)


def train(task: str, args: argparse.Namespace) -> tuple[Trainer, list[float]]:
    training_args = TrainingArguments(
        output_dir=str(args.output_dir / task),
        per_device_train_batch_size=args.per_device_batch_size,
        max_steps=args.max_steps,
        learning_rate=0.5,
        optim="sgd",
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        train_sampling_strategy="sequential",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        ddp_find_unused_parameters=False,
        disable_tqdm=True,
        seed=args.seed,
    )
    trainer = Trainer(
        model=build_model(task, args.seed),
        args=training_args,
        train_dataset=SyntheticDataset(task, num_rows=64, seed=args.seed),
        data_collator=functools.partial(pad_right, token_labels=task in TOKEN_TASKS),
    )
    trainer.train()
    return trainer, [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--per-device-batch-size", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    args = parser.parse_args()
    args.output_dir.mkdir(parents=True, exist_ok=True)

    runs = {}
    for task in args.tasks:
        trainer, losses = train(task, args)
        rank = trainer.args.process_index
        torch.save(trainer.model.state_dict(), args.output_dir / f"rank{rank}-{task}.pt")
        runs[task] = {"losses": losses, "model_wrapper": type(trainer.model_wrapped).__name__}
    summary = {"world_size": trainer.args.world_size, "runs": runs}
    (args.output_dir / f"rank{rank}.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
