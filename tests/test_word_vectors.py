"""Pretrained word vectors: every file format, the errors of bad files, the whole-word tokenizer (an unseen word gets
its vector whatever its case, words outside every vocabulary fall back to pieces), frozen and fine-tuned tables,
and the round trips of a vector model: save/load, remote code, pipeline offsets, ONNX Runtime and int8."""

import gzip
import os
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForTokenClassification, pipeline

from hf_birnn import BiRNNConfig, BiRNNForMaskedLM, BiRNNForTokenClassification
from hf_birnn import word_vectors as word_vectors_module
from hf_birnn.training import WordVectorArguments, fresh_model
from hf_birnn.word_vectors import (
    WordVectors,
    build_word_vector_tokenizer,
    load_word_vectors,
    token_vector_rows,
)

DIM = 8
VECTOR_WORDS = ["the", ".", "in", "lives", "visited", "paris", "london", "kazakhstan", "anna", "1996", "u.s.", "жук"]
TRAINING_TEXTS = ["Anna lives in Paris .", "Bob visited London in 1996 .", "Anna visited the U.S. ."] * 4
LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
ATOL = 1e-5


@pytest.fixture(scope="module")
def vectors() -> WordVectors:
    rng = np.random.default_rng(0)
    return WordVectors(VECTOR_WORDS, rng.normal(size=(len(VECTOR_WORDS), DIM)).astype(np.float32), "tiny")


def text_lines(vectors: WordVectors) -> list[str]:
    rows = zip(vectors.words, vectors.vectors, strict=True)
    return [f"{word} " + " ".join(f"{value:.6f}" for value in row) for word, row in rows]


def write_vector_files(folder: Path, vectors: WordVectors) -> dict[str, Path]:
    lines = text_lines(vectors)
    files = {
        "glove": folder / "glove.txt",
        "fasttext": folder / "vectors.vec",
        "gzip": folder / "glove.txt.gz",
        "zip": folder / "glove.zip",
        "word2vec-binary": folder / "vectors.bin",
    }
    files["glove"].write_text("\n".join(lines) + "\n")
    files["fasttext"].write_text(f"{len(lines)} {DIM}\n" + "\n".join(lines) + "\n")
    with gzip.open(files["gzip"], "wt") as out:
        out.write("\n".join(lines) + "\n")
    with zipfile.ZipFile(files["zip"], "w") as archive:
        archive.writestr("glove.6B.8d.txt", "\n".join(lines) + "\n")
    with open(files["word2vec-binary"], "wb") as out:
        out.write(f"{len(lines)} {DIM}\n".encode())
        for word, row in zip(vectors.words, vectors.vectors, strict=True):
            out.write(word.encode() + b" " + struct.pack(f"<{DIM}f", *row) + b"\n")
    return files


@pytest.fixture(scope="module")
def vector_files(tmp_path_factory, vectors) -> dict[str, Path]:
    return write_vector_files(tmp_path_factory.mktemp("vectors"), vectors)


# --------------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("file_format", ["glove", "fasttext", "gzip", "zip", "word2vec-binary"])
def test_every_file_format_loads_the_same_vectors(vector_files, vectors, file_format):
    loaded = load_word_vectors(vector_files[file_format])
    assert loaded.words == vectors.words
    np.testing.assert_allclose(loaded.vectors, vectors.vectors, atol=1e-6)
    assert loaded.dim == DIM and loaded.lowercased


def test_max_word_vectors_keeps_the_first_rows(vector_files):
    assert load_word_vectors(vector_files["glove"], max_vectors=3).words == VECTOR_WORDS[:3]


def test_words_with_spaces_are_read_from_the_right(tmp_path):
    (tmp_path / "spaces.txt").write_text("c 3 4\na b 1 2\n")
    assert load_word_vectors(tmp_path / "spaces.txt").words == ["c", "a b"]


