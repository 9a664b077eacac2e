"""Sentence-classification helpers: reading CSV with quoted line breaks, the label order, the carved validation split,
accuracy and macro-F1 on a hand-made case."""

import csv
import json

import pytest
from datasets import Dataset, DatasetDict

from hf_birnn.classification import (
    carve_validation_split,
    classification_scores,
    label_list_from,
    load_classification_dataset,
    with_label_ids,
    write_classification_predictions,
)


def test_scores_on_a_hand_made_case():
    gold = [0, 0, 1, 1, 2, 2]
    predicted = [0, 1, 1, 1, 2, 0]
    # per-class F1: class 0 P=1/2 R=1/2 → 1/2; class 1 P=2/3 R=1 → 4/5; class 2 P=1 R=1/2 → 2/3
    scores = classification_scores(predicted, gold)
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["macro_f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)


def test_csv_keeps_quoted_line_breaks_and_commas_and_strips_texts(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(b'text,category\r\n"\nHow do I unblock my PIN?",pin_blocked\r\n"rate, please ",exchange_rate\r\n')
    raw = load_classification_dataset({"train": str(path)}, text_column="text", label_column="category")
    assert raw["train"].column_names == ["text", "label"]
    assert list(raw["train"]["text"]) == ["How do I unblock my PIN?", "rate, please"]
    assert list(raw["train"]["label"]) == ["pin_blocked", "exchange_rate"]


def test_label_list_file_pins_the_order_and_must_cover_the_data(tmp_path):
    labels = ["b", "a", "c", "a"]
    assert label_list_from(labels) == ["a", "b", "c"]
    pinned = tmp_path / "categories.json"
    pinned.write_text(json.dumps(["c", "a", "b", "unused"]))
    assert label_list_from(labels, str(pinned)) == ["c", "a", "b", "unused"]
    pinned.write_text(json.dumps(["c", "a"]))
    with pytest.raises(ValueError, match="missing.*'b'"):
        label_list_from(labels, str(pinned))


def test_validation_split_from_a_file_sorted_by_label_is_stratified_and_fixed_by_its_seed():
    labels = ["x"] * 40 + ["y"] * 40 + ["z"] * 20  # sorted by label, as Banking77's files are
    raw = with_label_ids(
        DatasetDict({"train": Dataset.from_dict({"text": [str(i) for i in range(100)], "label": labels})}),
        ["x", "y", "z"],
    )
    split = carve_validation_split(raw, percentage=10, seed=0)
    assert (len(split["train"]), len(split["validation"])) == (90, 10)
    assert sorted(split["validation"]["label"]) == [0] * 4 + [1] * 4 + [2] * 2
    assert not set(split["train"]["text"]) & set(split["validation"]["text"])
    again = carve_validation_split(raw, percentage=10, seed=0)
    assert list(again["validation"]["text"]) == list(split["validation"]["text"])


def test_predictions_csv_round_trips_texts_with_commas_and_line_breaks(tmp_path):
    texts = ['card, "new" one', "line\nbreak"]
    write_classification_predictions(tmp_path / "p.csv", texts, ["a", "b"], ["a", "a"])
    with open(tmp_path / "p.csv", newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert [(row["text"], row["gold"], row["predicted"]) for row in rows] == [
        (texts[0], "a", "a"),
        (texts[1], "b", "a"),
    ]
