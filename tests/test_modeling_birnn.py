"""Model tests in the style of transformers' `tests/models/*/test_modeling_*.py`: a tester builds a tiny config and
inputs, and each test checks one behaviour."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from hf_birnn import (
    BiRNNConfig,
    BiRNNForMaskedLM,
    BiRNNForSequenceClassification,
    BiRNNForTokenClassification,
    BiRNNModel,
    modeling_birnn,
)
from hf_birnn.modeling_birnn import length_groups
from hf_birnn.testing_utils import WITHOUT_HF_BIRNN, pad_batch

ALL_MODEL_CLASSES = (BiRNNModel, BiRNNForTokenClassification, BiRNNForMaskedLM, BiRNNForSequenceClassification)
CELL_TYPES = ("rnn", "gru", "lstm")
ATOL = 1e-5


class BiRNNModelTester:
    def __init__(
        self,
        batch_size: int = 13,
        seq_length: int = 7,
        vocab_size: int = 99,
        embedding_size: int = 16,
        hidden_size: int = 32,
        backward_hidden_size: int = 24,
        num_hidden_layers: int = 2,
        num_labels: int = 5,
        cell_type: str = "lstm",
        nonlinearity: str = "tanh",
        seed: int = 0,
    ):
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size
        self.hidden_size = hidden_size
        self.backward_hidden_size = backward_hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_labels = num_labels
        self.cell_type = cell_type
        self.nonlinearity = nonlinearity
        self.generator = torch.Generator().manual_seed(seed)

    def get_config(self, **overrides) -> BiRNNConfig:
        settings = dict(
            vocab_size=self.vocab_size,
            embedding_size=self.embedding_size,
            hidden_size=self.hidden_size,
            backward_hidden_size=self.backward_hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            cell_type=self.cell_type,
            nonlinearity=self.nonlinearity,
            num_labels=self.num_labels,
        )
        return BiRNNConfig(**{**settings, **overrides})

    def random_ids(self, *shape: int, low: int = 1) -> torch.Tensor:
        return torch.randint(low, self.vocab_size, shape, generator=self.generator)

    def prepare_config_and_inputs(self) -> tuple[BiRNNConfig, dict[str, torch.Tensor]]:
        """Right-padded rows of varying length, one of them empty."""
        input_ids = self.random_ids(self.batch_size, self.seq_length)
        lengths = torch.randint(1, self.seq_length + 1, (self.batch_size,), generator=self.generator)
        lengths[0], lengths[1] = self.seq_length, 0
        attention_mask = (torch.arange(self.seq_length) < lengths[:, None]).long()
        input_ids = input_ids.masked_fill(attention_mask == 0, 0)
        labels = torch.randint(0, self.num_labels, (self.batch_size, self.seq_length), generator=self.generator)
        labels = labels.masked_fill(attention_mask == 0, -100)
        return self.get_config(), {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    def create_and_check_model(self, config, inputs) -> None:
        model = BiRNNModel(config).eval()
        outputs = model(inputs["input_ids"], attention_mask=inputs["attention_mask"], output_hidden_states=True)
        assert outputs.last_hidden_state.shape == (self.batch_size, self.seq_length, config.output_size)
        assert outputs.pooler_output.shape == (self.batch_size, config.output_size)
        assert len(outputs.hidden_states) == config.num_hidden_layers + 1
        assert outputs.hidden_states[0].shape[-1] == config.embedding_size
        torch.testing.assert_close(outputs.hidden_states[-1], outputs.last_hidden_state)

    def create_and_check_token_classification(self, config, inputs) -> None:
        model = BiRNNForTokenClassification(config).eval()
        outputs = model(**inputs)
        assert outputs.logits.shape == (self.batch_size, self.seq_length, self.num_labels)
        valid = inputs["labels"] != -100
        expected = nn.functional.cross_entropy(outputs.logits[valid], inputs["labels"][valid])
        torch.testing.assert_close(outputs.loss, expected, atol=ATOL, rtol=0)

    def create_and_check_masked_lm(self, config, inputs) -> None:
        model = BiRNNForMaskedLM(config).eval()
        labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
        outputs = model(inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=labels)
        assert outputs.logits.shape == (self.batch_size, self.seq_length, self.vocab_size)
        assert outputs.loss.ndim == 0 and torch.isfinite(outputs.loss)

    def create_and_check_sequence_classification(self, config, inputs) -> None:
        model = BiRNNForSequenceClassification(config).eval()
        labels = torch.randint(0, self.num_labels, (self.batch_size,), generator=self.generator)
        outputs = model(inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=labels)
        assert outputs.logits.shape == (self.batch_size, self.num_labels)
        torch.testing.assert_close(outputs.loss, nn.functional.cross_entropy(outputs.logits, labels))


@pytest.fixture
def tester() -> BiRNNModelTester:
    return BiRNNModelTester()


# --------------------------------------------------------------------------------------------------------------------
# Shapes and heads
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell_type", CELL_TYPES)
def test_model_shapes(cell_type):
    tester = BiRNNModelTester(cell_type=cell_type)
    tester.create_and_check_model(*tester.prepare_config_and_inputs())


def test_token_classification_loss_ignores_minus_100(tester):
    tester.create_and_check_token_classification(*tester.prepare_config_and_inputs())


def test_masked_lm(tester):
    tester.create_and_check_masked_lm(*tester.prepare_config_and_inputs())


def test_sequence_classification(tester):
    tester.create_and_check_sequence_classification(*tester.prepare_config_and_inputs())


def test_unidirectional_config_uses_forward_states_only(tester):
    config = tester.get_config(bidirectional=False)
    model = BiRNNModel(config).eval()
    outputs = model(tester.random_ids(3, 5))
    assert config.output_size == tester.hidden_size
    assert outputs.last_hidden_state.shape == (3, 5, tester.hidden_size)


def test_masked_lm_decoder_is_tied_to_embeddings(tester):
    model = BiRNNForMaskedLM(tester.get_config())
    assert model.lm_head.decoder.weight is model.birnn.embeddings.word_embeddings.weight
    assert isinstance(model.lm_head.projection, nn.Linear)  # output_size 56 != embedding_size 16
    same_width = BiRNNForMaskedLM(tester.get_config(hidden_size=8, backward_hidden_size=8))
    assert isinstance(same_width.lm_head.projection, nn.Identity)


def test_return_dict_false_gives_tuples(tester):
    config, inputs = tester.prepare_config_and_inputs()
    model = BiRNNForTokenClassification(config).eval()
    loss, logits = model(**inputs, return_dict=False)
    torch.testing.assert_close(logits, model(**inputs).logits)


def test_token_type_ids_are_accepted_and_ignored(tester):
    config, inputs = tester.prepare_config_and_inputs()
    model = BiRNNForTokenClassification(config).eval()
    with_types = model(**inputs, token_type_ids=torch.ones_like(inputs["input_ids"])).logits
    torch.testing.assert_close(with_types, model(**inputs).logits)


def test_inputs_embeds_match_input_ids(tester):
    config, inputs = tester.prepare_config_and_inputs()
    model = BiRNNModel(config).eval()
    embeds = model.embeddings(inputs["input_ids"])
    from_embeds = model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"]).last_hidden_state
    from_ids = model(inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
    torch.testing.assert_close(from_embeds, from_ids)


@pytest.mark.parametrize("model_class", ALL_MODEL_CLASSES[1:])
@pytest.mark.parametrize("cell_type", CELL_TYPES)
def test_gradients_reach_every_parameter(model_class, cell_type):
    tester = BiRNNModelTester(cell_type=cell_type)
    config, inputs = tester.prepare_config_and_inputs()
    model = model_class(config).train()
    if model_class is BiRNNForSequenceClassification:
        inputs["labels"] = torch.randint(0, tester.num_labels, (tester.batch_size,))
    elif model_class is BiRNNForMaskedLM:
        inputs["labels"] = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    model(**inputs).loss.backward()
    no_gradient = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_gradient == []


def test_num_items_in_batch_gives_mean_over_valid_labels(tester):
    """Under gradient accumulation Trainer passes the count of labelled tokens; the sum over it is the mean."""
    config, inputs = tester.prepare_config_and_inputs()
    model = BiRNNForTokenClassification(config).eval()
    num_items = (inputs["labels"] != -100).sum()
    torch.testing.assert_close(model(**inputs, num_items_in_batch=num_items).loss, model(**inputs).loss)
    halves = [{k: v[i : i + 7] for k, v in inputs.items()} for i in (0, 7)]
    accumulated = sum(model(**half, num_items_in_batch=num_items).loss for half in halves)
    torch.testing.assert_close(accumulated, model(**inputs).loss)


# --------------------------------------------------------------------------------------------------------------------
# The seed's equations, as explicit loops over t
# --------------------------------------------------------------------------------------------------------------------


def reference_direction(inputs: torch.Tensor, rnn: nn.RNN, phi, reverse: bool) -> torch.Tensor:
    """H_t = φ(X_t W_xh + H_{t∓1} W_hh + b_h) with the model's own weights, one step at a time."""
    w_xh, w_hh = rnn.weight_ih_l0.T, rnn.weight_hh_l0.T
    b_h = rnn.bias_ih_l0 + rnn.bias_hh_l0
    state = torch.zeros(inputs.size(0), rnn.hidden_size)
    states = [None] * inputs.size(1)
    steps = range(inputs.size(1) - 1, -1, -1) if reverse else range(inputs.size(1))
    for t in steps:
        state = phi(inputs[:, t] @ w_xh + state @ w_hh + b_h)
        states[t] = state
    return torch.stack(states, dim=1)