@pytest.mark.parametrize(
    "content,message",
    [
        ("the 1 2 3\nof 1 2\n", r"line 2: expected a word and 3 numbers.*got 2 fields"),
        ("the 1 2 3\nof 1 x 3\n", r"line 2: could not convert"),
        ("the\n", r"line 1: expected `word v1 v2"),
        ("", "holds no word vectors"),
    ],
    ids=["dimension-mismatch", "not-a-number", "no-vector", "empty"],
)
def test_malformed_files_are_named_with_the_line(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_word_vectors(path)


def test_a_missing_file_names_the_path_and_the_accepted_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No word-vector file at .*nowhere\.txt.*glove-6b-50d"):
        load_word_vectors(tmp_path / "nowhere.txt")


def test_a_truncated_word2vec_binary_is_named(tmp_path, vector_files):
    path = tmp_path / "cut.bin"
    path.write_bytes(vector_files["word2vec-binary"].read_bytes()[:-40])
    with pytest.raises(ValueError, match="truncated at word"):
        load_word_vectors(path)


def test_a_zip_with_several_files_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as archive:
        archive.writestr("a.txt", "x 1\n")
        archive.writestr("b.txt", "y 1\n")
    with pytest.raises(ValueError, match="exactly one vector file"):
        load_word_vectors(tmp_path / "two.zip")


def test_a_package_that_is_not_installed_says_which_pip_install_fixes_it(monkeypatch):
    monkeypatch.setitem(word_vectors_module.VECTOR_PACKAGES, "glove-test", ("no_such_module_x", "no-such-dist", 8))
    with pytest.raises(ImportError, match=r"pip install no-such-dist"):
        load_word_vectors("glove-test")


def test_auto_falls_back_to_no_vectors_when_the_package_is_missing(monkeypatch, caplog):
    monkeypatch.setitem(word_vectors_module.VECTOR_PACKAGES, "glove-6b-50d", ("no_such_module_x", "no-such-dist", 50))
    with caplog.at_level("WARNING"):
        assert WordVectorArguments(word_vectors="auto").load() is None
    assert "from scratch" in caplog.text and "pip install no-such-dist" in caplog.text
    with pytest.raises(ImportError):
        WordVectorArguments(word_vectors="glove-6b-50d").load()
    assert WordVectorArguments(word_vectors="none").load() is None


# --------------------------------------------------------------------------------------------------------------------
# The tokenizer and the model's table
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer_and_learned(vectors):
    return build_word_vector_tokenizer(TRAINING_TEXTS, vectors, piece_vocab_size=80)


def vector_tagger(tokenizer_and_learned, vectors, freeze: bool = True, **overrides) -> BiRNNForTokenClassification:
    tokenizer, learned_vocab_size = tokenizer_and_learned
    settings = "hidden_size=12,num_hidden_layers=1,character_filters=6,character_embedding_size=4,use_crf=true"
    torch.manual_seed(0)
    return fresh_model(
        BiRNNForTokenClassification,
        tokenizer,
        None,
        settings + "".join(f",{name}={value}" for name, value in overrides.items()),
        word_vectors=vectors,
        learned_vocab_size=learned_vocab_size,
        freeze_word_vectors=freeze,
        id2label=LABELS,
        label2id={label: i for i, label in LABELS.items()},
    )


def test_an_unseen_word_gets_its_vector_in_every_case_and_its_case_is_spelt(tokenizer_and_learned, vectors):
    tokenizer, learned_vocab_size = tokenizer_and_learned
    model = vector_tagger(tokenizer_and_learned, vectors).eval()
    ids = [tokenizer.convert_tokens_to_ids(variant) for variant in ("kazakhstan", "Kazakhstan", "KAZAKHSTAN")]
    assert len(set(ids)) == 3 and all(token_id >= learned_vocab_size for token_id in ids)  # never in training
    assert tokenizer("kazakhstan Kazakhstan KAZAKHSTAN")["input_ids"] == ids  # each one whole word
    embeddings = model.birnn.embeddings
    word_part = embeddings.word_vectors_of(torch.tensor([ids]))[0]
    expected = torch.from_numpy(vectors.vectors[VECTOR_WORDS.index("kazakhstan")])
    for row in word_part:
        torch.testing.assert_close(row, expected)
    spelling = embeddings.token_spelling(torch.tensor([ids]))[0]
    assert not torch.allclose(spelling[0], spelling[2])  # the case reaches the model through the spelling


def test_tokens_follow_the_vectors_tokenization_and_unknown_words_become_pieces(tokenizer_and_learned):
    tokenizer, _ = tokenizer_and_learned
    text = "Anna's U.S. trip didn't cost 1,000 (London)... O'Neill"
    words = [word for word, _ in tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)]
    assert words == ["Anna", "'s", "U.S.", "trip", "did", "n't", "cost", "1,000", "(", "London", ")", "...", "O'Neill"]
    tokens = tokenizer.tokenize("Anna visited the U.S. and KAZAKHSTAN (London).")
    assert tokens == ["Anna", "visited", "the", "U.S.", "a", "##n", "##d", "KAZAKHSTAN", "(", "London", ")", "."]
    for word in ("Zorblax", "Жжук"):  # in no vocabulary: pieces, spelt out by the character CNN (Ж from the vectors)
        unknown = tokenizer.tokenize(word)
        assert len(unknown) > 1 and all(token.startswith("##") for token in unknown[1:]) and "[UNK]" not in unknown


