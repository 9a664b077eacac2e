"""Sentence-classification data and evaluation: reading CSV / JSON-lines files, pinning the label order, carving a
validation split, accuracy and macro-F1, the written predictions and the confusion-matrix plot.

Scores come from scikit-learn (installed with `seqeval`, which needs it) rather than `evaluate.load`, which fetches
its metric scripts from the Hub.
"""

import csv
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from datasets import ClassLabel, DatasetDict, load_dataset
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
from transformers import EvalPrediction

FILE_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json"}


def load_classification_dataset(data_files: dict[str, str], text_column: str, label_column: str) -> DatasetDict:
    """Load CSV (RFC 4180: quoted fields may hold commas and line breaks) or JSON-lines files; every split keeps
    just `text` and `label`."""
    formats = {FILE_FORMATS.get(Path(path).suffix.lower()) for path in data_files.values()}
    if None in formats or len(formats) != 1:
        raise ValueError(f"Expected CSV or JSON-lines files, all of one kind; got {sorted(data_files.values())}.")
    return normalise_columns(load_dataset(formats.pop(), data_files=data_files), text_column, label_column)


def normalise_columns(raw: DatasetDict, text_column: str, label_column: str) -> DatasetDict:
    """Keep just `text` (stripped: a text's surrounding whitespace and line feeds carry no meaning) and `label`
    (a string: class ids of a `ClassLabel` become their names), so every source looks alike."""
    for split, dataset in raw.items():
        for column in (text_column, label_column):
            if column not in dataset.column_names:
                raise ValueError(f"The {split} data has no column {column!r}; it has {dataset.column_names}.")
    label_feature = next(iter(raw.values())).features[label_column]
    class_label = label_feature if isinstance(label_feature, ClassLabel) else None

    def to_strings(row: dict) -> dict[str, str]:
        label = class_label.int2str(row[label_column]) if class_label is not None else row[label_column]
        return {"text": (row[text_column] or "").strip(), "label": str(label)}

    return raw.map(to_strings, remove_columns=next(iter(raw.values())).column_names)


def label_list_from(labels: Sequence[str], label_list_file: str | None = None) -> list[str]:
    """The label names in id order: the JSON list in `label_list_file` when given (every label in the data must be
    in it), else the sorted labels of the data."""
    if label_list_file is None:
        return sorted(set(labels))
    label_list = [str(label) for label in json.loads(Path(label_list_file).read_text(encoding="utf-8"))]
    if len(set(label_list)) != len(label_list):
        raise ValueError(f"{label_list_file} names some labels twice.")
    unknown = sorted(set(labels) - set(label_list))
    if unknown:
        raise ValueError(f"Labels missing from {label_list_file}: {unknown[:10]}")
    return label_list


def with_label_ids(raw: DatasetDict, label_list: list[str]) -> DatasetDict:
    """Turn every split's label names into ids in `label_list` order (a `ClassLabel` column)."""
    return raw.cast_column("label", ClassLabel(names=label_list))


def carve_validation_split(raw: DatasetDict, percentage: float, seed: int) -> DatasetDict:
    """Move `percentage` % of the shuffled training rows (`ClassLabel` labels) to a `validation` split, stratified
    by label when every label has at least two rows and the split can hold one row of each, so that even a file
    sorted by label gives a validation split with the training data's label mix."""
    train = raw["train"]
    label_counts = Counter(train["label"])
    validation_size = max(1, round(len(train) * percentage / 100))
    stratify = min(label_counts.values()) >= 2 and len(label_counts) <= min(
        validation_size, len(train) - validation_size
    )
    split = train.train_test_split(
        test_size=validation_size, seed=seed, stratify_by_column="label" if stratify else None
    )
    return DatasetDict({**raw, "train": split["train"], "validation": split["test"]})


def classification_scores(predicted_ids: Sequence[int], label_ids: Sequence[int]) -> dict[str, float]:
    """Accuracy and macro-F1 (the unweighted mean of the per-class F1 over the classes present in gold or
    predictions, so rare classes count as much as frequent ones)."""
    return {
        "accuracy": float(accuracy_score(label_ids, predicted_ids)),
        "macro_f1": float(f1_score(label_ids, predicted_ids, average="macro", zero_division=0)),
    }


def compute_classification_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """`Trainer`'s `compute_metrics`; expects the predicted ids (see `argmax_logits`), not the logits."""
    return classification_scores(prediction.predictions, prediction.label_ids)


def argmax_logits(logits, labels):
    """Keep only the predicted ids between evaluation steps (the logits of a whole split need not pile up)."""
    return logits.argmax(dim=-1)


def write_classification_predictions(
    path: Path, texts: Sequence[str], gold_labels: Sequence[str], predicted_labels: Sequence[str]
) -> None:
    """One CSV row per text: `text,gold,predicted` (quoted where a text holds commas, quotes or line breaks)."""
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["text", "gold", "predicted"])
        writer.writerows(zip(texts, gold_labels, predicted_labels, strict=True))


def plot_confusion_matrix(
    label_ids: Sequence[int], predicted_ids: Sequence[int], label_names: Sequence[str], path: Path, title: str
) -> None:
    """Row-normalised confusion matrix (each gold class sums to 1) as a PNG; colours only, no per-cell numbers, so
    that it stays readable with many classes (77 for Banking77). A square-root colour scale keeps the small
    off-diagonal shares, the confusions worth reading, visible next to a diagonal near 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import PowerNorm

    num_labels = len(label_names)
    counts = confusion_matrix(label_ids, predicted_ids, labels=range(num_labels))
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = min(max(5.0, 0.2 * num_labels + 2.5), 20.0)
    font_size = 8 if num_labels <= 30 else 5
    figure, axis = plt.subplots(figsize=(side + 1.5, side))
    image = axis.imshow(rates, cmap="Blues", norm=PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0), interpolation="nearest")
    axis.set_xticks(range(num_labels), label_names, rotation=90, fontsize=font_size)
    axis.set_yticks(range(num_labels), label_names, fontsize=font_size)
    axis.set(xlabel="predicted", ylabel="gold", title=title)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.02, label="share of the gold class")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
