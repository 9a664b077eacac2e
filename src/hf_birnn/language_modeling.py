"""Raw text for masked-LM pretraining: reading text files of several layouts, cutting token ids into fixed-length
blocks, and scoring the predictions at the masked positions."""

import re
from itertools import chain
from pathlib import Path

import numpy as np
import torch
from transformers import DataCollatorForLanguageModeling, EvalPrediction

from .tagging import IGNORE_INDEX

WIKITEXT_SPLIT_MARK = re.compile(r" @(.)@ ")  # WikiText writes `1,000` as `1 @,@ 000` and `state-of` as `state @-@ of`
WIKITEXT_HEADING = re.compile(r"(?:= )+(.*?)(?: =)+")  # ` = = Early life = = `


def read_text_lines(path: str | Path, unk_token: str = "[UNK]") -> list[str]:
    """The non-empty texts of a file, read according to its suffix:

    - `.conllu` (Universal Dependencies): the sentences of the `# text = ` comments;
    - `.conll` (a token per line, a blank or whitespace-only line between sentences, as WNUT-17): each sentence's
      first column joined by spaces;
    - `.tokens` (WikiText): each line with the `@-@` splits joined back, headings without their `=` marks, and
      `<unk>` written as `unk_token` (a special id, which the collator never picks to predict);
    - anything else: each line.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix == ".conllu":
        texts = [line[len("# text = ") :] for line in lines if line.startswith("# text = ")]
    elif path.suffix == ".conll":
        texts = _conll_sentences(lines)
    elif path.suffix == ".tokens":
        texts = [_wikitext_line(line.strip(), unk_token) for line in lines]
    else:
        texts = lines
    return [text.strip() for text in texts if text.strip()]


def _conll_sentences(lines: list[str]) -> list[str]:
    sentences, words = [], []
    for line in lines + [""]:
        if line.strip() and not line.startswith("-DOCSTART-"):
            words.append(line.split()[0])
        elif words:
            sentences.append(" ".join(words))
            words = []
    return sentences


def _wikitext_line(line: str, unk_token: str) -> str:
    heading = WIKITEXT_HEADING.fullmatch(line)
    if heading:
        line = heading.group(1)
    return WIKITEXT_SPLIT_MARK.sub(r"\1", line).replace("<unk>", unk_token)


def group_into_blocks(batch: dict[str, list[list[int]]], block_size: int) -> dict[str, list[list[int]]]:
    """Concatenate a batch of tokenized texts and cut it into rows of `block_size` tokens, dropping the remainder
    (transformers' `run_mlm.py` `group_texts`). A BiRNN has no length limit; blocks just keep the batches even."""
    concatenated = {name: list(chain.from_iterable(values)) for name, values in batch.items()}
    usable_length = (len(concatenated["input_ids"]) // block_size) * block_size
    return {
        name: [values[start : start + block_size] for start in range(0, usable_length, block_size)]
        for name, values in concatenated.items()
    }


class DataCollatorForMaskedLM(DataCollatorForLanguageModeling):
    """`DataCollatorForLanguageModeling` that draws the picks again when a batch gets none: a small batch (an epoch's
    last, a few short lines) can pick no token, and a mean loss over no tokens is 0/0, which stops the training."""

    max_draws = 100

    def torch_call(self, examples: list) -> dict[str, torch.Tensor]:
        for _ in range(self.max_draws):
            batch = super().torch_call(examples)
            if (batch["labels"] != IGNORE_INDEX).any():
                break
        return batch


def predicted_token_ids(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Keep only the argmax ids between evaluation steps (a split's vocabulary-wide logits need not pile up)."""
    return logits.argmax(dim=-1)


def masked_token_accuracy(prediction: EvalPrediction) -> dict[str, float]:
    """Share of masked positions (labels other than -100) whose token the model predicts."""
    masked = prediction.label_ids != IGNORE_INDEX
    correct = np.asarray(prediction.predictions)[masked] == prediction.label_ids[masked]
    return {"accuracy": float(correct.mean()) if correct.size else 0.0}
