"""Fast CPU serving: int8 copies of a model for eager inference and pipelines, and an ONNX export with a runner.

Every path keeps the model's handling of padding (see `SpanLayout`): left, right or two-sided padding gives the
outputs of each row alone. `scripts/benchmarks/run.py` measures what they gain; `tests/test_serving.py` checks their
labels against eager fp32.
"""

import contextlib
import copy
import importlib.util
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.utils import ModelOutput

from . import modeling_birnn
from .configuration_birnn import BiRNNConfig
from .modeling_birnn import (
    BiRNNPreTrainedModel,
    LinearChainCRF,
    PaddingExactRunner,
    check_model_inputs,
    crf_from_config,
    crf_logits,
)

# the recurrent cells take ~90% of a CPU forward, so int8 has to reach them; plain RNN cells have no int8 kernel
QUANTIZED_MODULES = {nn.LSTM, nn.GRU, nn.Linear}
# ONNX Runtime quantizes these op types by weight; it has an int8 kernel for LSTM but not for GRU or RNN
ONNX_QUANTIZED_OPS = ["LSTM", "MatMul", "Gemm"]
ONNX_FILE, CRF_FILE = "model.onnx", "crf.safetensors"


def quantize_for_cpu(
    model: BiRNNPreTrainedModel, backend: Literal["torch", "onnxruntime"] = "torch", threads: int | None = None
) -> "BiRNNPreTrainedModel | OnnxRuntimeModel":
    """An int8 inference copy of `model` that works where the model does: `model(**batch)` and
    `pipeline("token-classification", model=quantized, tokenizer=...)`. Keep saving the fp32 model.

    `backend="onnxruntime"` (needs the `onnx` extra) exports the model with `export_onnx(quantize=True)` and returns
    an `OnnxRuntimeModel` that runs it: ONNX Runtime's int8 LSTM is one fused kernel, the fastest CPU path
    (`docs/benchmarks/int8.md`). `threads` sets its intra-op threads (default: ONNX Runtime's).

    `backend="torch"` uses dynamic quantization (`torch.ao.quantization.quantize_dynamic`), the one path in torch
    with int8 recurrent kernels (torchao's `quantize_` covers linear layers only), though deprecated in favour of
    torchao. Its int8 LSTM runs the gate maths as separate small ops at every step, so on small models it gains
    little or nothing; prefer `backend="onnxruntime"` where the extra is installed. Plain RNN cells stay fp32. It
    keeps the torch module (`inputs_embeds`, hidden states).

    Both quantize activations on the fly with one scale per tensor: because the scale spans the batch, outputs move
    slightly with batch mates and padding, and a few labels can differ from fp32 (`scripts/benchmarks/run.py --only
    int8` counts them).

    >>> tagger = AutoModelForTokenClassification.from_pretrained("outputs/wnut17-birnn")
    >>> quantized = quantize_for_cpu(tagger, backend="onnxruntime")
    """
    if backend == "onnxruntime":
        return OnnxRuntimeModel.from_model(model, quantize=True, threads=threads)
    if backend != "torch":
        raise ValueError(f"`backend` must be 'torch' or 'onnxruntime', not {backend!r}.")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"torch\.ao\.quantization is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", r"torch\.quantize_per_tensor", UserWarning)
        quantized = torch.ao.quantization.quantize_dynamic(model, QUANTIZED_MODULES, dtype=torch.qint8)
    return quantized.eval()


class _OnnxGraph(nn.Module):
    """The model as ONNX sees it: `(input_ids, attention_mask)` in, plain tensors out; with a CRF head, the emission
    scores that the CRF decodes."""

    def __init__(self, model: BiRNNPreTrainedModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.export_outputs(input_ids, attention_mask).values())


