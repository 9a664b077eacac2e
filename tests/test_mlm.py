"""Masked-LM pretraining end to end on a tiny generated corpus (loss, masking, the saved folder, the fill-mask
pipeline, fine-tuning a tagger from it), the guard against next-token training of a BiRNN, and the seed
experiment's preprocessing."""

import json
import math
import random
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    pipeline,
)

from hf_birnn import BiRNNConfig, BiRNNForCausalLM, BiRNNForMaskedLM
from hf_birnn.language_modeling import group_into_blocks, masked_token_accuracy, read_text_lines
from hf_birnn.tokenization import train_wordpiece_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import reproduce_seed  # noqa: E402
import run_mlm  # noqa: E402
import run_ner  # noqa: E402

TIME_MACHINE = REPO_ROOT.parent / "shared" / "data" / "timemachine" / "timemachine.txt"
PEOPLE = ["Anna", "Bob", "Carla", "Dmitri"]
PLACES = ["Paris", "Berlin", "Oslo", "Lima"]
TEMPLATES = ["{PER} lives in {LOC} .", "we met {PER} in {LOC} yesterday .", "flights to {LOC} are cheap ."]
TINY_MODEL = "embedding_size=32,hidden_size=32,num_hidden_layers=1,embedding_dropout=0.0,hidden_dropout=0.0"


