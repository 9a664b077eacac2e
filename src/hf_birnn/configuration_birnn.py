"""BiRNN model configuration."""

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

CELL_TYPES = ("rnn", "gru", "lstm")
NONLINEARITIES = ("tanh", "relu")
CRF_CONSTRAINTS = (None, "iob2", "bioes")


@strict
class BiRNNConfig(PreTrainedConfig):
    r"""
    Configuration of a (deep) bidirectional recurrent network: embeddings followed by `num_hidden_layers` layers,
    each running a forward and a backward recurrent cell over the sequence and concatenating their states,
    `H_t = [H→_t ; H←_t]`. The config is the single source of truth for every shape in the model.

    Args:
        vocab_size (`int`, defaults to 30000): number of token ids the embedding table holds.
        embedding_size (`int`, defaults to 128): width of the token embeddings (the first layer's input size).
        hidden_size (`int`, defaults to 256): hidden units of the forward direction.
        backward_hidden_size (`int`, *optional*): hidden units of the backward direction; defaults to `hidden_size`.
        num_hidden_layers (`int`, defaults to 2): number of stacked bidirectional layers.
        cell_type (`str`, defaults to `"lstm"`): `"rnn"`, `"gru"` or `"lstm"`.
        nonlinearity (`str`, defaults to `"tanh"`): φ of the plain RNN cell, `"tanh"` or `"relu"`.
        bidirectional (`bool`, defaults to `True`): run the backward direction too.
        character_filters (`int`, defaults to 0): spelling features: the number of character-CNN filters (Ma & Hovy
            2016) run over each token's text and appended to its embedding; 0 turns them off. The spellings of the
            vocabulary are read from the tokenizer once (`model.set_token_spellings(tokenizer)`) and saved with the
            weights, so the model still takes `input_ids` only.
        character_embedding_size (`int`, defaults to 32): width of the byte embeddings the character CNN reads.
        character_kernel_size (`int`, defaults to 3): width of the character-CNN filters, in bytes.
        max_token_characters (`int`, defaults to 16): symbols of each token's spelling that the CNN reads: a
            marker (the token starts a word or continues one), then the UTF-8 bytes of its text.
        num_word_vectors (`int`, defaults to 0): rows of the pretrained word-vector table (GloVe, fastText,
            word2vec; width `embedding_size`) added to the learned embeddings; 0 turns them off. The vectors and the
            row of each token id are filled once (`model.set_word_vectors(...)`, done by `hf_birnn.word_vectors`) and
            saved with the weights.
        learned_vocab_size (`int`, *optional*): how many token ids, the first ones, have a learned embedding row;
            defaults to `vocab_size`. With word vectors the other ids are words known from the vectors alone.
        vector_correction_dropout (`float`, defaults to 0.0): probability of dropping a training word's learned
            correction in training, so that it reads as a word seen only in the vectors does at test time.
        word_vectors_name (`str`, *optional*): where the word vectors came from (a package name or a file name), for
            the model card.
        freeze_word_vectors (`bool`, defaults to `True`): keep the pretrained vectors fixed in training (the learned
            rows of the training words still correct them); `False` fine-tunes the whole table.
        embedding_dropout (`float`, defaults to 0.1): dropout on the embeddings.
        word_dropout (`float`, defaults to 0.0): probability of dropping a token's whole embedding in training, so the
            model learns to tag from context (as Lample et al. 2016 do for unknown words).
        hidden_dropout (`float`, defaults to 0.1): dropout between stacked layers.
        classifier_dropout (`float`, defaults to 0.1): dropout before a task head.
        initializer_range (`float`, defaults to 0.02): std of the normal init of linear layers (and of the
            embeddings unless `embedding_initializer_range` is set).
        embedding_initializer_range (`float`, *optional*): std of the normal init of the token embeddings; defaults
            to `initializer_range`. A recurrent cell reading N(0, 0.02) inputs learns slowly at first: N(0, 1)
            (PyTorch's own default for `nn.Embedding`) helps masked-LM pretraining start.
        use_crf (`bool`, defaults to `False`): token classification decodes with a linear-chain CRF.
        crf_constraints (`str`, *optional*): `"iob2"` or `"bioes"`: the CRF never moves between tags in a way the
            scheme forbids (e.g. `O` → `I-PER`); the label names in `id2label` must follow the scheme.

    Example:

    ```python
    >>> from hf_birnn import BiRNNConfig, BiRNNModel
    >>> config = BiRNNConfig(vocab_size=1000, hidden_size=64, backward_hidden_size=32, cell_type="gru")
    >>> model = BiRNNModel(config)
    >>> config.output_size
    96
    ```"""

    model_type = "birnn"

    vocab_size: int = 30000
    embedding_size: int = 128
    hidden_size: int = 256
    backward_hidden_size: int | None = None
    num_hidden_layers: int = 2
    cell_type: str = "lstm"
    nonlinearity: str = "tanh"
    bidirectional: bool = True
    character_filters: int = 0
    character_embedding_size: int = 32
    character_kernel_size: int = 3
    max_token_characters: int = 16
    num_word_vectors: int = 0
    learned_vocab_size: int | None = None
    freeze_word_vectors: bool = True
    vector_correction_dropout: float | int = 0.0
    word_vectors_name: str | None = None
    embedding_dropout: float | int = 0.1
    word_dropout: float | int = 0.0
    hidden_dropout: float | int = 0.1
    classifier_dropout: float | int = 0.1
    pad_token_id: int | None = 0
    initializer_range: float = 0.02
    embedding_initializer_range: float | None = None
    tie_word_embeddings: bool = True
    use_crf: bool = False
    crf_constraints: str | None = None

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs) -> "BiRNNConfig":
        """Refuse another model's config (e.g. a BERT `config.json` in the folder): transformers only warns, and the
        fields that share names would build a BiRNN that silently ignores the checkpoint's weights."""
        model_type = config_dict.get("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ValueError(
                f"This is a config for model type {model_type!r}, not {cls.model_type!r}: load it with its own model "
                "class (or an Auto class), or build a BiRNN from `BiRNNConfig(...)`."
            )
        return super().from_dict(config_dict, **kwargs)

    def __post_init__(self, **kwargs):
        if self.backward_hidden_size is None:
            self.backward_hidden_size = self.hidden_size
        if self.learned_vocab_size is None:
            self.learned_vocab_size = self.vocab_size
        self._check_fields()
        super().__post_init__(**kwargs)

    def _check_fields(self) -> None:
        """Raise a `ValueError` that names the field and what it accepts; strict typing alone lets these through."""
        if self.cell_type not in CELL_TYPES:
            raise ValueError(f"`cell_type` must be one of {CELL_TYPES}, got {self.cell_type!r}.")
        if self.nonlinearity not in NONLINEARITIES:
            raise ValueError(f"`nonlinearity` must be one of {NONLINEARITIES}, got {self.nonlinearity!r}.")
        if self.crf_constraints not in CRF_CONSTRAINTS:
            raise ValueError(f"`crf_constraints` must be one of {CRF_CONSTRAINTS}, got {self.crf_constraints!r}.")
        positive_sizes = (
            "vocab_size",
            "learned_vocab_size",
            "embedding_size",
            "hidden_size",
            "backward_hidden_size",
            "num_hidden_layers",
        )
        spelling_sizes = ("character_embedding_size", "character_kernel_size", "max_token_characters")
        for name in positive_sizes + spelling_sizes:
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value}.")
        for name in ("character_filters", "num_word_vectors"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be 0 (off) or a positive count, got {getattr(self, name)}.")
        if self.learned_vocab_size > self.vocab_size:
            raise ValueError(
                f"`learned_vocab_size` ({self.learned_vocab_size}) cannot exceed `vocab_size` ({self.vocab_size})."
            )
        if self.learned_vocab_size < self.vocab_size and (
            self.pad_token_id is None or self.pad_token_id >= self.learned_vocab_size
        ):
            raise ValueError(
                "Token ids without a learned embedding row read the padding row: `pad_token_id` must be one of the "
                f"first `learned_vocab_size` ({self.learned_vocab_size}) ids, got {self.pad_token_id}."
            )
        dropouts = ("embedding_dropout", "word_dropout", "vector_correction_dropout", "hidden_dropout")
        for name in dropouts + ("classifier_dropout",):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"`{name}` must be a probability in [0, 1), got {value}.")
        for name in ("initializer_range", "embedding_initializer_range"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"`{name}` must be a positive standard deviation, got {value}.")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"`pad_token_id` must be None or in [0, vocab_size={self.vocab_size}), got {self.pad_token_id}."
            )

    @property
    def token_embedding_size(self) -> int:
        """Width of the first layer's input: the token embedding plus the spelling features, if any."""
        return self.embedding_size + self.character_filters

    @property
    def output_size(self) -> int:
        """Width of `H_t`: forward plus backward hidden units (forward only when not bidirectional)."""
        return self.hidden_size + (self.backward_hidden_size if self.bidirectional else 0)


__all__ = ["BiRNNConfig"]