def export_onnx(model: BiRNNPreTrainedModel, path: str | Path, quantize: bool = False) -> Path:
    """Write `model` to `path` as ONNX, with dynamic batch size and sequence length, for ONNX Runtime.

    Inputs are `input_ids` and `attention_mask` (int64, (batch, sequence)); outputs are `logits` for the heads, or
    `last_hidden_state` and `pooler_output` for `BiRNNModel`. A CRF head's decoding loops over the steps in Python,
    so its graph ends before the CRF and outputs the `emissions`; `OnnxRuntimeModel` decodes them. The graph is
    padding-exact: while exporting, `SpanLayout` builds every index map instead of skipping those a batch does not
    need (`is_exporting`). `quantize=True` stores the LSTM and linear weights as int8 (ONNX Runtime's dynamic
    quantization; GRU and RNN cells stay fp32). Needs the `onnx` extra.

    >>> export_onnx(model, "tagger.onnx")
    >>> session = onnxruntime.InferenceSession("tagger.onnx")
    >>> logits = session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
    """
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
    import onnxscript.optimizer

    model = graph.model
    output_names = _graph_output_names(model)
    # a full row and a padded one, so that nothing about the example's padding is baked into the graph
    example = (torch.tensor([[5, 6, 7, 8], [5, 6, 7, 0]]), torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]))
    input_names = ["input_ids", "attention_mask"]
    with _quiet_exporter():
        if model.config.cell_type == "rnn":
            # torch's dynamo exporter has no ONNX translation of `aten.rnn_tanh` / `rnn_relu`: it unrolls the
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
            optimize=False,
        )
        # only the constant folding of `optimize=True` (which the int8 quantizer needs: it quantizes initializers):
        # its rewrite rule MaterializeReshapeShape (onnxscript) bakes the example's length into the reshape
        # after each steps-first LSTM, and the graph then fails on any other length
        onnxscript.optimizer.fold_constants(program.model)
        onnxscript.optimizer.remove_unused_nodes(program.model)
        program.save(str(path))


def _crf_head(model: BiRNNPreTrainedModel) -> LinearChainCRF | None:
    return getattr(model, "crf", None)


def _graph_output_names(model: BiRNNPreTrainedModel) -> list[str]:
    example = torch.tensor([[5, 6]])
    with torch.no_grad():
        return list(model.export_outputs(example, torch.ones_like(example)).keys())


def model_classes() -> dict[str, type[BiRNNPreTrainedModel]]:
    """The architectures an exported graph can stand in for: every model class of `modeling_birnn`."""
    classes = (getattr(modeling_birnn, name) for name in modeling_birnn.__all__)
    return {
        cls.__name__: cls
        for cls in classes
        if isinstance(cls, type) and issubclass(cls, BiRNNPreTrainedModel) and hasattr(cls, "output_class")
    }


