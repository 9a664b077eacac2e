"""The NER script end to end on tiny generated data: CoNLL and JSON-lines input, resuming, the saved folder, the
pipeline's entity offsets."""

import json
import random
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import run_ner  # noqa: E402

PEOPLE = [["Anna", "Smith"], ["Bob"], ["Carla", "Jones"], ["Dmitri"], ["Eve", "Brown"]]
PLACES = [["Paris"], ["New", "York"], ["Berlin"], ["Rio", "de", "Janeiro"], ["Oslo"]]
TEMPLATES = [
    ["{PER}", "lives", "in", "{LOC}", "."],
    ["we", "met", "{PER}", "yesterday", "."],
    ["flights", "to", "{LOC}", "are", "cheap", "."],
    ["{PER}", "flew", "from", "{LOC}", "to", "{LOC}", "."],
]
TINY_MODEL = "embedding_size=16,hidden_size=16,num_hidden_layers=1,embedding_dropout=0.0,hidden_dropout=0.0"


def make_sentences(count: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """Sentences with PER and LOC entities, tagged in IOB1 (as CoNLL-2003 is): entities start with I-."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(count):
        tokens, tags = [], []
        for slot in rng.choice(TEMPLATES):
            if slot in ("{PER}", "{LOC}"):
                entity = rng.choice(PEOPLE if slot == "{PER}" else PLACES)
                tokens += entity
                tags += [f"I-{slot[1:4]}"] * len(entity)
            else:
                tokens.append(slot)
                tags.append("O")
        sentences.append((tokens, tags))
    return sentences


def write_conll(path: Path, sentences) -> None:
    """Four columns like CoNLL-2003: token, POS, chunk, NER tag; a -DOCSTART- line first."""
    lines = ["-DOCSTART- -X- -X- O", ""]
    for tokens, tags in sentences:
        lines += [f"{token} NN I-NP {tag}" for token, tag in zip(tokens, tags, strict=True)] + [""]
    path.write_text("\n".join(lines) + "\n")


def write_jsonl(path: Path, sentences, tag_names: list[str]) -> None:
    """JSON lines with `tokens` and integer `ner_tags` (IOB2 ids), as transformers' example accepts."""
    rows = []
    for tokens, tags in sentences:
        iob2 = run_ner.convert_iob1_to_iob2(tags)
        rows.append(json.dumps({"tokens": tokens, "ner_tags": [tag_names.index(tag) for tag in iob2]}))
    path.write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def conll_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("conll")
    files = {}
    for split, count, seed in (("train", 64, 0), ("validation", 16, 1), ("test", 16, 2)):
        files[split] = folder / f"{split}.txt"
        write_conll(files[split], make_sentences(count, seed))
    return files


def conll_args(files: dict[str, Path], output_dir: Path, *extra: str) -> list[str]:
    return [
        "--train_file", str(files["train"]),
        "--validation_file", str(files["validation"]),
        "--test_file", str(files["test"]),
        "--conll_column_names", "tokens,pos,chunk,ner_tags",
        "--output_dir", str(output_dir),
        "--config_overrides", TINY_MODEL,
        "--word_vectors", "none",
        "--tokenizer_vocab_size", "200",
        "--per_device_train_batch_size", "8",
        "--learning_rate", "0.01",
        "--run_demo", "false",
        "--save_strategy", "epoch",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def trained_tagger(conll_files, tmp_path_factory) -> tuple[Path, dict]:
    output_dir = tmp_path_factory.mktemp("tagger")
    crf = ("--config_overrides", TINY_MODEL + ",use_crf=true,crf_constraints=iob2")  # the default head
    results = run_ner.main(conll_args(conll_files, output_dir, "--num_train_epochs", "20", "--seed", "3", *crf))
    return output_dir, results


def test_conll_run_writes_every_artifact(trained_tagger):
    output_dir, results = trained_tagger
    for name in (
        "model.safetensors", "config.json", "modeling_birnn.py", "configuration_birnn.py", "tokenizer.json",
        "all_results.json", "test_predictions.conll", "training_curves.png", "README.md",
    ):  # fmt: skip
        assert (output_dir / name).exists(), name
    config = json.loads((output_dir / "config.json").read_text())
    assert set(config["label2id"]) == {"O", "B-PER", "I-PER", "B-LOC", "I-LOC"}  # IOB1 came in, IOB2 is learnt
    assert "AutoModelForTokenClassification" in config["auto_map"]
    all_results = json.loads((output_dir / "all_results.json").read_text())
    assert all_results["test_f1"] == results["test_f1"]
    assert results["test_f1"] > 0.9, results  # the generated task is easy


def test_test_predictions_are_in_conll_format_one_line_per_word(trained_tagger, conll_files):
    output_dir, _ = trained_tagger
    sentences = [block.splitlines() for block in (output_dir / "test_predictions.conll").read_text().split("\n\n")]
    sentences = [lines for lines in sentences if lines]
    expected = make_sentences(16, 2)
    assert [[line.split()[0] for line in lines] for lines in sentences] == [tokens for tokens, _ in expected]
    gold = [[line.split()[1] for line in lines] for lines in sentences]
    assert gold == [run_ner.convert_iob1_to_iob2(tags) for _, tags in expected]


def test_model_card_carries_the_metrics_and_the_next_token_caveat(trained_tagger):
    output_dir, results = trained_tagger
    card = (output_dir / "README.md").read_text()
    assert "model-index" in card and "token-classification" in card
    assert f"{results['test_f1'] * 100:.2f}" in card
    assert "next-token" in card


def test_model_card_states_the_run_as_values_with_per_type_scores_the_kept_epoch_and_the_curve(trained_tagger):
    output_dir, results = trained_tagger
    card = (output_dir / "README.md").read_text()
    assert "| lr_scheduler_type | linear |" in card and "SchedulerType" not in card
    for split, prefix in (("validation", "eval"), ("test", "test")):
        for entity_type in ("PER", "LOC"):
            row = f"| {split} | {entity_type} | {100 * results[f'{prefix}_{entity_type}_precision']:.2f} |"
            assert row in card, row
    assert re.search(r"The checkpoint of epoch \d+ of 20 was kept: it had the best validation f1 \(\d+\.\d\d\)", card)
    assert re.search(r"in \d+\.\d min on CPU \(", card)
    for image in re.findall(r"!\[[^]]*\]\(([^)]+)\)", card):
        assert (output_dir / image).is_file(), image
    assert "training_curves.png" in card
    assert "Derczynski" not in card  # the data here is not WNUT-17: no WNUT-17 citation


def test_logs_keep_per_type_scores_out_of_the_console_and_in_the_results(trained_tagger):
    output_dir, results = trained_tagger
    state = json.loads(max(output_dir.glob("checkpoint-*/trainer_state.json")).read_text())
    logged_evaluations = [entry for entry in state["log_history"] if "eval_f1" in entry]
    assert logged_evaluations and all("eval_PER_f1" not in entry for entry in logged_evaluations)
    assert "test_PER_f1" in json.loads((output_dir / "all_results.json").read_text())


def test_saved_folder_loads_with_auto_class_and_pipeline_offsets_are_right(trained_tagger):
    output_dir, _ = trained_tagger
    model = AutoModelForTokenClassification.from_pretrained(output_dir)
    assert type(model).__name__ == "BiRNNForTokenClassification"
    tagger = pipeline("token-classification", model=str(output_dir), aggregation_strategy="simple")
    sentence = "Carla Jones lives in New York ."
    entities = tagger(sentence)
    assert [(e["entity_group"], e["word"]) for e in entities] == [("PER", "Carla Jones"), ("LOC", "New York")]
    for entity in entities:
        assert sentence[entity["start"] : entity["end"]] == entity["word"]


def test_json_lines_with_integer_tags(tmp_path):
    tag_names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    files = {}
    for split, count, seed in (("train", 32, 5), ("validation", 8, 6)):
        files[split] = tmp_path / f"{split}.jsonl"
        write_jsonl(files[split], make_sentences(count, seed), tag_names)
    results = run_ner.main(
        [
            "--train_file", str(files["train"]),
            "--validation_file", str(files["validation"]),
            "--tag_names", ",".join(tag_names),
            "--output_dir", str(tmp_path / "out"),
            "--config_overrides", TINY_MODEL,
            "--word_vectors", "none",
            "--tokenizer_vocab_size", "200",
            "--max_steps", "3",
            "--do_predict", "false",
            "--run_demo", "false",
        ]
    )  # fmt: skip
    assert "eval_f1" in results
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert set(config["label2id"]) == set(tag_names)


def test_resuming_from_a_checkpoint_ends_with_the_uninterrupted_weights(conll_files, tmp_path):
    """A run stopped after its first epoch and resumed from that checkpoint ends where an uninterrupted run ends."""
    common = ("--num_train_epochs", "2", "--seed", "7", "--do_predict", "false", "--run_demo", "false")
    no_eval = ("--do_eval", "false", "--eval_strategy", "no", "--load_best_model_at_end", "false")
    run_ner.main(conll_args(conll_files, tmp_path / "straight", *common, *no_eval))
    first_epoch = tmp_path / "straight" / "checkpoint-8"  # 64 rows / batch 8
    interrupted = tmp_path / "interrupted"
    shutil.copytree(first_epoch, interrupted / first_epoch.name)

    resumed_args = ("--resume_from_checkpoint", str(interrupted / first_epoch.name))
    run_ner.main(conll_args(conll_files, interrupted, *common, *no_eval, *resumed_args))

    straight = load_file(tmp_path / "straight" / "model.safetensors")
    resumed = load_file(interrupted / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], atol=1e-6, rtol=0)


def write_conllu(path: Path, sentences) -> None:
    """CoNLL-U with a UPOS column made from the generated sentences (PROPN inside entities), a multiword token
    range in each sentence that the reader must skip."""
    lines = []
    for index, (tokens, tags) in enumerate(sentences):
        lines += [f"# sent_id = {index}", f"1-2\t{tokens[0]}{tokens[1]}" + "\t_" * 8]
        for position, (token, tag) in enumerate(zip(tokens, tags, strict=True), start=1):
            upos = "PROPN" if tag != "O" else ("PUNCT" if token == "." else "X")
            lines.append("\t".join([str(position), token, token, upos, "_", "_", "0", "dep", "_", "_"]))
        lines.append("")
    path.write_text("\n".join(lines) + "\n")


def test_pos_task_on_conllu_scores_word_accuracy_with_spelling_features(tmp_path):
    files = {}
    for split, count, seed in (("train", 48, 7), ("validation", 8, 8), ("test", 8, 9)):
        files[split] = tmp_path / f"{split}.conllu"
        write_conllu(files[split], make_sentences(count, seed))
    output_dir = tmp_path / "pos"
    results = run_ner.main(
        [
            "--train_file", str(files["train"]),
            "--validation_file", str(files["validation"]),
            "--test_file", str(files["test"]),
            "--task_name", "pos",
            "--label_column_name", "upos",
            "--output_dir", str(output_dir),
            "--config_overrides", TINY_MODEL + ",character_filters=8,character_embedding_size=8",
            "--word_vectors", "none",
            "--tokenizer_vocab_size", "200",
            "--per_device_train_batch_size", "8",
            "--learning_rate", "0.01",
            "--num_train_epochs", "20",
        ]
    )  # fmt: skip
    assert results["test_accuracy"] > 0.9, results  # PROPN / PUNCT / X from the generated sentences
    assert "test_f1" not in results
    config = json.loads((output_dir / "config.json").read_text())
    assert set(config["label2id"]) == {"PROPN", "PUNCT", "X"}
    card = (output_dir / "README.md").read_text()
    assert "part-of-speech tagging" in card and f"{results['test_accuracy'] * 100:.2f}" in card
    assert "plus 8 character-CNN spelling features" in card
    model = AutoModelForTokenClassification.from_pretrained(output_dir)
    # read from the trained tokenizer, saved, reloaded
    assert model.birnn.embeddings.token_spelling.token_spellings.any()


def test_pos_demo_joins_word_pieces_under_the_first_pieces_tag():
    predictions = [
        {"word": "Mad", "entity": "PROPN", "start": 0, "end": 3},
        {"word": "##ison", "entity": "NOUN", "start": 3, "end": 7},
        {"word": "rocks", "entity": "VERB", "start": 8, "end": 13},
    ]
    assert run_ner.tagged_words(predictions) == [(0, 7, "PROPN"), (8, 13, "VERB")]


def write_glove_file(path: Path, words: list[str], dim: int = 8) -> None:
    rng = random.Random(0)
    lines = [f"{word} " + " ".join(f"{rng.gauss(0, 1):.4f}" for _ in range(dim)) for word in words]
    path.write_text("\n".join(lines) + "\n")


def test_word_vectors_give_unseen_names_their_vector_and_the_pipeline_tags_them(conll_files, tmp_path):
    """Trained with a GloVe file, the tagger reaches the names of the vectors it never saw in training."""
    vector_words = [w.lower() for entity in PEOPLE + PLACES for w in entity] + ["lives", "in", "we", "met", "."]
    vector_words += ["zanzibar", "kazakhstan"]  # places the training data never mentions
    glove = tmp_path / "glove.8d.txt"
    write_glove_file(glove, vector_words)
    output_dir = tmp_path / "vectors"
    overrides = "hidden_size=16,num_hidden_layers=1,embedding_dropout=0.0,hidden_dropout=0.0,character_filters=8"
    args = conll_args(conll_files, output_dir, "--num_train_epochs", "15", "--seed", "3")
    args[args.index("--word_vectors") + 1] = str(glove)
    args[args.index("--config_overrides") + 1] = overrides + ",use_crf=true,crf_constraints=iob2"
    results = run_ner.main(args)
    assert results["test_f1"] > 0.9, results
    config = json.loads((output_dir / "config.json").read_text())
    assert config["num_word_vectors"] == len(vector_words) and config["embedding_size"] == 8
    assert config["learned_vocab_size"] < config["vocab_size"]
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    assert len(tokenizer.tokenize("KAZAKHSTAN Kazakhstan kazakhstan")) == 3  # each a whole word
    card = (output_dir / "README.md").read_text()
    assert "word vectors" in card and glove.name in card
