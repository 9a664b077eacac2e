"""The models and data the sections time: BiRNN taggers and their raw nn.LSTM twins, random padded batches, and the
WNUT-17 splits tokenized as scripts/run_ner.py trains on them."""

import argparse
import copy
from collections.abc import Callable
from pathlib import Path

import datasets
import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import AutoModelForTokenClassification, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from hf_birnn import BiRNNConfig, BiRNNForTokenClassification
from hf_birnn.tagging import align_labels_with_tokens, load_tagging_dataset
from hf_birnn.tokenization import train_wordpiece_tokenizer

from .common import REPO_ROOT
from .sizes import Sizes

WNUT17_DIR = REPO_ROOT / "data" / "wnut17"
NUM_RANDOM_LABELS = 13  # labels of the random batches: WNUT-17's tag set (O and B-/I- of six types)
DEMO_SENTENCES = [
    "Justin Bieber is playing Madison Square Garden in New York next Friday .",
    "Just bought the new iPhone from Apple , loving it so far",
    "Watching Game of Thrones with my friends from Manchester United tonight",
]

Batch = dict[str, torch.Tensor]


def birnn_tagger(
    sizes: Sizes, num_labels: int = NUM_RANDOM_LABELS, cell_type: str = "lstm"
) -> BiRNNForTokenClassification:
    config = BiRNNConfig(
        vocab_size=sizes.vocab_size,
        embedding_size=sizes.embedding_size,
        hidden_size=sizes.hidden_size,
        num_hidden_layers=sizes.num_layers,
        cell_type=cell_type,
        num_labels=num_labels,
    )
    return BiRNNForTokenClassification(config)


class RawBiLSTMTagger(nn.Module):
    """The baseline: nn.Embedding → nn.LSTM(bidirectional) → nn.Linear with a BiRNN's weights and dropouts.
    `packed=True` runs the LSTM on a `PackedSequence`, padding-exact like the BiRNN; `packed=False` runs it on the
    padded batch, where the backward direction reads the padding first (not padding-exact)."""

    def __init__(self, birnn: BiRNNForTokenClassification, packed: bool):
        super().__init__()
        config = birnn.config
        self.packed = packed
        self.embeddings = copy.deepcopy(birnn.birnn.embeddings.word_embeddings)
        self.embedding_dropout = nn.Dropout(config.embedding_dropout)
        self.lstm = nn.LSTM(
            config.embedding_size,
            config.hidden_size,
            num_layers=config.num_hidden_layers,
            bidirectional=True,
            batch_first=True,
            dropout=config.hidden_dropout,
        )
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = copy.deepcopy(birnn.classifier)
        with torch.no_grad():
            for layer_idx, layer in enumerate(birnn.birnn.layers):
                for suffix, rnn in (("", layer.forward_rnn), ("_reverse", layer.backward_rnn)):
                    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                        getattr(self.lstm, f"{name}_l{layer_idx}{suffix}").copy_(getattr(rnn, f"{name}_l0"))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        embeds = self.embedding_dropout(self.embeddings(input_ids))
        if self.packed:
            lengths = attention_mask.sum(dim=1).cpu()
            packed = pack_padded_sequence(embeds, lengths, batch_first=True, enforce_sorted=False)
            states, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=input_ids.size(1))
        else:
            states, _ = self.lstm(embeds)
        return self.classifier(self.dropout(states))


