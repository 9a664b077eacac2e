"""Fast CPU serving: an int8 copy of a model for eager inference and pipelines, and an ONNX export.

Both keep the model's handling of padding (see `SpanLayout`): left, right or two-sided padding gives the outputs of
each row alone. `scripts/benchmark.py` measures what they gain; `tests/test_serving.py` checks their labels against
eager fp32.
"""

import contextlib
import importlib.util
import io
import logging
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .modeling_birnn import BiRNNModel, BiRNNPreTrainedModel

# the recurrent cells take ~90% of a CPU forward, so int8 has to reach them; plain RNN cells have no int8 kernel
QUANTIZED_MODULES = {nn.LSTM, nn.GRU, nn.Linear}
# ONNX Runtime quantizes these op types by weight; it has an int8 kernel for LSTM but not for GRU or RNN
ONNX_QUANTIZED_OPS = ["LSTM", "MatMul", "Gemm"]


def quantize_for_cpu(model: BiRNNPreTrainedModel) -> BiRNNPreTrainedModel:
    """An inference copy of `model` whose LSTM / GRU cells and linear layers compute with int8 weights.

    Dynamic quantization (`torch.ao.quantization.quantize_dynamic`): weights are stored as int8, activations are
    quantized on the fly with one scale per tensor. It is the one path in torch 2.13 with int8 recurrent kernels
    (torchao's `quantize_` covers linear layers only), though deprecated in favour of torchao. Because the scale
    spans the batch, outputs move slightly with batch mates and padding; predicted labels stay ≥ 99.5% identical
    (`scripts/benchmark.py --only int8`). Plain RNN cells stay fp32. The copy works in
    `pipeline("token-classification", model=quantized, tokenizer=...)`; keep saving the fp32 model.

    >>> quantized = quantize_for_cpu(AutoModelForTokenClassification.from_pretrained("outputs/wnut17-birnn"))
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"torch\.ao\.quantization is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", r"torch\.quantize_per_tensor", UserWarning)
        quantized = torch.ao.quantization.quantize_dynamic(model, QUANTIZED_MODULES, dtype=torch.qint8)
    return quantized.eval()


class _OnnxGraph(nn.Module):
    """The model as ONNX sees it: `(input_ids, attention_mask)` in, plain tensors out."""

    def __init__(self, model: BiRNNPreTrainedModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        if isinstance(outputs, BaseModelOutputWithPooling):
            return outputs.last_hidden_state, outputs.pooler_output
        return (outputs.logits,)


def export_onnx(model: BiRNNPreTrainedModel, path: str | Path, quantize: bool = False) -> Path:
    """Write `model` to `path` as ONNX, with dynamic batch size and sequence length, for ONNX Runtime.

    Inputs are `input_ids` and `attention_mask` (int64, (batch, sequence)); outputs are `logits` for the heads, or
    `last_hidden_state` and `pooler_output` for `BiRNNModel`. The graph is padding-exact: while exporting,
    `SpanLayout` builds every index map instead of skipping those a batch does not need (`is_exporting`). A CRF
    head is refused: its decoding loops over the steps in Python. `quantize=True` stores the LSTM and linear
    weights as int8 (ONNX Runtime's dynamic quantization; GRU and RNN cells stay fp32). Needs the `onnx` extra.

    >>> export_onnx(model, "tagger.onnx")
    >>> session = onnxruntime.InferenceSession("tagger.onnx")
    >>> logits = session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
    """
    if getattr(model, "crf", None) is not None:
        raise ValueError("export_onnx does not export a CRF head: its Viterbi and forward-backward loops are Python.")
    for module in ("onnx", "onnxscript") + (("onnxruntime",) if quantize else ()):
        if importlib.util.find_spec(module) is None:
            raise ImportError(f"export_onnx needs `{module}`: pip install 'hf_birnn[onnx]'.")
    path = Path(path)
    was_training = model.training
    graph = _OnnxGraph(model).eval()
    try:
        with tempfile.TemporaryDirectory() as folder:
            fp32_path = Path(folder) / "fp32.onnx" if quantize else path
            _export_graph(graph, fp32_path)
            if quantize:
                _quantize_onnx(fp32_path, Path(folder) / "prepared.onnx", path)
    finally:
        model.train(was_training)
    return path


def _export_graph(graph: _OnnxGraph, path: Path) -> None:
    model = graph.model
    output_names = ["last_hidden_state", "pooler_output"] if isinstance(model, BiRNNModel) else ["logits"]
    # a full row and a padded one, so that nothing about the example's padding is baked into the graph
    example = (torch.tensor([[5, 6, 7, 8], [5, 6, 7, 0]]), torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]))
    input_names = ["input_ids", "attention_mask"]
    with _quiet_exporter():
        if model.config.cell_type == "rnn":
            # torch 2.13's exporter has no ONNX translation of `aten.rnn_tanh` / `rnn_relu`: it unrolls the
            # recurrence and so freezes the length. The TorchScript exporter maps `nn.RNN` to the ONNX RNN op.
            token_axes = {0: "batch", 1: "sequence"}
            axes = {"pooler_output": {0: "batch"}}
            torch.onnx.export(
                graph,
                example,
                str(path),
                dynamo=False,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes={name: axes.get(name, token_axes) for name in input_names + output_names},
            )
            return
        _clear_rnn_dispatch_caches()
        dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")}
        program = torch.onnx.export(
            graph,
            example,
            dynamo=True,
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes={"input_ids": dims, "attention_mask": dims},
        )
        program.save(str(path))


def _clear_rnn_dispatch_caches() -> None:
    """While exporting, torch 2.13 swaps in while-loop decompositions of LSTM and GRU that keep the length dynamic,
    but does not clear the ops' dispatch caches: a second export in the same process then unrolls the loop and
    freezes the length at the example's."""
    for op in (torch.ops.aten.lstm.input, torch.ops.aten.gru.input):
        cache = getattr(op, "_dispatch_cache", None)
        if cache is not None:
            cache.clear()


def _quantize_onnx(fp32_path: Path, prepared_path: Path, path: Path) -> None:
    """ONNX Runtime's dynamic int8 quantization, after folding the exporter's weight reshuffles into constants
    (`quant_pre_process`): the quantizer only quantizes weights that are initializers."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(fp32_path), str(prepared_path), skip_symbolic_shape=True)
    quantize_dynamic(prepared_path, path, op_types_to_quantize=ONNX_QUANTIZED_OPS, weight_type=QuantType.QInt8)


# what the exporters print about their own internals: progress, the LSTM weights they re-pack, deprecations
EXPORTER_NOISE = [
    (FutureWarning, ""),
    (torch.jit.TracerWarning, ""),  # the shape checks of `_check_inputs`, which hold for every valid input
    (UserWarning, r"The tensor attributes .*_flat_weights|Exporting a model to ONNX with a batch_size"),
    (UserWarning, r"# The axis name|Exporting aten::index operator"),  # `_pool`'s indices are never negative
    (DeprecationWarning, r"You are using the legacy TorchScript|The feature will be removed"),
]


@contextlib.contextmanager
def _quiet_exporter():
    onnx_logger = logging.getLogger("torch.onnx")
    previous_level = onnx_logger.level
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        for category, message in EXPORTER_NOISE:
            warnings.filterwarnings("ignore", message=message, category=category)
        onnx_logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            onnx_logger.setLevel(previous_level)


__all__ = ["export_onnx", "quantize_for_cpu"]