def _clear_rnn_dispatch_caches() -> None:
    """While exporting, torch swaps in while-loop decompositions of LSTM and GRU that keep the length dynamic,
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


class OnnxRuntimeModel(nn.Module):
    """A model exported by `export_onnx`, run by ONNX Runtime behind the eager model's interface: `config`,
    `device`, and `forward(input_ids, attention_mask)` returning the eager head's output class with torch tensors,
    so `model(**batch)` and `pipeline("token-classification", model=onnx_model, tokenizer=...)` work unchanged.
    A CRF head's graph outputs emission scores; the CRF, kept here in torch, turns them into the eager model's
    max-marginal logits (its decoding loops over the steps in Python, which does not export).

    `save_pretrained(folder)` writes `config.json`, `model.onnx` (and `crf.safetensors`); `from_pretrained(folder)`
    reads them back. The graph takes no `inputs_embeds` and returns no hidden states.

    >>> onnx_model = OnnxRuntimeModel.from_model(model, quantize=True)  # = quantize_for_cpu(model, "onnxruntime")
    >>> tagger = pipeline("token-classification", model=onnx_model, tokenizer=tokenizer)
    """

    main_input_name = "input_ids"

    def __init__(
        self,
        graph: bytes,
        config: BiRNNConfig,
        architecture: str,
        crf: LinearChainCRF | None = None,
        threads: int | None = None,
    ):
        super().__init__()
        onnxruntime = _import_onnxruntime()
        if architecture not in model_classes():
            raise ValueError(f"OnnxRuntimeModel runs {sorted(model_classes())}, not {architecture!r}.")
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.graph, self.config, self.architecture, self.crf = graph, config, architecture, crf
        self.output_names = [output.name for output in self.session.get_outputs()]
        if ("emissions" in self.output_names) != (crf is not None):
            raise ValueError("A graph outputs `emissions` exactly when its model has a CRF head; these do not match.")

    @classmethod
    def from_model(
        cls, model: BiRNNPreTrainedModel, quantize: bool = False, threads: int | None = None
    ) -> "OnnxRuntimeModel":
        """Export `model` with `export_onnx` (int8 weights with `quantize=True`) and run the graph."""
        _import_onnxruntime()  # before the export, which takes seconds
        with tempfile.TemporaryDirectory() as folder:
            graph = export_onnx(model, Path(folder) / ONNX_FILE, quantize=quantize).read_bytes()
        crf = _crf_head(model)
        crf = copy.deepcopy(crf).eval() if crf is not None else None
        return cls(graph, copy.deepcopy(model.config), type(model).__name__, crf=crf, threads=threads)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, threads: int | None = None) -> "OnnxRuntimeModel":
        """Load what `save_pretrained` wrote to `folder`."""
        folder = Path(folder)
        if not (folder / ONNX_FILE).is_file():
            raise OSError(f"{folder} has no {ONNX_FILE}: write one with `OnnxRuntimeModel.save_pretrained`.")
        config = BiRNNConfig.from_pretrained(folder)
        crf = None
        if config.use_crf:
            if not (folder / CRF_FILE).is_file():
                raise OSError(f"{folder}'s config has a CRF head but the folder has no {CRF_FILE}.")
            crf = crf_from_config(config)
            crf.load_state_dict(load_file(folder / CRF_FILE))
        architecture = (config.architectures or ["(none in config.json)"])[0]
        return cls((folder / ONNX_FILE).read_bytes(), config, architecture, crf=crf, threads=threads)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write the config, the graph and the CRF to `folder`; each file is written whole or not at all."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.config.architectures = [self.architecture]
        self.config.save_pretrained(folder)
        _write_atomically(folder / ONNX_FILE, lambda path: path.write_bytes(self.graph))
        if self.crf is not None:  # its forbidden transitions follow from the config
            crf_tensors = {name: tensor.contiguous() for name, tensor in self.crf.state_dict().items()}
            _write_atomically(folder / CRF_FILE, lambda path: save_file(crf_tensors, str(path)))

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def can_generate(self) -> bool:
        return False

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> tuple | ModelOutput:
        """Runs the graph on `input_ids` and `attention_mask`, checked as the eager model checks them; other
        tokenizer outputs (`token_type_ids`) are ignored, as the eager model ignores them."""
        if input_ids is None:
            raise ValueError("OnnxRuntimeModel takes `input_ids` of shape (batch, sequence) (no `inputs_embeds`).")
        check_model_inputs(self.config, input_ids, None, attention_mask)
        input_ids = input_ids.detach().cpu().long()
        attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.detach().cpu().long()
        runner = PaddingExactRunner(attention_mask, *input_ids.shape, device=input_ids.device)
        if input_ids.numel() == 0:  # ONNX Runtime aborts the process on an empty batch; the eager model does not
            outputs = self._empty_outputs(*input_ids.shape)
        else:
            outputs = runner.run_in_groups(self._run_graph, input_ids, attention_mask)
        if self.crf is not None:
            with torch.no_grad():
                outputs = {"logits": crf_logits(self.crf, outputs.pop("emissions"), attention_mask)}
        output = model_classes()[self.architecture].output_class(**outputs)
        return output.to_tuple() if return_dict is False else output

    def _run_graph(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        feed = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
        arrays = self.session.run(None, feed)
        return {name: torch.from_numpy(array) for name, array in zip(self.output_names, arrays, strict=True)}

    def _empty_outputs(self, batch_size: int, seq_len: int) -> dict[str, torch.Tensor]:
        """The graph's outputs for a batch with no tokens, shaped as the graph would shape them: zeros."""
        shapes = {output.name: output.shape for output in self.session.get_outputs()}
        leading = {2: (batch_size,), 3: (batch_size, seq_len)}
        return {name: torch.zeros(*leading[len(shapes[name])], shapes[name][-1]) for name in self.output_names}


class _ShortPipelineWarning(logging.Filter):
    """transformers' pipelines check the model's class name against their registry and log every supported model
    (several KB on one line) for `OnnxRuntimeModel`, which serves them all the same: one short line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("The model 'OnnxRuntimeModel' is not supported"):
            record.msg = "OnnxRuntimeModel stands in for the exported BiRNN model (transformers checks class names)."
            record.args = ()
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


logging.getLogger("transformers.pipelines.base").addFilter(_ShortPipelineWarning())


def _import_onnxruntime():
    if importlib.util.find_spec("onnxruntime") is None:
        raise ImportError("OnnxRuntimeModel needs `onnxruntime`: pip install 'hf_birnn[onnx]'.")
    import onnxruntime

    return onnxruntime


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """`write(temporary_path)` beside `path`, then rename it: a reader finds the old file or the new one, never half
    of one."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        temporary = Path(handle.name)
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


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


__all__ = ["OnnxRuntimeModel", "export_onnx", "quantize_for_cpu"]
