"""The shapes every section measures at: the full run's, and the tiny ones of `--quick`."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    """The shapes of a run; `--quick` shrinks every one of them."""

    vocab_size: int = 8000
    embedding_size: int = 128
    hidden_size: int = 256
    num_layers: int = 2
    batch_size: int = 32
    overhead_lengths: tuple[int, ...] = (32, 128)
    trainer_steps: int = 40
    scaling_lengths: tuple[int, ...] = (32, 128, 512, 2048, 4096, 8192)
    scaling_tokens: int = 2048  # tokens per batch (rows of length L), so that work per call stays comparable
    onnx_length: int = 64
    onnx_cells: tuple[str, ...] = ("lstm", "gru", "rnn")
    dev_sentences: int | None = None  # the whole WNUT-17 dev set
    pipeline_sentences: int = 128
    pipeline_batch_sizes: tuple[int, ...] = (1, 8, 32)
    denormal_length: int = 1024
    denormal_batch_size: int = 4
    # BERT's training step above this length outgrows the memory of a small machine (attention grows with L²)
    bert_training_max_length: int = 4096


QUICK_SIZES = Sizes(
    vocab_size=600,
    embedding_size=16,
    hidden_size=32,
    batch_size=4,
    overhead_lengths=(16,),
    trainer_steps=3,
    scaling_lengths=(16, 64),
    scaling_tokens=128,
    onnx_length=16,
    onnx_cells=("rnn",),  # the int8 section exports an LSTM; GRU exports through the same path
    dev_sentences=24,
    pipeline_sentences=8,
    pipeline_batch_sizes=(1, 4),
    denormal_length=32,
    denormal_batch_size=2,
)