@pytest.mark.parametrize("nonlinearity,phi", [("tanh", torch.tanh), ("relu", torch.relu)])
def test_plain_rnn_matches_the_seed_equations(nonlinearity, phi):
    tester = BiRNNModelTester(cell_type="rnn", nonlinearity=nonlinearity, hidden_size=6, backward_hidden_size=4)
    model = BiRNNModel(tester.get_config()).eval()
    input_ids = tester.random_ids(3, 5)

    layer_inputs = model.embeddings(input_ids)
    for layer in model.layers:
        forward_states = reference_direction(layer_inputs, layer.forward_rnn, phi, reverse=False)
        backward_states = reference_direction(layer_inputs, layer.backward_rnn, phi, reverse=True)
        layer_inputs = torch.cat([forward_states, backward_states], dim=-1)

    outputs = model(input_ids)
    torch.testing.assert_close(outputs.last_hidden_state, layer_inputs, atol=ATOL, rtol=0)
    expected_pooled = torch.cat([forward_states[:, -1], backward_states[:, 0]], dim=-1)
    torch.testing.assert_close(outputs.pooler_output, expected_pooled, atol=ATOL, rtol=0)


def test_token_classification_output_layer_is_affine_in_h(tester):
    config, inputs = tester.prepare_config_and_inputs()
    model = BiRNNForTokenClassification(config).eval()
    hidden = model.birnn(inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
    expected = hidden @ model.classifier.weight.T + model.classifier.bias
    torch.testing.assert_close(model(**inputs).logits, expected, atol=ATOL, rtol=0)


# --------------------------------------------------------------------------------------------------------------------
# Padding invariance
# --------------------------------------------------------------------------------------------------------------------




# a batch of mixed lengths that `length_groups` runs in groups of similar length, and one too small to group
ROW_LENGTHS = {
    "one group": (4, 9, 1, 0, 6),
    "length groups": (11, 1, 0, 2, 3, 10, 1, 2, 0, 1, 9, 2, 1, 3, 2, 1, 11, 0, 1, 2),
}


@pytest.mark.parametrize("batch", sorted(ROW_LENGTHS))
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("cell_type", CELL_TYPES)
def test_outputs_do_not_depend_on_padding_or_batch_mates(cell_type, side, batch):
    tester = BiRNNModelTester(cell_type=cell_type, hidden_size=12, backward_hidden_size=5)
    model = BiRNNForTokenClassification(tester.get_config()).eval()
    rows = [tester.random_ids(length) for length in ROW_LENGTHS[batch]]
    input_ids, attention_mask = pad_batch(rows, side, seq_len=12)
    assert (length_groups(attention_mask.sum(dim=1)) is not None) == (batch == "length groups")

    batched = model.birnn(input_ids, attention_mask=attention_mask, output_hidden_states=True)
    batched_logits = model(input_ids, attention_mask=attention_mask).logits
    for i, row in enumerate(rows):
        real = attention_mask[i].bool()
        if len(row) == 0:
            assert torch.equal(batched.last_hidden_state[i], torch.zeros_like(batched.last_hidden_state[i]))
            assert torch.equal(batched.pooler_output[i], torch.zeros_like(batched.pooler_output[i]))
            continue
        alone = model.birnn(row[None], output_hidden_states=True)
        torch.testing.assert_close(batched.last_hidden_state[i, real], alone.last_hidden_state[0], atol=ATOL, rtol=0)
        torch.testing.assert_close(batched.pooler_output[i], alone.pooler_output[0], atol=ATOL, rtol=0)
        for batched_layer, alone_layer in zip(batched.hidden_states, alone.hidden_states, strict=True):
            torch.testing.assert_close(batched_layer[i, real], alone_layer[0], atol=ATOL, rtol=0)
        torch.testing.assert_close(batched_logits[i, real], model(row[None]).logits[0], atol=ATOL, rtol=0)
        assert torch.equal(batched.last_hidden_state[i, ~real], torch.zeros_like(batched.last_hidden_state[i, ~real]))


def test_length_groups_give_the_gradients_of_one_padded_batch(monkeypatch):
    tester = BiRNNModelTester(cell_type="gru")
    no_dropout = dict(embedding_dropout=0.0, hidden_dropout=0.0, classifier_dropout=0.0)
    model = BiRNNForTokenClassification(tester.get_config(use_crf=True, **no_dropout)).train()
    rows = [tester.random_ids(length) for length in ROW_LENGTHS["length groups"]]
    input_ids, attention_mask = pad_batch(rows, "right", seq_len=12)
    labels = torch.randint(0, tester.num_labels, input_ids.shape, generator=tester.generator)
    labels = labels.masked_fill(attention_mask == 0, -100)

    def loss_and_gradients() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        loss = model(input_ids, attention_mask=attention_mask, labels=labels).loss
        loss.backward()
        return loss.detach(), [parameter.grad.clone() for parameter in model.parameters()]

    grouped_loss, grouped_gradients = loss_and_gradients()
    monkeypatch.setattr(modeling_birnn, "GROUP_OVERHEAD", 1e9)  # a group costs more than any padding: one group
    assert length_groups(attention_mask.sum(dim=1)) is None
    loss, gradients = loss_and_gradients()
    torch.testing.assert_close(grouped_loss, loss, atol=ATOL, rtol=0)
    for grouped_gradient, gradient in zip(grouped_gradients, gradients, strict=True):
        torch.testing.assert_close(grouped_gradient, gradient, atol=ATOL, rtol=0)


@pytest.mark.parametrize("batch", sorted(ROW_LENGTHS))
def test_hidden_states_are_the_live_activations_every_layer_reads(batch):
    """Each of `hidden_states` is the tensor the next layer reads, so a gradient reaches every one of them."""
    tester = BiRNNModelTester(num_hidden_layers=3)
    model = BiRNNModel(tester.get_config(embedding_dropout=0.0, hidden_dropout=0.0)).train()
    rows = [tester.random_ids(length) for length in ROW_LENGTHS[batch]]
    input_ids, attention_mask = pad_batch(rows, "left", seq_len=12)
    outputs = model(input_ids, attention_mask=attention_mask, output_hidden_states=True)
    for states in outputs.hidden_states:
        states.retain_grad()
    outputs.last_hidden_state.sum().backward()
    padding = attention_mask == 0
    for layer_idx, states in enumerate(outputs.hidden_states):
        assert states.grad is not None and states.grad[~padding].abs().sum() > 0, layer_idx
        assert not states[padding].any(), layer_idx  # zeros at the padding, in batch order
    assert outputs.hidden_states[-1] is outputs.last_hidden_state


@pytest.mark.parametrize("model_class", [BiRNNForTokenClassification, BiRNNForSequenceClassification])
def test_gradient_checkpointing_gives_the_same_gradients(model_class):
    tester = BiRNNModelTester()
    config, inputs = tester.prepare_config_and_inputs()
    if model_class is BiRNNForSequenceClassification:
        inputs["labels"] = torch.randint(0, tester.num_labels, (tester.batch_size,), generator=tester.generator)
    model = model_class(config).train()

    def gradients() -> dict[str, torch.Tensor]:
        model.zero_grad()
        torch.manual_seed(0)  # the same dropout masks in both runs
        model(**inputs).loss.backward()
        return {name: parameter.grad.clone() for name, parameter in model.named_parameters()}

    plain = gradients()
    model.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.birnn.layers)
    checkpointed = gradients()
    for name, gradient in plain.items():
        torch.testing.assert_close(checkpointed[name], gradient, atol=ATOL, rtol=0, msg=name)


