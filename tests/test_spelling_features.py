"""Spelling features (a character CNN over each token's text, `character_filters` > 0) and the embedding init."""

import pytest
import torch

from hf_birnn import BiRNNConfig, BiRNNForTokenClassification, BiRNNModel
from hf_birnn.modeling_birnn import TokenSpellingEncoder
from hf_birnn.tokenization import train_wordpiece_tokenizer
from hf_birnn.training import fresh_model

TEXTS = ["Angela Merkel visited Washington on 12 May .", "Bundesliga side Schalke 04 beat Bayern 2-1 ."] * 4
ATOL = 1e-5


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece_tokenizer(TEXTS, vocab_size=120)


def spelling_config(vocab_size: int, **overrides) -> BiRNNConfig:
    settings = dict(
        vocab_size=vocab_size,
        embedding_size=8,
        hidden_size=12,
        backward_hidden_size=6,
        character_filters=5,
        character_embedding_size=4,
        max_token_characters=6,
        num_labels=3,
    )
    return BiRNNConfig(**{**settings, **overrides})


def spelt_tagger(tokenizer, **overrides) -> BiRNNForTokenClassification:
    model = BiRNNForTokenClassification(spelling_config(len(tokenizer), **overrides))
    model.set_token_spellings(tokenizer)
    return model


def test_spell_marks_word_starts_and_continuations_and_cuts_to_length():
    start, continuation = TokenSpellingEncoder.WORD_START, TokenSpellingEncoder.CONTINUATION
    assert TokenSpellingEncoder.spell("Ab", 5) == [start, ord("A") + 1, ord("b") + 1, 0, 0]
    assert TokenSpellingEncoder.spell("##ab", 3) == [continuation, ord("a") + 1, ord("b") + 1]
    assert TokenSpellingEncoder.spell("Schalke", 4) == [start, ord("S") + 1, ord("c") + 1, ord("h") + 1]
    assert TokenSpellingEncoder.spell("é", 4) == [start, 0xC3 + 1, 0xA9 + 1, 0]  # UTF-8 bytes


def test_set_token_spellings_reads_every_token_and_leaves_special_tokens_empty(tokenizer):
    model = spelt_tagger(tokenizer)
    table = model.birnn.embeddings.token_spelling.token_spellings
    for token_id, token in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        if token_id in tokenizer.all_special_ids:
            assert not table[token_id].any()
        else:
            assert table[token_id].tolist() == TokenSpellingEncoder.spell(token, model.config.max_token_characters)


def test_first_layer_reads_embedding_and_spelling_features(tokenizer):
    model = spelt_tagger(tokenizer).eval()
    config = model.config
    assert config.token_embedding_size == config.embedding_size + config.character_filters
    assert model.birnn.layers[0].forward_rnn.input_size == config.token_embedding_size
    encoded = tokenizer(TEXTS[:2], padding=True, return_tensors="pt")
    outputs = model.birnn(**encoded, output_hidden_states=True)
    assert outputs.hidden_states[0].shape[-1] == config.token_embedding_size
    ids = encoded["input_ids"]
    expected_spelling = model.birnn.embeddings.token_spelling(ids) * encoded["attention_mask"][..., None]
    torch.testing.assert_close(outputs.hidden_states[0][..., config.embedding_size :], expected_spelling)


def test_tokens_spelt_alike_get_the_same_spelling_features(tokenizer):
    """The features depend on the token's text only: two ids given the same spelling are indistinguishable."""
    model = spelt_tagger(tokenizer).eval()
    encoder = model.birnn.embeddings.token_spelling
    encoder.token_spellings[11] = encoder.token_spellings[10]
    features = encoder(torch.tensor([[10, 11, 12]]))
    torch.testing.assert_close(features[0, 0], features[0, 1])
    assert not torch.allclose(features[0, 0], features[0, 2])


