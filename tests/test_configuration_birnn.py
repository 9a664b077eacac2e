import pytest

from hf_birnn import BiRNNConfig


def test_backward_hidden_size_defaults_to_hidden_size():
    config = BiRNNConfig(hidden_size=64)
    assert config.backward_hidden_size == 64
    assert config.output_size == 128


def test_asymmetric_directions_and_unidirectional_output_size():
    assert BiRNNConfig(hidden_size=64, backward_hidden_size=16).output_size == 80
    assert BiRNNConfig(hidden_size=64, backward_hidden_size=16, bidirectional=False).output_size == 64


def test_round_trip_through_a_dict():
    config = BiRNNConfig(hidden_size=10, cell_type="gru", id2label={0: "O", 1: "B-PER"})
    reloaded = BiRNNConfig.from_dict(config.to_dict())
    assert reloaded.cell_type == "gru" and reloaded.hidden_size == 10
    assert reloaded.id2label == {0: "O", 1: "B-PER"} and reloaded.num_labels == 2


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("cell_type", "transformer", "`cell_type` must be one of \\('rnn', 'gru', 'lstm'\\)"),
        ("nonlinearity", "sigmoid", "`nonlinearity` must be one of \\('tanh', 'relu'\\)"),
        ("hidden_size", 0, "`hidden_size` must be a positive integer"),
        ("backward_hidden_size", -3, "`backward_hidden_size` must be a positive integer"),
        ("num_hidden_layers", 0, "`num_hidden_layers` must be a positive integer"),
        ("vocab_size", -1, "`vocab_size` must be a positive integer"),
        ("hidden_dropout", 1.5, "`hidden_dropout` must be a probability"),
        ("pad_token_id", 40000, "`pad_token_id` must be None or in \\[0, vocab_size=30000\\)"),
    ],
)
def test_invalid_values_raise_value_error_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        BiRNNConfig(**{field: value})