def random_batch(
    sizes: Sizes, length: int, batch_size: int, generator: torch.Generator, side: str = "right"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, labels) with lengths drawn from [length / 2, length] (one row of full length)."""
    lengths = torch.randint(length // 2, length + 1, (batch_size,), generator=generator)
    lengths[0] = length
    positions = torch.arange(length)
    mask = positions < lengths[:, None]
    if side == "left":
        mask = mask.flip(1)
    input_ids = torch.randint(1, sizes.vocab_size, (batch_size, length), generator=generator) * mask
    labels = torch.randint(0, NUM_RANDOM_LABELS, (batch_size, length), generator=generator).masked_fill(~mask, -100)
    return input_ids, mask.long(), labels


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer, **batch: torch.Tensor) -> None:
    """Forward, loss, backward and an AdamW step of a transformers model on a batch with labels."""
    optimizer.zero_grad(set_to_none=True)
    model(**batch).loss.backward()
    optimizer.step()


def raw_training_step(
    model: RawBiLSTMTagger,
    optimizer: torch.optim.Optimizer,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
) -> None:
    """The same step for the raw tagger, which returns logits and leaves the loss to its caller."""
    optimizer.zero_grad(set_to_none=True)
    token_loss(model(input_ids, attention_mask), labels).backward()
    optimizer.step()


def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)


def load_tagger(
    args: argparse.Namespace, sizes: Sizes, label_names: list[str]
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel, str]:
    """(tokenizer, fp32 tagger, description): the trained model of `--model`, or in `--quick` a random one over a
    WordPiece vocabulary trained on the WNUT-17 training text."""
    if not args.quick:
        if not Path(args.model).is_dir():
            raise SystemExit(f"--model {args.model} does not exist: train one with scripts/run_ner.py.")
        model = AutoModelForTokenClassification.from_pretrained(args.model).eval()
        return AutoTokenizer.from_pretrained(args.model), model, f"loaded from {args.model}"
    tokenizer = wnut_tokenizer(sizes)
    model = birnn_tagger(sizes, num_labels=len(label_names))
    model.config.id2label = dict(enumerate(label_names))
    model.config.label2id = {label: i for i, label in enumerate(label_names)}
    return tokenizer, model.eval(), "random weights (--quick)"


def wnut_tokenizer(sizes: Sizes) -> PreTrainedTokenizerBase:
    train = load_tagging_dataset(
        {"train": str(WNUT17_DIR / "wnut17train.conll")}, "tokens", "ner_tags", ["tokens", "ner_tags"]
    )["train"]
    return train_wordpiece_tokenizer((" ".join(tokens) for tokens in train["tokens"]), vocab_size=sizes.vocab_size)


def wnut_split(split_file: str, limit: int | None) -> datasets.Dataset:
    """The first `limit` rows of a WNUT-17 split in dataset order (all of them without a limit)."""
    split = load_tagging_dataset({"split": str(WNUT17_DIR / split_file)}, "tokens", "ner_tags", ["tokens", "ner_tags"])
    rows = split["split"]
    return rows.select(range(min(limit, len(rows)))) if limit else rows


def label_names_of(rows: datasets.Dataset) -> list[str]:
    """The tags that occur in `rows`, "O" first, so that label 0 is "O" as in scripts/run_ner.py."""
    return sorted({tag for tags in rows["tags"] for tag in tags}, key=lambda tag: (tag != "O", tag))


def encode_tagged(rows: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, label2id: dict[str, int]) -> list[dict]:
    """Tokenized rows with labels on every sub-token (as scripts/run_ner.py trains)."""
    b_to_i = {i: label2id.get("I-" + name[2:], i) for name, i in label2id.items() if name.startswith("B-")}
    encoded = tokenizer([list(tokens) for tokens in rows["tokens"]], is_split_into_words=True)
    features = []
    for row, tags in enumerate(rows["tags"]):
        word_ids = encoded.word_ids(row)
        labels = align_labels_with_tokens(word_ids, [label2id.get(tag, 0) for tag in tags], True, b_to_i)
        features.append({"input_ids": encoded["input_ids"][row], "labels": labels, "word_ids": word_ids})
    return features


def padded_batches(features: list[dict], tokenizer: PreTrainedTokenizerBase, batch_size: int) -> list[Batch]:
    batches = []
    for start in range(0, len(features), batch_size):
        chunk = [{"input_ids": feature["input_ids"]} for feature in features[start : start + batch_size]]
        batches.append(tokenizer.pad(chunk, return_tensors="pt"))
    return batches


def run_batches(tagger: Callable[[Batch], object], batches: list[Batch]) -> None:
    for batch in batches:
        tagger(batch)


def predicted_ids(run: Callable[[Batch], np.ndarray], batches: list[Batch]) -> list[np.ndarray]:
    """Per row, the argmax label of each real token."""
    rows = []
    for batch in batches:
        labels = run(batch).argmax(-1)
        rows += [row[mask.astype(bool)] for row, mask in zip(labels, batch["attention_mask"].numpy(), strict=True)]
    return rows


def agreement(rows: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """The share of real tokens whose predicted label is the reference's."""
    return float(np.mean(np.concatenate([a == b for a, b in zip(rows, reference, strict=True)])))