@pytest.mark.parametrize("side", ["right", "left"])
def test_outputs_with_spelling_features_do_not_depend_on_padding(tokenizer, side):
    model = spelt_tagger(tokenizer).eval()
    rows = [torch.tensor(tokenizer(text)["input_ids"]) for text in (*TEXTS[:2], "")]
    seq_len = max(len(row) for row in rows) + 2
    input_ids = torch.zeros(len(rows), seq_len, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for i, row in enumerate(rows):
        span = slice(0, len(row)) if side == "right" else slice(seq_len - len(row), seq_len)
        input_ids[i, span], attention_mask[i, span] = row, 1
    batched = model(input_ids, attention_mask=attention_mask).logits
    for i, row in enumerate(rows[:2]):
        alone = model(row[None]).logits[0]
        torch.testing.assert_close(batched[i, attention_mask[i].bool()], alone, atol=ATOL, rtol=0)


def test_word_dropout_keeps_the_spelling_features(tokenizer):
    """A dropped word is still spelt out, so the model learns to tag rare words from their spelling."""
    model = spelt_tagger(tokenizer, word_dropout=0.999, embedding_dropout=0.0).train()
    encoded = tokenizer(TEXTS[:1], return_tensors="pt")
    first_layer_input = model.birnn(**encoded, output_hidden_states=True).hidden_states[0]
    assert not first_layer_input[..., : model.config.embedding_size].any()
    assert first_layer_input[..., model.config.embedding_size :].abs().sum() > 0


def test_gradients_reach_the_character_cnn(tokenizer):
    model = spelt_tagger(tokenizer).train()
    encoded = tokenizer(TEXTS[:2], padding=True, return_tensors="pt")
    model(**encoded, labels=torch.ones_like(encoded["input_ids"])).loss.backward()
    encoder = model.birnn.embeddings.token_spelling
    for parameter in (encoder.byte_embeddings.weight, encoder.convolution.weight, encoder.convolution.bias):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0


def test_spellings_are_saved_with_the_weights(tmp_path, tokenizer):
    model = spelt_tagger(tokenizer).eval()
    model.save_pretrained(tmp_path)
    loaded = BiRNNForTokenClassification.from_pretrained(tmp_path).eval()
    loaded_table = loaded.birnn.embeddings.token_spelling.token_spellings
    assert torch.equal(loaded_table, model.birnn.embeddings.token_spelling.token_spellings)
    encoded = tokenizer(TEXTS[:2], padding=True, return_tensors="pt")
    torch.testing.assert_close(loaded(**encoded).logits, model(**encoded).logits)


def test_fresh_model_fills_the_spellings_from_the_tokenizer(tokenizer):
    model = fresh_model(BiRNNModel, tokenizer, None, "character_filters=4,hidden_size=8,embedding_size=8")
    assert model.config.vocab_size == len(tokenizer)
    assert model.embeddings.token_spelling.token_spellings.any()


def test_training_without_spellings_is_refused_with_the_fix(tokenizer):
    model = BiRNNForTokenClassification(spelling_config(len(tokenizer))).train()
    with pytest.raises(ValueError, match="set_token_spellings"):
        model(**tokenizer(TEXTS[:1], return_tensors="pt"))


def test_spelling_errors_name_the_problem(tokenizer):
    with pytest.raises(ValueError, match="pass `input_ids`, not `inputs_embeds`"):
        spelt_tagger(tokenizer)(inputs_embeds=torch.zeros(1, 3, 8))
    with pytest.raises(ValueError, match="tokenizer has .* tokens but the model's vocab_size is 10"):
        BiRNNModel(spelling_config(10)).set_token_spellings(tokenizer)
    with pytest.raises(ValueError, match="no spelling features"):
        BiRNNModel(spelling_config(len(tokenizer), character_filters=0)).set_token_spellings(tokenizer)
    with pytest.raises(ValueError, match="`character_filters` must be 0 \\(off\\) or a positive count"):
        spelling_config(10, character_filters=-1)


def test_embedding_initializer_range_sets_the_embedding_std_and_keeps_padding_zero():
    wide = BiRNNModel(BiRNNConfig(vocab_size=2000, embedding_size=64, embedding_initializer_range=1.0))
    default = BiRNNModel(BiRNNConfig(vocab_size=2000, embedding_size=64))
    assert abs(wide.embeddings.word_embeddings.weight[1:].std().item() - 1.0) < 0.02
    assert abs(default.embeddings.word_embeddings.weight[1:].std().item() - 0.02) < 0.001
    assert not wide.embeddings.word_embeddings.weight[0].any()
    with pytest.raises(ValueError, match="`embedding_initializer_range` must be a positive standard deviation"):
        BiRNNConfig(embedding_initializer_range=0.0)
