"""The sentence-classification script end to end on tiny generated data: CSV and JSON-lines input, the pinned label
order, the carved validation split, the saved folder, starting from a masked-LM checkpoint, and the pipeline."""

import csv
import json
import random
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from hf_birnn import BiRNNConfig, BiRNNForMaskedLM
from hf_birnn.tokenization import train_wordpiece_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import run_classification  # noqa: E402

LABEL_ORDER = ["top_up_failed", "card_arrival", "exchange_rate"]  # pinned, and not alphabetical
TEMPLATES = {
    "card_arrival": ["where is my {card} card", "my {card} card has not arrived", "when will the {card} card come"],
    "exchange_rate": ["what is the rate for {currency}", "how much are {currency} worth", "{currency}, what rate?"],
    "top_up_failed": [
        "my top up of {amount} failed",
        "why did the {amount} top-up fail",
        "\ntop up {amount} declined",
    ],
}
FILLERS = {
    "card": ["new", "virtual", "metal", "blue"],
    "currency": ["euros", "dollars", "yen", "pounds"],
    "amount": ["£20", "50 EUR", "$10", "100"],
}
TINY_MODEL = "embedding_size=16,hidden_size=16,num_hidden_layers=1,embedding_dropout=0.0,hidden_dropout=0.0"


def make_rows(count: int, seed: int) -> list[dict[str, str]]:
    """Texts with commas, quotes-worthy line breaks and currency signs, sorted by label like Banking77's files."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        label = rng.choice(sorted(TEMPLATES))
        text = rng.choice(TEMPLATES[label]).format(**{slot: rng.choice(words) for slot, words in FILLERS.items()})
        rows.append({"text": text, "category": label})
    return sorted(rows, key=lambda row: row["category"])


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=["text", "category"], lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def csv_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("csv")
    files = {"train": folder / "train.csv", "test": folder / "test.csv", "labels": folder / "categories.json"}
    write_csv(files["train"], make_rows(90, seed=0))
    write_csv(files["test"], make_rows(20, seed=1))
    files["labels"].write_text(json.dumps(LABEL_ORDER))
    return files


@pytest.fixture(scope="module")
def trained_classifier(csv_files, tmp_path_factory) -> tuple[Path, dict]:
    """No validation file: 10 % of train is carved off as the validation split."""
    output_dir = tmp_path_factory.mktemp("classifier")
    results = run_classification.main(
        [
            "--train_file", str(csv_files["train"]),
            "--test_file", str(csv_files["test"]),
            "--label_column_name", "category",
            "--label_list_file", str(csv_files["labels"]),
            "--output_dir", str(output_dir),
            "--config_overrides", TINY_MODEL,
            "--tokenizer_vocab_size", "200",
            "--per_device_train_batch_size", "8",
            "--learning_rate", "0.03",
            "--num_train_epochs", "4",
            "--seed", "3",
            "--run_demo", "false",
            "--word_vectors", "none",
        ]
    )  # fmt: skip
    return output_dir, results


def test_csv_run_writes_every_artifact(trained_classifier):
    output_dir, results = trained_classifier
    for name in (
        "model.safetensors", "config.json", "modeling_birnn.py", "configuration_birnn.py", "tokenizer.json",
        "all_results.json", "test_predictions.csv", "confusion_matrix.png", "training_curves.png", "README.md",
    ):  # fmt: skip
        assert (output_dir / name).exists(), name
    config = json.loads((output_dir / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(3)] == LABEL_ORDER
    assert config["label2id"] == {label: i for i, label in enumerate(LABEL_ORDER)}
    assert "AutoModelForSequenceClassification" in config["auto_map"]
    all_results = json.loads((output_dir / "all_results.json").read_text())
    assert all_results["test_accuracy"] == results["test_accuracy"]
    assert {"eval_accuracy", "eval_macro_f1", "test_macro_f1"} <= set(all_results)
    assert results["test_accuracy"] > 0.9, results  # the generated task is easy


def test_test_predictions_hold_each_text_with_gold_and_predicted_label(trained_classifier):
    output_dir, results = trained_classifier
    with open(output_dir / "test_predictions.csv", newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    expected = make_rows(20, seed=1)
    assert [row["text"] for row in rows] == [row["text"].strip() for row in expected]
    assert [row["gold"] for row in rows] == [row["category"] for row in expected]
    correct = sum(row["gold"] == row["predicted"] for row in rows)
    assert correct / len(rows) == pytest.approx(results["test_accuracy"])


def test_model_card_carries_the_metrics_and_the_next_token_caveat(trained_classifier):
    output_dir, results = trained_classifier
    card = (output_dir / "README.md").read_text()
    assert "model-index" in card and "text-classification" in card
    assert f"{results['test_accuracy'] * 100:.2f}" in card and f"{results['eval_macro_f1'] * 100:.2f}" in card
    assert "next-token" in card and "lower-cased" in card


def test_pipeline_returns_label_names_and_scores_and_honours_top_k(trained_classifier):
    output_dir, _ = trained_classifier
    classifier = pipeline("text-classification", model=str(output_dir))
    [best] = classifier("where is my metal card")
    assert best["label"] == "card_arrival" and 0 < best["score"] <= 1
    [ranked] = pipeline("text-classification", model=str(output_dir), top_k=3)("what is the rate for yen")
    assert [entry["label"] for entry in ranked][0] == "exchange_rate"
    assert sorted(entry["label"] for entry in ranked) == sorted(LABEL_ORDER)
    scores = [entry["score"] for entry in ranked]
    assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1.0, abs=1e-5)
    [top_two] = pipeline("text-classification", model=str(output_dir), top_k=2)("my top up failed")
    assert len(top_two) == 2


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_a_sentence_scores_the_same_alone_and_batched_with_longer_ones(trained_classifier, padding_side):
    """The pooled [H→ at the last real token ; H← at the first] must ignore the padding a batch adds."""
    output_dir, _ = trained_classifier
    tokenizer = AutoTokenizer.from_pretrained(output_dir, padding_side=padding_side)
    classifier = pipeline("text-classification", model=str(output_dir), tokenizer=tokenizer, top_k=None)
    short = "card"
    batch = [short, "why did the 50 EUR top-up fail again and again today", short, "how much are euros worth now"]
    [alone] = classifier(short)
    for batched in (classifier(batch, batch_size=4)[0], classifier(batch, batch_size=4)[2]):
        assert [entry["label"] for entry in batched] == [entry["label"] for entry in alone]
        torch.testing.assert_close(
            [entry["score"] for entry in batched], [entry["score"] for entry in alone], atol=1e-5, rtol=0
        )


def test_json_lines_run_starts_from_a_masked_lm_checkpoint(tmp_path):
    """The encoder of a saved masked-LM folder carries over unchanged (and its tokenizer with it); the head is new."""
    rows = make_rows(40, seed=5)
    for split, part in (("train", rows[::2]), ("validation", rows[1::2])):
        lines = [json.dumps({"sentence": row["text"], "label": row["category"]}) for row in part]
        (tmp_path / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    tokenizer = train_wordpiece_tokenizer([row["text"] for row in rows], vocab_size=200)
    pretrained = BiRNNForMaskedLM(BiRNNConfig(vocab_size=len(tokenizer), embedding_size=16, hidden_size=16))
    pretrained.save_pretrained(tmp_path / "mlm")
    tokenizer.save_pretrained(tmp_path / "mlm")

    results = run_classification.main(
        [
            "--model_name_or_path", str(tmp_path / "mlm"),
            "--train_file", str(tmp_path / "train.jsonl"),
            "--validation_file", str(tmp_path / "validation.jsonl"),
            "--text_column_name", "sentence",
            "--output_dir", str(tmp_path / "out"),
            "--max_steps", "1",
            "--learning_rate", "0",
            "--do_predict", "false",
            "--run_demo", "false",
            "--word_vectors", "none",
        ]
    )  # fmt: skip
    assert {"eval_accuracy", "eval_macro_f1"} <= set(results)
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    assert list(classifier.config.id2label.values()) == sorted(LABEL_ORDER)
    for name, weight in pretrained.birnn.state_dict().items():
        torch.testing.assert_close(classifier.birnn.state_dict()[name], weight, atol=0, rtol=0)
    assert (tmp_path / "out" / "tokenizer.json").read_text() == (tmp_path / "mlm" / "tokenizer.json").read_text()