def test_padding_on_both_sides_is_handled(tester):
    model = BiRNNModel(tester.get_config()).eval()
    row = tester.random_ids(4)
    input_ids = torch.zeros(1, 8, dtype=torch.long)
    input_ids[0, 2:6] = row
    attention_mask = (input_ids != 0).long()
    outputs = model(input_ids, attention_mask=attention_mask)
    torch.testing.assert_close(
        outputs.last_hidden_state[0, 2:6], model(row[None]).last_hidden_state[0], atol=ATOL, rtol=0
    )


def test_all_padding_batch_gives_zeros_not_nan(tester):
    model = BiRNNForSequenceClassification(tester.get_config()).eval()
    outputs = model.birnn(torch.zeros(2, 4, dtype=torch.long), attention_mask=torch.zeros(2, 4, dtype=torch.long))
    assert torch.equal(outputs.last_hidden_state, torch.zeros_like(outputs.last_hidden_state))
    assert torch.equal(outputs.pooler_output, torch.zeros_like(outputs.pooler_output))


def test_pooled_output_uses_each_rows_own_last_and_first_token(tester):
    model = BiRNNModel(tester.get_config()).eval()
    rows = [tester.random_ids(length) for length in (3, 7)]
    for side in ("right", "left"):
        input_ids, attention_mask = pad_batch(rows, side, seq_len=7)
        outputs = model(input_ids, attention_mask=attention_mask)
        for i, row in enumerate(rows):
            alone = model(row[None]).last_hidden_state[0]
            expected = torch.cat([alone[-1, : tester.hidden_size], alone[0, tester.hidden_size :]])
            torch.testing.assert_close(outputs.pooler_output[i], expected, atol=ATOL, rtol=0)


