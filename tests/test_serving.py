"""CPU serving paths against eager fp32: `quantize_for_cpu` (both backends), `export_onnx` and `OnnxRuntimeModel`
give the same labels on padded batches (left, right and both sides) and serve the pipeline. Nothing here is timed
(`scripts/benchmarks/run.py` measures speed)."""

from pathlib import Path

import pytest
import torch
from transformers import pipeline

from hf_birnn import BiRNNConfig, BiRNNForSequenceClassification, BiRNNForTokenClassification, BiRNNModel
from hf_birnn.modeling_birnn import length_groups
from hf_birnn.serving import OnnxRuntimeModel, export_onnx, quantize_for_cpu
from hf_birnn.tokenization import train_wordpiece_tokenizer

CELL_TYPES = ("rnn", "gru", "lstm")
NUM_LABELS = 5
ID2LABEL = dict(enumerate(["O", "B-X", "I-X", "B-Y", "I-Y"]))
ATOL = 1e-5
SENTENCES = [
    "the cat sat on the mat",
    "a dog ran in the park today",
    "birds sing in the early morning light",
    "the quick brown fox jumps over the lazy dog",
]


def tiny_config(vocab_size: int = 99, cell_type: str = "lstm", **overrides) -> BiRNNConfig:
    fields = dict(
        vocab_size=vocab_size,
        embedding_size=16,
        hidden_size=32,
        backward_hidden_size=24,
        num_hidden_layers=2,
        num_labels=NUM_LABELS,
        cell_type=cell_type,
    )
    return BiRNNConfig(**(fields | overrides))


def trained_tagger(config: BiRNNConfig, steps: int = 80) -> BiRNNForTokenClassification:
    """A tagger trained to label each token `id % NUM_LABELS`: a random model's near-ties would let int8 rounding
    flip labels, a trained one decides with margins, as a real tagger does."""
    torch.manual_seed(0)
    model = BiRNNForTokenClassification(config)
    if config.character_filters > 0:  # made-up spellings: a byte string per token id
        spellings = model.birnn.embeddings.token_spelling.token_spellings
        spellings.copy_(torch.randint(1, 257, spellings.shape))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        input_ids, attention_mask = padded_batch(config.vocab_size, seq_len=12)
        labels = (input_ids % NUM_LABELS).masked_fill(attention_mask == 0, -100)
        optimizer.zero_grad()
        model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss.backward()
        optimizer.step()
    return model.eval()


def padded_batch(vocab_size: int, seq_len: int = 9, generator: torch.Generator | None = None):
    """Eight rows: full, right-padded, left-padded and padded on both sides (two of each)."""
    input_ids = torch.randint(1, vocab_size, (8, seq_len), generator=generator)
    attention_mask = torch.ones(8, seq_len, dtype=torch.long)
    attention_mask[2:4, seq_len - 3 :] = 0
    attention_mask[4:6, :2] = 0
    attention_mask[6:8, :2] = 0
    attention_mask[6:8, seq_len - 2 :] = 0
    return input_ids * attention_mask, attention_mask