def test_token_rows_use_lowercase_then_digit_normalised_lookups(tokenizer_and_learned, vectors):
    tokenizer, _ = tokenizer_and_learned
    rows = token_vector_rows(tokenizer, vectors)
    assert rows[tokenizer.convert_tokens_to_ids("Paris")] == VECTOR_WORDS.index("paris")
    assert rows[tokenizer.convert_tokens_to_ids("[PAD]")] == -1
    assert all(rows[i] == -1 for token, i in tokenizer.get_vocab().items() if token.startswith("##"))
    index = vectors.row_index()
    assert word_vectors_module.vector_row("2001", index, lowercased=True) == VECTOR_WORDS.index("1996")


def test_training_words_learn_a_correction_that_starts_at_zero(tokenizer_and_learned, vectors):
    tokenizer, learned_vocab_size = tokenizer_and_learned
    model = vector_tagger(tokenizer_and_learned, vectors)
    learned = model.birnn.embeddings.word_embeddings.weight
    assert learned.shape[0] == learned_vocab_size
    assert not learned[tokenizer.convert_tokens_to_ids("Paris")].any()  # it has a vector: correction from 0
    assert learned[tokenizer.convert_tokens_to_ids("Bob")].any()  # no vector: a learned row of its own


@pytest.mark.parametrize("freeze", [True, False])
def test_frozen_vectors_stay_unchanged_after_training_steps(tokenizer_and_learned, vectors, freeze):
    tokenizer, _ = tokenizer_and_learned
    model = vector_tagger(tokenizer_and_learned, vectors, freeze=freeze).train()
    table = model.birnn.embeddings.word_vectors.vectors
    assert table.requires_grad is not freeze
    before = table.detach().clone()
    learned_before = model.birnn.embeddings.word_embeddings.weight.detach().clone()
    encoded = tokenizer(TRAINING_TEXTS[:3], padding=True, return_tensors="pt")
    labels = (encoded["input_ids"] % 5).masked_fill(encoded["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.01)
    for _ in range(3):
        optimizer.zero_grad()
        model(**encoded, labels=labels).loss.backward()
        optimizer.step()
    assert torch.equal(table, before) is freeze
    assert not torch.equal(model.birnn.embeddings.word_embeddings.weight, learned_before)


def test_init_weights_never_overwrites_the_vectors(tokenizer_and_learned, vectors):
    model = vector_tagger(tokenizer_and_learned, vectors)
    table = model.birnn.embeddings.word_vectors.vectors.detach().clone()
    model.init_weights()
    torch.testing.assert_close(model.birnn.embeddings.word_vectors.vectors[:-1], table[:-1], atol=0, rtol=0)


def test_training_without_filled_vectors_is_refused():
    config = BiRNNConfig(vocab_size=20, learned_vocab_size=10, num_word_vectors=5, embedding_size=4, num_labels=3)
    model = BiRNNForTokenClassification(config).train()
    with pytest.raises(ValueError, match="No token has a word vector"):
        model(torch.ones(1, 3, dtype=torch.long))


def test_a_language_model_head_refuses_word_vectors():
    with pytest.raises(ValueError, match="pretrain without word vectors"):
        BiRNNForMaskedLM(BiRNNConfig(vocab_size=20, learned_vocab_size=10, num_word_vectors=5, embedding_size=4))


def test_a_width_that_contradicts_the_vectors_is_refused(tokenizer_and_learned, vectors):
    with pytest.raises(ValueError, match="embedding_size=16.*8 wide"):
        vector_tagger(tokenizer_and_learned, vectors, embedding_size=16)


# --------------------------------------------------------------------------------------------------------------------
# Round trips of a vector model
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_vector_tagger(tmp_path_factory, tokenizer_and_learned, vectors) -> Path:
    """A tagger trained a little to tag the capitalised words of the training texts, saved with its tokenizer."""
    tokenizer, _ = tokenizer_and_learned
    model = vector_tagger(tokenizer_and_learned, vectors).train()
    encoded = tokenizer(TRAINING_TEXTS[:3], padding=True, return_tensors="pt")
    names = {"Anna": 1, "Bob": 1, "Paris": 3, "London": 3}
    tokens = [tokenizer.convert_ids_to_tokens(row) for row in encoded["input_ids"]]
    labels = torch.tensor([[names.get(token, 0) for token in row] for row in tokens])
    labels = labels.masked_fill(encoded["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(40):
        optimizer.zero_grad()
        model(**encoded, labels=labels).loss.backward()
        optimizer.step()
    folder = tmp_path_factory.mktemp("vector-tagger")
    model.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_save_and_load_keeps_the_vectors_inside_the_safetensors(saved_vector_tagger, tokenizer_and_learned):
    tokenizer, _ = tokenizer_and_learned
    model = AutoModelForTokenClassification.from_pretrained(saved_vector_tagger).eval()
    assert model.config.num_word_vectors == len(VECTOR_WORDS)
    encoded = tokenizer(["KAZAKHSTAN visited Paris ."], return_tensors="pt")
    reloaded = AutoModelForTokenClassification.from_pretrained(saved_vector_tagger).eval()
    torch.testing.assert_close(reloaded(**encoded).logits, model(**encoded).logits, atol=0, rtol=0)
    assert model.birnn.embeddings.word_vectors.vectors[:-1].abs().sum() > 0


def test_pipeline_groups_words_with_their_offsets(saved_vector_tagger):
    tagger = pipeline("token-classification", model=str(saved_vector_tagger), aggregation_strategy="simple")
    sentence = "Anna lives in Paris."
    entities = tagger(sentence)
    assert [(entity["entity_group"], entity["word"]) for entity in entities] == [("PER", "Anna"), ("LOC", "Paris")]
    for entity in entities:
        assert sentence[entity["start"] : entity["end"]] == entity["word"]
    assert tagger("") == []


def test_onnx_runtime_and_int8_serve_a_vector_model(saved_vector_tagger, tokenizer_and_learned):
    pytest.importorskip("onnxruntime")
    from hf_birnn.serving import OnnxRuntimeModel, quantize_for_cpu

    tokenizer, _ = tokenizer_and_learned
    model = AutoModelForTokenClassification.from_pretrained(saved_vector_tagger).eval()
    texts = ["KAZAKHSTAN visited Paris .", "Anna lives in London in 1996 ."]
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    eager = model(**encoded).logits
    torch.testing.assert_close(OnnxRuntimeModel.from_model(model)(**encoded).logits, eager, atol=ATOL, rtol=0)
    for served in (quantize_for_cpu(model), quantize_for_cpu(model, backend="onnxruntime")):
        assert torch.equal(served(**encoded).logits.argmax(-1), eager.argmax(-1))


def test_a_vector_model_loads_with_remote_code_where_hf_birnn_is_absent(saved_vector_tagger, tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["hf_birnn"] = None
        from transformers import pipeline
        tagger = pipeline("token-classification", model={str(saved_vector_tagger)!r}, trust_remote_code=True,
                          aggregation_strategy="simple")
        assert type(tagger.model).__module__.startswith("transformers_modules"), type(tagger.model).__module__
        print([entity["word"] for entity in tagger("Anna lives in Paris.")])
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'Anna'" in result.stdout and "'Paris'" in result.stdout