# --------------------------------------------------------------------------------------------------------------------
# Bad inputs get clear errors
# --------------------------------------------------------------------------------------------------------------------


def test_mask_with_holes_is_rejected(tester):
    model = BiRNNModel(tester.get_config())
    with pytest.raises(ValueError, match="contiguous span"):
        model(tester.random_ids(2, 4), attention_mask=torch.tensor([[1, 0, 1, 1], [1, 1, 1, 1]]))


@pytest.mark.parametrize("bad_id", [99, 1000, -1])
def test_ids_outside_the_vocabulary_are_rejected(tester, bad_id):
    model = BiRNNModel(tester.get_config())
    input_ids = tester.random_ids(2, 4)
    input_ids[1, 2] = bad_id
    with pytest.raises(ValueError, match="vocab_size=99"):
        model(input_ids)


@pytest.mark.parametrize(
    "make_inputs,message",
    [
        (lambda t: {"input_ids": t.random_ids(2, 3, 4)}, "shape \\(batch, seq_len\\)"),
        (lambda t: {"inputs_embeds": torch.zeros(2, 3, 7)}, "embedding_size=16"),
        (lambda t: {}, "exactly one of"),
        (lambda t: {"input_ids": t.random_ids(2, 3), "inputs_embeds": torch.zeros(2, 3, 16)}, "exactly one of"),
        (lambda t: {"input_ids": t.random_ids(2, 3), "attention_mask": torch.ones(2, 4)}, "attention_mask"),
    ],
)
def test_malformed_inputs_are_named(tester, make_inputs, message):
    model = BiRNNModel(tester.get_config())
    with pytest.raises(ValueError, match=message):
        model(**make_inputs(tester))