def make_sentences(count: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """Words and IOB2 tags of sentences about people and places."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(count):
        words, tags = [], []
        for word in rng.choice(TEMPLATES).split():
            if word in ("{PER}", "{LOC}"):
                words.append(rng.choice(PEOPLE if word == "{PER}" else PLACES))
                tags.append(f"B-{word[1:4]}")
            else:
                words.append(word)
                tags.append("O")
        sentences.append((words, tags))
    return sentences


@pytest.fixture(scope="module")
def text_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("text")
    files = {}
    for split, count, seed in (("train", 200, 0), ("validation", 40, 1)):
        files[split] = folder / f"{split}.txt"
        files[split].write_text("\n".join(" ".join(words) for words, _ in make_sentences(count, seed)) + "\n")
    return files


@pytest.fixture(scope="module")
def trained_mlm(text_files, tmp_path_factory) -> tuple[Path, dict]:
    output_dir = tmp_path_factory.mktemp("mlm")
    results = run_mlm.main(
        [
            "--train_file", str(text_files["train"]),
            "--validation_file", str(text_files["validation"]),
            "--output_dir", str(output_dir),
            "--config_overrides", TINY_MODEL,
            "--tokenizer_vocab_size", "200",  # the corpus fills 104: each word one token, whatever ties are broken
            "--max_seq_length", "16",
            "--num_train_epochs", "15",
            "--per_device_train_batch_size", "8",
            "--learning_rate", "0.02",
            "--run_demo", "false",
        ]
    )  # fmt: skip
    return output_dir, results


# ---------------------------------------------------------------------------------------------------------------------
# Reading text and masking
# ---------------------------------------------------------------------------------------------------------------------


def test_read_text_lines_understands_each_layout(tmp_path):
    conllu = tmp_path / "a.conllu"
    conllu.write_text("# sent_id = 1\n# text = Hello there.\n1\tHello\n2\tthere\n\n# text = Bye.\n1\tBye\n")
    conll = tmp_path / "b.conll"
    conll.write_text("-DOCSTART- O\n\nHello\tO\nAnna\tB-person\n\t\nBye\tO\n")
    wikitext = tmp_path / "c.tokens"
    wikitext.write_text(" \n = = Early life = = \n \n It cost 1 @,@ 000 <unk> in a state @-@ run shop . \n")
    plain = tmp_path / "d.txt"
    plain.write_text("First line\n\n  second line  \n")
    assert read_text_lines(conllu) == ["Hello there.", "Bye."]
    assert read_text_lines(conll) == ["Hello Anna", "Bye"]
    assert read_text_lines(wikitext) == ["Early life", "It cost 1,000 [UNK] in a state-run shop ."]
    assert read_text_lines(plain) == ["First line", "second line"]


def test_group_into_blocks_concatenates_and_drops_the_remainder():
    batch = {"input_ids": [[1, 2, 3], [4, 5], [6, 7, 8, 9]], "attention_mask": [[1, 1, 1], [1, 1], [1, 1, 1, 1]]}
    blocks = group_into_blocks(batch, block_size=4)
    assert blocks["input_ids"] == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert blocks["attention_mask"] == [[1, 1, 1, 1], [1, 1, 1, 1]]


def test_collator_masks_only_real_tokens_and_the_loss_scores_only_them():
    texts = [" ".join(words) for words, _ in make_sentences(50, 3)] + ["an unseen word like zebra"]
    tokenizer = train_wordpiece_tokenizer(texts[:-1], vocab_size=60)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.5, seed=0)
    encoded = [tokenizer(text) for text in texts]  # as run_mlm tokenizes
    batch = collator(encoded)
    original = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(row["input_ids"]) for row in encoded], batch_first=True, padding_value=tokenizer.pad_token_id
    )
    assert tokenizer.unk_token_id in original[-1]
    picked = batch["labels"] != -100
    assert picked.any()
    torch.testing.assert_close(batch["labels"][picked], original[picked])  # labels hold the original ids
    special_ids = torch.tensor(tokenizer.all_special_ids)
    assert not torch.isin(original[picked], special_ids).any()  # never [PAD] or [UNK]
    unchanged = ~picked
    torch.testing.assert_close(batch["input_ids"][unchanged], original[unchanged])
    assert (batch["input_ids"][picked] == tokenizer.mask_token_id).float().mean() > 0.5

    torch.manual_seed(0)
    config = BiRNNConfig(vocab_size=len(tokenizer), embedding_size=8, hidden_size=8, num_hidden_layers=1)
    model = BiRNNForMaskedLM(config).eval()
    output = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    expected = torch.nn.functional.cross_entropy(output.logits[picked], batch["labels"][picked])
    torch.testing.assert_close(output.loss, expected, atol=1e-5, rtol=0)


def test_masked_token_accuracy_counts_masked_positions_only():
    predictions = torch.tensor([[5, 6, 7], [1, 2, 3]]).numpy()
    labels = torch.tensor([[5, -100, 9], [-100, 2, -100]]).numpy()
    prediction = type("EvalPrediction", (), {"predictions": predictions, "label_ids": labels})
    assert masked_token_accuracy(prediction) == {"accuracy": 2 / 3}


# ---------------------------------------------------------------------------------------------------------------------
# The script's saved folder
# ---------------------------------------------------------------------------------------------------------------------


def test_mlm_run_writes_every_artifact_and_learns(trained_mlm):
    output_dir, results = trained_mlm
    for name in (
        "model.safetensors", "config.json", "modeling_birnn.py", "configuration_birnn.py", "tokenizer.json",
        "all_results.json", "training_curves.png", "README.md",
    ):  # fmt: skip
        assert (output_dir / name).exists(), name
    config = json.loads((output_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModelForMaskedLM"] == "modeling_birnn.BiRNNForMaskedLM"
    model = AutoModelForMaskedLM.from_pretrained(output_dir)
    # the tied decoder is not saved twice
    assert model.lm_head.decoder.weight is model.birnn.embeddings.word_embeddings.weight
    all_results = json.loads((output_dir / "all_results.json").read_text())
    assert all_results["eval_perplexity"] == pytest.approx(math.exp(all_results["eval_loss"]))
    assert results["eval_perplexity"] < 12, results  # token frequencies alone give ~16: the context is used
    card = (output_dir / "README.md").read_text()
    assert "fill-mask" in card and "next-token" in card and "model-index" in card
    assert f"{results['eval_accuracy'] * 100:.2f}" in card and f"{results['eval_perplexity']:.2f}" in card


def test_fill_mask_pipeline_returns_the_models_top_k_tokens_and_probabilities(trained_mlm):
    output_dir, _ = trained_mlm
    fill_mask = pipeline("fill-mask", model=str(output_dir), top_k=3)
    candidates = fill_mask("we met Anna in [MASK] yesterday .")

    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    model = AutoModelForMaskedLM.from_pretrained(output_dir).eval()
    encoded = tokenizer("we met Anna in [MASK] yesterday .", return_tensors="pt")
    mask_position = int((encoded["input_ids"][0] == tokenizer.mask_token_id).nonzero())
    with torch.no_grad():
        probabilities = model(**encoded).logits[0, mask_position].softmax(-1)
    top = probabilities.topk(3)
    assert [candidate["token"] for candidate in candidates] == top.indices.tolist()
    torch.testing.assert_close(torch.tensor([c["score"] for c in candidates]), top.values, atol=1e-5, rtol=0)
    assert candidates[0]["sequence"].startswith(f"we met Anna in {candidates[0]['token_str']} yesterday")
    assert candidates[0]["token_str"] in PLACES  # the context asks for a place


def test_token_classifier_from_the_mlm_keeps_the_encoder_and_gets_a_new_head(trained_mlm, tmp_path):
    mlm_dir, _ = trained_mlm
    mlm_weights = load_file(mlm_dir / "model.safetensors")
    encoder_names = sorted(name for name in mlm_weights if name.startswith("birnn."))

    tagger, loading_info = AutoModelForTokenClassification.from_pretrained(
        mlm_dir, num_labels=5, output_loading_info=True
    )
    assert set(loading_info["missing_keys"]) == {"classifier.weight", "classifier.bias"}
    tagger_weights = tagger.state_dict()
    for name in encoder_names:
        torch.testing.assert_close(tagger_weights[name], mlm_weights[name], atol=0, rtol=0)

    # run_ner starting from the MLM reuses its tokenizer; a zero learning rate keeps the weights as loaded
    conll = tmp_path / "train.conll"
    conll.write_text(
        "\n\n".join("\n".join(f"{w}\t{t}" for w, t in zip(*s, strict=True)) for s in make_sentences(16, 5)) + "\n"
    )
    ner_dir = tmp_path / "ner"
    run_ner.main(
        [
            "--model_name_or_path", str(mlm_dir),
            "--train_file", str(conll),
            "--validation_file", str(conll),
            "--output_dir", str(ner_dir),
            "--max_steps", "1",
            "--learning_rate", "0",
            "--do_predict", "false",
            "--run_demo", "false",
        ]
    )  # fmt: skip
    ner_weights = load_file(ner_dir / "model.safetensors")
    for name in encoder_names:
        torch.testing.assert_close(ner_weights[name], mlm_weights[name], atol=0, rtol=0)
    assert not any(name.startswith("lm_head.") for name in ner_weights)
    initializer_range = json.loads((mlm_dir / "config.json").read_text())["initializer_range"]
    assert torch.count_nonzero(ner_weights["classifier.bias"]) == 0
    assert ner_weights["classifier.weight"].std().item() == pytest.approx(initializer_range, rel=0.3)
    ner_vocab = json.loads((ner_dir / "tokenizer.json").read_text())["model"]["vocab"]
    assert ner_vocab == json.loads((mlm_dir / "tokenizer.json").read_text())["model"]["vocab"]


# ---------------------------------------------------------------------------------------------------------------------
# Next-token prediction: the guard, and causality
# ---------------------------------------------------------------------------------------------------------------------


def tiny_config(**overrides) -> BiRNNConfig:
    settings = {"vocab_size": 30, "embedding_size": 8, "hidden_size": 8, "num_hidden_layers": 2, **overrides}
    return BiRNNConfig(**settings)


def test_causal_lm_refuses_a_bidirectional_config_and_says_why():
    for build in (lambda: BiRNNForCausalLM(tiny_config()), lambda: AutoModelForCausalLM.from_config(tiny_config())):
        with pytest.raises(ValueError, match="already read the token to be predicted") as error:
            build()
        assert "BiRNNForMaskedLM" in str(error.value) and "bidirectional=False" in str(error.value)


def test_unidirectional_causal_lm_never_sees_the_future_and_the_leaking_one_does():
    torch.manual_seed(0)
    input_ids = torch.randint(1, 30, (3, 9))
    changed_future = input_ids.clone()
    changed_future[:, 5:] = torch.randint(1, 30, (3, 4))
    causal = BiRNNForCausalLM(tiny_config(bidirectional=False)).eval()
    leaking = reproduce_seed.LeakingBiRNNForCausalLM(tiny_config()).eval()
    with torch.no_grad():
        causal_logits, causal_logits_changed = (causal(input_ids=ids).logits for ids in (input_ids, changed_future))
        leaking_logits, leaking_logits_changed = (leaking(input_ids=ids).logits for ids in (input_ids, changed_future))
        output = causal(input_ids=input_ids, labels=input_ids)
    torch.testing.assert_close(causal_logits[:, :5], causal_logits_changed[:, :5], atol=1e-6, rtol=0)
    assert not torch.allclose(leaking_logits[:, 4], leaking_logits_changed[:, 4])  # step 4 has read token 5
    expected = torch.nn.functional.cross_entropy(output.logits[:, :-1].flatten(0, 1), input_ids[:, 1:].flatten())
    torch.testing.assert_close(output.loss, expected, atol=1e-5, rtol=0)  # step t is scored on token t+1


# ---------------------------------------------------------------------------------------------------------------------
# The seed experiment
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not TIME_MACHINE.exists(), reason=f"{TIME_MACHINE} is not here")
def test_seed_preprocessing_matches_d2l_corpus_and_vocabulary():
    corpus, vocabulary = reproduce_seed.build_char_corpus(reproduce_seed.read_time_machine(TIME_MACHINE))
    assert (len(corpus), len(vocabulary)) == (170_580, 28)
    assert vocabulary[:3] == ["<unk>", " ", "e"]  # d2l's order: <unk>, then by falling frequency
    assert set(vocabulary[1:]) == set(" abcdefghijklmnopqrstuvwxyz")


def test_seed_batches_follow_d2l_sequential_iterator():
    corpus = torch.arange(200)
    batches = list(reproduce_seed.sequential_batches(corpus, batch_size=2, num_steps=5, rng=random.Random(0)))
    assert all(inputs.shape == (2, 5) for inputs, _ in batches)
    for inputs, targets in batches:
        torch.testing.assert_close(targets, inputs + 1)  # the next character
    first_row = torch.cat([inputs[0] for inputs, _ in batches])
    torch.testing.assert_close(first_row, first_row[0] + torch.arange(len(first_row)))  # consecutive windows


def test_seed_script_writes_its_table(tmp_path):
    text = tmp_path / "tiny.txt"
    text.write_text("The Time Traveller (for so it will be convenient to speak of him)\nwas expounding.\n" * 20)
    output_file = tmp_path / "seed.md"
    results = reproduce_seed.main(
        [
            "--data_file", str(text),
            "--num_epochs", "2",
            "--hidden_size", "8",
            "--num_layers", "1",
            "--batch_size", "4",
            "--max_tokens", "-1",
            "--num_predictions", "5",
            "--output_file", str(output_file),
        ]
    )  # fmt: skip
    assert [result["experiment"] for result in results] == ["a", "b", "c"]
    table = output_file.read_text()
    assert "| (a) | BiLSTM | next character |" in table and "| (c) | BiLSTM | masked characters |" in table
    assert len(results[0]["sample"]) == len("time traveller") + 5