def real_labels(logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    return logits.argmax(-1)[attention_mask.bool()]


@pytest.fixture(scope="module", params=CELL_TYPES)
def tagger(request) -> BiRNNForTokenClassification:
    return trained_tagger(tiny_config(cell_type=request.param))


def test_quantized_model_gives_the_eager_labels_on_padded_rows(tagger):
    quantized = quantize_for_cpu(tagger)
    input_ids, attention_mask = padded_batch(tagger.config.vocab_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        eager = tagger(input_ids=input_ids, attention_mask=attention_mask).logits
        int8 = quantized(input_ids=input_ids, attention_mask=attention_mask).logits
    assert torch.equal(real_labels(int8, attention_mask), real_labels(eager, attention_mask))


def test_quantized_model_has_int8_recurrences_and_leaves_the_original_alone(tagger):
    quantized = quantize_for_cpu(tagger)
    int8_modules = torch.ao.nn.quantized.dynamic
    int8_cells = {"rnn": torch.nn.RNN, "gru": int8_modules.GRU, "lstm": int8_modules.LSTM}  # no int8 plain RNN
    assert isinstance(quantized.birnn.layers[0].backward_rnn, int8_cells[tagger.config.cell_type])
    assert isinstance(quantized.classifier, int8_modules.Linear) and not quantized.training
    assert not isinstance(tagger.classifier, int8_modules.Linear)


def test_quantized_models_serve_the_token_classification_pipeline():
    pytest.importorskip("onnxruntime")
    tokenizer = train_wordpiece_tokenizer(SENTENCES * 4, vocab_size=120, min_frequency=1)
    model = trained_tagger(tiny_config(vocab_size=len(tokenizer), id2label=ID2LABEL))
    served = {
        "fp32": model,
        "torch int8": quantize_for_cpu(model),
        "onnxruntime int8": quantize_for_cpu(model, backend="onnxruntime", threads=1),
    }
    tagged = {}
    for name, served_model in served.items():
        tag = pipeline("token-classification", model=served_model, tokenizer=tokenizer, device="cpu")
        tagged[name] = [[(token["word"], token["entity"]) for token in row] for row in tag(SENTENCES, batch_size=2)]
    assert tagged["torch int8"] == tagged["fp32"]
    assert tagged["onnxruntime int8"] == tagged["fp32"]


def test_quantize_for_cpu_names_the_backends_it_knows():
    with pytest.raises(ValueError, match="'torch' or 'onnxruntime'"):
        quantize_for_cpu(BiRNNForTokenClassification(tiny_config()), backend="tensorrt")


@pytest.mark.parametrize("cell_type", CELL_TYPES)
def test_onnx_export_is_padding_exact_with_dynamic_batch_and_length(cell_type, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = trained_tagger(tiny_config(cell_type=cell_type), steps=10)
    session = onnxruntime.InferenceSession(str(export_onnx(model, tmp_path / "tagger.onnx")))
    generator = torch.Generator().manual_seed(2)
    for seq_len in (9, 3, 17):  # none of them the export example's length (4)
        input_ids, attention_mask = padded_batch(model.config.vocab_size, seq_len=seq_len, generator=generator)
        for rows in (slice(None), slice(2, 3)):  # batch sizes 8 and 1
            feed = {"input_ids": input_ids[rows].numpy(), "attention_mask": attention_mask[rows].numpy()}
            (logits,) = session.run(["logits"], feed)
            with torch.no_grad():
                eager = model(input_ids=input_ids[rows], attention_mask=attention_mask[rows]).logits
            torch.testing.assert_close(torch.from_numpy(logits), eager, atol=ATOL, rtol=0)


def test_onnx_base_model_outputs_states_and_pooled_output(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = BiRNNModel(tiny_config(cell_type="rnn")).eval()
    session = onnxruntime.InferenceSession(str(export_onnx(model, tmp_path / "encoder.onnx")))
    input_ids, attention_mask = padded_batch(model.config.vocab_size, seq_len=6)
    outputs = session.run(None, {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})
    with torch.no_grad():
        eager = model(input_ids=input_ids, attention_mask=attention_mask)
    assert [output.name for output in session.get_outputs()] == ["last_hidden_state", "pooler_output"]
    torch.testing.assert_close(torch.from_numpy(outputs[0]), eager.last_hidden_state, atol=ATOL, rtol=0)
    torch.testing.assert_close(torch.from_numpy(outputs[1]), eager.pooler_output, atol=ATOL, rtol=0)


def test_int8_onnx_export_gives_the_eager_labels(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = trained_tagger(tiny_config(cell_type="lstm"))
    session = onnxruntime.InferenceSession(str(export_onnx(model, tmp_path / "int8.onnx", quantize=True)))
    assert any(node.op_type == "DynamicQuantizeLSTM" for node in _onnx_nodes(tmp_path / "int8.onnx"))
    input_ids, attention_mask = padded_batch(model.config.vocab_size, generator=torch.Generator().manual_seed(3))
    (logits,) = session.run(["logits"], {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})
    with torch.no_grad():
        eager = model(input_ids=input_ids, attention_mask=attention_mask).logits
    assert torch.equal(real_labels(torch.from_numpy(logits), attention_mask), real_labels(eager, attention_mask))


def _onnx_nodes(path: Path):
    import onnx

    return onnx.load(str(path)).graph.node


def test_onnx_export_of_a_crf_head_outputs_the_emission_scores(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    model = trained_tagger(tiny_config(use_crf=True, crf_constraints="iob2", id2label=ID2LABEL), steps=10)
    session = onnxruntime.InferenceSession(str(export_onnx(model, tmp_path / "crf.onnx")))
    input_ids, attention_mask = padded_batch(model.config.vocab_size, generator=torch.Generator().manual_seed(4))
    feed = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
    (emissions,) = session.run(["emissions"], feed)
    with torch.no_grad():
        states = model.birnn(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        eager_emissions = model.classifier(states)
    torch.testing.assert_close(torch.from_numpy(emissions), eager_emissions, atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------------------------------------------------
# OnnxRuntimeModel: the exported graph behind the eager model's interface
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("head", ["softmax", "crf", "sequence"])
def test_onnx_runtime_model_gives_the_eager_outputs_on_padded_rows(head):
    pytest.importorskip("onnxruntime")
    if head == "sequence":
        torch.manual_seed(0)
        model = BiRNNForSequenceClassification(tiny_config(cell_type="gru")).eval()
    else:
        crf = dict(use_crf=True, crf_constraints="iob2", id2label=ID2LABEL) if head == "crf" else {}
        model = trained_tagger(tiny_config(**crf), steps=10)
    onnx_model = OnnxRuntimeModel.from_model(model, threads=1)
    input_ids, attention_mask = padded_batch(model.config.vocab_size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        eager = model(input_ids=input_ids, attention_mask=attention_mask)
    served = onnx_model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids))
    assert type(served) is type(eager)
    # a CRF's max-marginals add up emission and transition scores along whole paths: fp32 rounding grows with them
    torch.testing.assert_close(served.logits, eager.logits, atol=ATOL * (3 if head == "crf" else 1), rtol=0)
    assert torch.equal(served.logits.argmax(-1), eager.logits.argmax(-1))


@pytest.mark.parametrize("head", ["softmax", "crf"])
def test_onnx_runtime_model_runs_mixed_lengths_in_groups_with_the_eager_outputs(head):
    pytest.importorskip("onnxruntime")
    crf = dict(use_crf=True, crf_constraints="iob2", id2label=ID2LABEL) if head == "crf" else {}
    model = trained_tagger(tiny_config(**crf), steps=10)
    onnx_model = OnnxRuntimeModel.from_model(model, threads=1)
    generator = torch.Generator().manual_seed(7)
    lengths = [14, 1, 0, 3, 2, 13, 1, 2, 0, 4, 12, 2, 1, 3, 2, 1, 14, 0, 5, 2]  # enough rows to run in groups
    input_ids = torch.zeros(len(lengths), 16, dtype=torch.long)
    for row, length in enumerate(lengths):  # even rows right-padded, odd rows left-padded after one pad
        start = 0 if row % 2 == 0 else 16 - length - 1
        tokens = torch.randint(1, model.config.vocab_size, (length,), generator=generator)
        input_ids[row, start : start + length] = tokens
    attention_mask = (input_ids != 0).long()
    assert length_groups(attention_mask.sum(dim=1)) is not None
    with torch.no_grad():
        eager = model(input_ids=input_ids, attention_mask=attention_mask).logits
    served = onnx_model(input_ids=input_ids, attention_mask=attention_mask).logits
    real = attention_mask.bool()
    torch.testing.assert_close(served[real], eager[real], atol=ATOL * (3 if head == "crf" else 1), rtol=0)


def test_onnx_runtime_model_saves_and_loads_with_its_crf(tmp_path):
    pytest.importorskip("onnxruntime")
    model = trained_tagger(tiny_config(use_crf=True, crf_constraints="iob2", id2label=ID2LABEL), steps=10)
    onnx_model = quantize_for_cpu(model, backend="onnxruntime")
    onnx_model.save_pretrained(tmp_path / "int8")
    assert sorted(path.name for path in (tmp_path / "int8").iterdir() if path.suffix != ".py") == [
        "config.json",
        "crf.safetensors",
        "model.onnx",
    ]
    reloaded = OnnxRuntimeModel.from_pretrained(tmp_path / "int8")
    input_ids, attention_mask = padded_batch(model.config.vocab_size, generator=torch.Generator().manual_seed(6))
    expected = onnx_model(input_ids=input_ids, attention_mask=attention_mask).logits
    assert torch.equal(reloaded(input_ids=input_ids, attention_mask=attention_mask).logits, expected)
    assert torch.equal(reloaded.crf.transition_penalty, model.crf.transition_penalty)
    (logits,) = reloaded(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)
    assert torch.equal(logits, expected)


def test_onnx_runtime_model_names_what_is_missing_or_wrong(tmp_path):
    pytest.importorskip("onnxruntime")
    with pytest.raises(OSError, match="no model.onnx"):
        OnnxRuntimeModel.from_pretrained(tmp_path)
    onnx_model = OnnxRuntimeModel.from_model(BiRNNForTokenClassification(tiny_config(cell_type="rnn")).eval())
    with pytest.raises(ValueError, match="`input_ids` must have shape"):
        onnx_model(input_ids=torch.ones(2, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="`attention_mask` must have the inputs' shape"):
        onnx_model(input_ids=torch.ones(2, 3, dtype=torch.long), attention_mask=torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="holes"):
        onnx_model(input_ids=torch.ones(1, 3, dtype=torch.long), attention_mask=torch.tensor([[1, 0, 1]]))


def test_spelling_features_survive_onnx_export_and_int8(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = trained_tagger(tiny_config(character_filters=6, character_embedding_size=4, max_token_characters=5))
    session = onnxruntime.InferenceSession(str(export_onnx(model, tmp_path / "tagger.onnx")))
    input_ids, attention_mask = padded_batch(model.config.vocab_size, seq_len=11, generator=torch.Generator())
    (logits,) = session.run(["logits"], {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})
    with torch.no_grad():
        eager = model(input_ids=input_ids, attention_mask=attention_mask).logits
        int8 = quantize_for_cpu(model)(input_ids=input_ids, attention_mask=attention_mask).logits
    torch.testing.assert_close(torch.from_numpy(logits), eager, atol=ATOL, rtol=0)
    assert torch.equal(real_labels(int8, attention_mask), real_labels(eager, attention_mask))