def test_labels_of_the_wrong_shape_are_rejected(tester):
    model = BiRNNForTokenClassification(tester.get_config())
    with pytest.raises(ValueError, match="`labels` must have shape"):
        model(tester.random_ids(2, 4), labels=torch.zeros(2, 5, dtype=torch.long))


# --------------------------------------------------------------------------------------------------------------------
# Saving, loading, Auto classes
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_class", ALL_MODEL_CLASSES)
def test_save_and_load_round_trip_is_exact(tmp_path, tester, model_class):
    config, inputs = tester.prepare_config_and_inputs()
    model = model_class(config).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert (tmp_path / "modeling_birnn.py").exists() and (tmp_path / "configuration_birnn.py").exists()
    reloaded = model_class.from_pretrained(tmp_path).eval()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reloaded.state_dict()[name]), name
    model_inputs = {k: inputs[k] for k in ("input_ids", "attention_mask")}
    torch.testing.assert_close(reloaded(**model_inputs)[0], model(**model_inputs)[0], atol=0, rtol=0)


def test_saved_config_names_the_auto_classes(tmp_path, tester):
    BiRNNForTokenClassification(tester.get_config()).save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoConfig"] == "configuration_birnn.BiRNNConfig"
    assert auto_map["AutoModelForTokenClassification"] == "modeling_birnn.BiRNNForTokenClassification"


