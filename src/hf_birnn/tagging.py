"""Sequence-tagging data and evaluation: reading CoNLL / JSON-lines files, tag schemes, aligning word labels with
sub-tokens, mapping predictions back to words, and entity-level scores.

Scores come from `seqeval` called directly (its default, conlleval-compatible mode): `evaluate.load("seqeval")`
fetches its script from the Hub, which these machines cannot reach.
"""

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, load_dataset
from seqeval.metrics import accuracy_score, classification_report

IGNORE_INDEX = -100


def convert_iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """IOB1 (CoNLL-2003) starts an entity with `I-` unless it directly follows one of the same type; IOB2 always
    starts with `B-`. Valid IOB2 input comes back unchanged, so the conversion is safe to apply to either."""
    converted = []
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and (previous == "O" or previous[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        converted.append(tag)
        previous = tag
    return converted


CONLLU_COLUMNS = ("id", "tokens", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")


def read_conllu(path: str | Path) -> dict[str, list[list[str]]]:
    """The word rows of a CoNLL-U file (Universal Dependencies), a list per column (`CONLLU_COLUMNS`; the FORM
    column is `tokens`) and a row per sentence. Multiword-token ranges (`1-2`) and empty nodes (`8.1`) are skipped:
    the words of a sentence are its integer-id rows, the ones UD scores POS tags on."""
    columns: dict[str, list[list[str]]] = {name: [] for name in CONLLU_COLUMNS}
    sentence: list[list[str]] = []

    def close_sentence() -> None:
        if sentence:
            for name, values in zip(CONLLU_COLUMNS, zip(*sentence, strict=True), strict=True):
                columns[name].append(list(values))
            sentence.clear()

    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            line = line.rstrip("\n")
            if not line.strip():
                close_sentence()
            elif not line.startswith("#"):
                fields = line.split("\t")
                if len(fields) != len(CONLLU_COLUMNS):
                    raise ValueError(
                        f"{path}, line {number}: expected 10 tab-separated CoNLL-U fields, got {len(fields)}."
                    )
                if fields[0].isdigit():
                    sentence.append(fields)
    close_sentence()
    return columns


def load_tagging_dataset(
    data_files: dict[str, str],
    token_column: str,
    tag_column: str,
    conll_column_names: Sequence[str],
) -> DatasetDict:
    """Load CoNLL column files (any layout: `conll_column_names` names the columns), CoNLL-U files (columns named
    as in `CONLLU_COLUMNS`, e.g. `upos`) or JSON lines with `token_column` and `tag_column` lists. Every split keeps
    just `tokens` and `tags` (strings or ids)."""
    suffixes = {Path(path).suffix for path in data_files.values()}
    if len(suffixes) > 1 and suffixes & {".json", ".jsonl", ".conllu"}:
        raise ValueError(f"Mixed file formats are not supported: {sorted(data_files.values())}")
    if suffixes <= {".json", ".jsonl"}:
        raw = load_dataset("json", data_files=data_files)
    elif suffixes == {".conllu"}:
        raw = DatasetDict({split: Dataset.from_dict(read_conllu(path)) for split, path in data_files.items()})
    else:
        missing = {token_column, tag_column} - set(conll_column_names)
        if missing:
            raise ValueError(f"--conll_column_names {list(conll_column_names)} does not name {sorted(missing)}.")
        raw = load_dataset("conll", data_files=data_files, column_names=list(conll_column_names))
    return normalise_columns(raw, token_column, tag_column)


def normalise_columns(raw: DatasetDict, token_column: str, tag_column: str) -> DatasetDict:
    """Keep just `tokens` and `tags`, with tag ids turned into their names (or into strings), so every source
    looks alike."""
    for split, dataset in raw.items():
        for column in (token_column, tag_column):
            if column not in dataset.column_names:
                raise ValueError(f"The {split} data has no column {column!r}; it has {dataset.column_names}.")
    tag_feature = next(iter(raw.values())).features[tag_column]
    inner_feature = getattr(tag_feature, "feature", tag_feature[0] if isinstance(tag_feature, list) else None)
    class_label = inner_feature if isinstance(inner_feature, ClassLabel) else None

    def to_strings(row: dict) -> dict[str, list[str]]:
        tags = class_label.int2str(row[tag_column]) if class_label is not None else row[tag_column]
        return {"tokens": list(row[token_column]), "tags": [str(tag) for tag in tags]}

    return raw.map(to_strings, remove_columns=next(iter(raw.values())).column_names)


def label_list_from(tag_sequences: Sequence[Sequence[str]]) -> list[str]:
    """Labels sorted with `O` first, then by entity type and `B-` before `I-` (a stable, readable order)."""
    labels = {tag for tags in tag_sequences for tag in tags}
    return sorted(labels, key=lambda tag: (tag != "O", tag[2:], tag[:2]))


def align_labels_with_tokens(
    word_ids: Sequence[int | None], word_label_ids: Sequence[int], label_all_tokens: bool, b_to_i: dict[int, int]
) -> list[int]:
    """The label of a word goes on its first sub-token. Its other sub-tokens get `-100` (no loss), or, with
    `label_all_tokens`, the word's label with `B-` turned into `I-`, so that every sub-token has a trained
    prediction and the pipeline's `simple` aggregation sees whole words."""
    labels = []
    previous_word = None
    for word_id in word_ids:
        if word_id is None:
            labels.append(IGNORE_INDEX)
        elif word_id != previous_word:
            labels.append(word_label_ids[word_id])
        else:
            label = word_label_ids[word_id]
            labels.append(b_to_i.get(label, label) if label_all_tokens else IGNORE_INDEX)
        previous_word = word_id
    return labels


def word_predictions(token_prediction_ids: Sequence[int], word_ids: Sequence[int | None], num_words: int) -> list[int]:
    """Each word's prediction is that of its first sub-token. A word with no sub-token (cut by truncation, or
    empty after normalisation) gets label id 0 (`O`) so that scores count it as a miss, not as absent."""
    predictions = [0] * num_words
    seen = set()
    for prediction, word_id in zip(token_prediction_ids, word_ids, strict=True):
        if word_id is not None and word_id not in seen:
            predictions[word_id] = int(prediction)
            seen.add(word_id)
    return predictions


def entity_scores(gold_tags: list[list[str]], predicted_tags: list[list[str]]) -> dict[str, float]:
    """Entity-level precision / recall / F1 overall and per entity type, plus token accuracy (seqeval defaults)."""
    report = classification_report(gold_tags, predicted_tags, output_dict=True, zero_division=0)
    scores = {
        "precision": report["micro avg"]["precision"],
        "recall": report["micro avg"]["recall"],
        "f1": report["micro avg"]["f1-score"],
        "accuracy": accuracy_score(gold_tags, predicted_tags),
    }
    for entity_type, values in report.items():
        if entity_type.endswith("avg"):
            continue
        scores.update({f"{entity_type}_{name}": values[key] for name, key in _PER_TYPE_KEYS})
    return {name: float(value) for name, value in scores.items()}


_PER_TYPE_KEYS = (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score"), ("number", "support"))


def tag_accuracy(gold_tags: list[list[str]], predicted_tags: list[list[str]]) -> dict[str, float]:
    """The share of words whose tag is right (POS tagging), over every word of the split."""
    rows = zip(gold_tags, predicted_tags, strict=True)
    pairs = [pair for gold, predicted in rows for pair in zip(gold, predicted, strict=True)]
    return {"accuracy": sum(gold == predicted for gold, predicted in pairs) / max(len(pairs), 1)}


TASK_SCORES = {"ner": entity_scores, "chunk": entity_scores, "pos": tag_accuracy}


class WordTagScorer:
    """Scores token-level predictions per word, against every gold word of a split.

    Holds each row's `word_ids` (from the tokenizer) and gold tags, so it can serve as `Trainer`'s
    `compute_metrics` (rows must come in dataset order: see `BiRNNTrainer`) and turn test predictions into tags.
    Scoring words rather than labelled sub-tokens keeps `label_all_tokens` from inflating the numbers and counts
    words lost to truncation as misses.
    """

    def __init__(
        self,
        word_ids: Sequence[Sequence[int | None]],
        gold_tags: Sequence[Sequence[str]],
        id2label,
        score: Callable[[list[list[str]], list[list[str]]], dict[str, float]] = entity_scores,
    ):
        self.word_ids = word_ids
        self.score = score
        self.gold_tags = [list(tags) for tags in gold_tags]
        self.id2label = {int(i): label for i, label in id2label.items()}

    def predicted_tags(self, prediction_ids: np.ndarray) -> list[list[str]]:
        """`prediction_ids` (rows, padded length): one label id per sub-token, in dataset row order."""
        if len(prediction_ids) != len(self.gold_tags):
            raise ValueError(f"Got predictions for {len(prediction_ids)} rows, expected {len(self.gold_tags)}.")
        rows = []
        for row_predictions, row_word_ids, gold in zip(prediction_ids, self.word_ids, self.gold_tags, strict=True):
            label_ids = word_predictions(row_predictions[: len(row_word_ids)], row_word_ids, len(gold))
            rows.append([self.id2label[i] for i in label_ids])
        return rows

    def scores(self, prediction_ids: np.ndarray) -> dict[str, float]:
        """Every score of the split: overall, and per entity type for NER (`PER_f1`, `PER_number`, …)."""
        return self.score(self.gold_tags, self.predicted_tags(prediction_ids))

    def __call__(self, eval_prediction) -> dict[str, float]:
        """The overall scores only, which `Trainer` logs after each evaluation (per-type scores go to the files)."""
        return {name: value for name, value in self.scores(eval_prediction.predictions).items() if name in OVERALL}


OVERALL = ("precision", "recall", "f1", "accuracy")


def write_conll_predictions(
    path: Path, token_rows: Sequence[Sequence[str]], gold_rows: Sequence[Sequence[str]], predicted_rows
) -> None:
    """`token gold predicted` per line, a blank line between sentences (the conlleval input format)."""
    with open(path, "w", encoding="utf-8") as out:
        for tokens, gold, predicted in zip(token_rows, gold_rows, predicted_rows, strict=True):
            for token, gold_tag, predicted_tag in zip(tokens, gold, predicted, strict=True):
                out.write(f"{token} {gold_tag} {predicted_tag}\n")
            out.write("\n")