@pytest.mark.parametrize(
    "auto_class,model_class",
    [
        (AutoModel, BiRNNModel),
        (AutoModelForTokenClassification, BiRNNForTokenClassification),
        (AutoModelForMaskedLM, BiRNNForMaskedLM),
        (AutoModelForSequenceClassification, BiRNNForSequenceClassification),
    ],
)
def test_auto_classes_resolve_from_a_config(tester, auto_class, model_class):
    config = AutoConfig.for_model("birnn", vocab_size=50, hidden_size=8, embedding_size=8)
    assert isinstance(config, BiRNNConfig)
    assert type(auto_class.from_config(config)) is model_class


def test_loads_with_remote_code_where_hf_birnn_is_not_importable(tmp_path, tester):
    config, inputs = tester.prepare_config_and_inputs()
    model = BiRNNForTokenClassification(config).eval()
    model.save_pretrained(tmp_path / "tagger")
    torch.save({k: inputs[k] for k in ("input_ids", "attention_mask")}, tmp_path / "inputs.pt")
    torch.save(
        model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits, tmp_path / "logits.pt"
    )

    script = WITHOUT_HF_BIRNN + textwrap.dedent(
        f"""
        import torch
        from transformers import AutoModelForTokenClassification
        model = AutoModelForTokenClassification.from_pretrained({str(tmp_path / "tagger")!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        inputs = torch.load({str(tmp_path / "inputs.pt")!r})
        logits = model.eval()(**inputs).logits
        torch.testing.assert_close(logits, torch.load({str(tmp_path / "logits.pt")!r}), atol=0, rtol=0)
        print("remote code OK")
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "remote code OK" in result.stdout


def test_checkpoint_folder_contains_no_pickle(tmp_path, tester):
    BiRNNForMaskedLM(tester.get_config()).save_pretrained(tmp_path)
    suffixes = {path.suffix for path in Path(tmp_path).iterdir()}
    assert ".bin" not in suffixes and ".pt" not in suffixes and ".safetensors" in suffixes


def test_word_dropout_drops_whole_embeddings_in_training_only(tester):
    model = BiRNNModel(tester.get_config(word_dropout=0.5))
    embeddings = torch.ones(4, 50, tester.embedding_size)
    dropped = model.embeddings.word_dropout.train()(embeddings)
    kept_per_token = dropped.sum(-1)
    assert set(kept_per_token.unique().tolist()) == {0.0, float(tester.embedding_size)}
    assert 0.3 < (kept_per_token == 0).float().mean() < 0.7
    assert torch.equal(model.embeddings.word_dropout.eval()(embeddings), embeddings)
