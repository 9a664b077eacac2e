"""PyTorch BiRNN model: a deep bidirectional recurrent network (RNN, GRU or LSTM cells) with transformers heads.

Each layer computes, for every step t of a sequence of inputs X_t,

    H→_t = φ(X_t W_xh^(f) + H→_{t-1} W_hh^(f) + b_h^(f))      (forward direction, t = 1 … T)
    H←_t = φ(X_t W_xh^(b) + H←_{t+1} W_hh^(b) + b_h^(b))      (backward direction, t = T … 1)
    H_t  = [H→_t ; H←_t]                                     (the next layer's input)

and a task head reads H_t of the last layer (token classification: O_t = H_t W_hq + b_q).
"""

import os
from dataclasses import dataclass

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    MaskedLMOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)

from .configuration_birnn import BiRNNConfig

RNN_CLASSES: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


# ---------------------------------------------------------------------------------------------------------------------
# Padding: every row is turned into a left-aligned span before the recurrences run
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class SpanLayout:
    """Where each row's real tokens lie, and the index maps that make the recurrences ignore padding.

    A row's real tokens must be one contiguous span `[start, start + length)`: right padding, left padding, or both.
    The model rotates each row so its span starts at position 0 (`align_index`), runs the recurrences, and rotates
    back (`restore_index`). In the aligned layout padding only ever follows the real tokens, so the forward direction
    can run the plain (cuDNN / oneDNN) kernel over the padded batch. The backward direction reverses each row *within
    its own length* (`reverse_index`, its own inverse), runs the same kernel, and reverses back: it starts at each
    row's own last token. This keeps the fast kernel and exports, where `pack_padded_sequence` measured 0.26–0.88×
    the speed of a padded batch on CPU and does not export (see the README).
    """

    lengths: torch.Tensor  # (batch,) number of real tokens per row
    align_index: torch.Tensor | None  # (batch, seq_len) rotation putting each span first; None when all start at 0
    restore_index: torch.Tensor | None  # (batch, seq_len) the inverse rotation
    reverse_index: torch.Tensor | None  # (batch, seq_len) reversal within each row's length; None when no padding

    @classmethod
    def from_attention_mask(
        cls, attention_mask: torch.Tensor | None, batch_size: int, seq_len: int, device
    ) -> "SpanLayout":
        if attention_mask is None:
            lengths = torch.full((batch_size,), seq_len, dtype=torch.long, device=device)
            return cls(lengths=lengths, align_index=None, restore_index=None, reverse_index=None)

        real = attention_mask.bool()
        lengths = real.sum(dim=1)
        starts = torch.where(lengths > 0, real.int().argmax(dim=1), torch.zeros_like(lengths))
        positions = torch.arange(seq_len, device=device)
        span = (positions >= starts[:, None]) & (positions < (starts + lengths)[:, None])
        if not torch.equal(span, real):
            holed_rows = (span != real).any(dim=1).nonzero().flatten().tolist()
            raise ValueError(
                "`attention_mask` must mark one contiguous span of real tokens per row (right or left padding), "
                f"but rows {holed_rows[:10]} have holes."
            )

        align_index = restore_index = reverse_index = None
        if bool(starts.any()):
            align_index = (positions + starts[:, None]) % seq_len
            restore_index = (positions - starts[:, None]) % seq_len
        if bool((lengths < seq_len).any()):
            reversed_positions = lengths[:, None] - 1 - positions
            reverse_index = torch.where(reversed_positions >= 0, reversed_positions, positions)
        return cls(lengths=lengths, align_index=align_index, restore_index=restore_index, reverse_index=reverse_index)

    def aligned_mask(self, seq_len: int) -> torch.Tensor:
        """(batch, seq_len, 1) float mask of the real tokens in the aligned layout."""
        positions = torch.arange(seq_len, device=self.lengths.device)
        return (positions < self.lengths[:, None]).unsqueeze(-1)


def gather_steps(sequence: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """Reorder the time steps of each row of `sequence` (batch, seq_len, width) by `index` (batch, seq_len)."""
    if index is None:
        return sequence
    return sequence.gather(1, index.unsqueeze(-1).expand(-1, -1, sequence.size(-1)))


def reverse_within_lengths(sequence: torch.Tensor, layout: SpanLayout) -> torch.Tensor:
    """Reverse each aligned row's real tokens in place of their span; padding stays where it is."""
    if layout.reverse_index is None:
        return sequence.flip(1)
    return gather_steps(sequence, layout.reverse_index)


# ---------------------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------------------


def build_recurrence(config: BiRNNConfig, input_size: int, hidden_size: int) -> nn.RNNBase:
    """One unidirectional single-layer cell of the configured type; the two directions are separate modules
    because they may have different numbers of hidden units."""
    rnn_class = RNN_CLASSES[config.cell_type]
    extra = {"nonlinearity": config.nonlinearity} if config.cell_type == "rnn" else {}
    return rnn_class(input_size, hidden_size, num_layers=1, batch_first=True, **extra)


class BiRNNLayer(nn.Module):
    """One bidirectional layer: H_t = [H→_t ; H←_t], computed on the aligned layout of `SpanLayout`."""

    def __init__(self, config: BiRNNConfig, layer_idx: int):
        super().__init__()
        input_size = config.embedding_size if layer_idx == 0 else config.output_size
        self.forward_rnn = build_recurrence(config, input_size, config.hidden_size)
        self.backward_rnn = (
            build_recurrence(config, input_size, config.backward_hidden_size) if config.bidirectional else None
        )

    def forward(self, aligned_inputs: torch.Tensor, layout: SpanLayout) -> tuple[torch.Tensor, torch.Tensor | None]:
        forward_states, _ = self.forward_rnn(aligned_inputs)
        if self.backward_rnn is None:
            return forward_states, None
        reversed_states, _ = self.backward_rnn(reverse_within_lengths(aligned_inputs, layout))
        backward_states = reverse_within_lengths(reversed_states, layout)
        return forward_states, backward_states


class BiRNNLMHead(nn.Module):
    """Scores every vocabulary entry from H_t; the decoder shares the input embeddings when they are tied, so H_t is
    first projected to the embedding width when the two differ."""

    def __init__(self, config: BiRNNConfig):
        super().__init__()
        self.projection = (
            nn.Linear(config.output_size, config.embedding_size)
            if config.output_size != config.embedding_size
            else nn.Identity()
        )
        self.decoder = nn.Linear(config.embedding_size, config.vocab_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.projection(hidden_states))


# ---------------------------------------------------------------------------------------------------------------------
# Pretrained model base
# ---------------------------------------------------------------------------------------------------------------------


class BiRNNPreTrainedModel(PreTrainedModel):
    config_class = BiRNNConfig
    config: BiRNNConfig
    base_model_prefix = "birnn"
    main_input_name = "input_ids"
    _no_split_modules = ["BiRNNLayer"]

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike | None,
        *model_args,
        use_safetensors: bool | None = None,
        **kwargs,
    ) -> "BiRNNPreTrainedModel":
        """Load weights from safetensors only, never by unpickling: where a folder has no `model.safetensors`,
        transformers would `torch.load` a `pytorch_model.bin`; here it raises an `OSError` naming the missing file.
        A `model.safetensors` that cannot be read (truncated, corrupted) raises an `OSError` naming the folder."""
        if use_safetensors is False:
            raise ValueError("BiRNN models load weights from safetensors only; `use_safetensors=False` is refused.")
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, use_safetensors=True, **kwargs)
        except SafetensorError as error:
            raise OSError(
                f"Cannot read the safetensors weights in {pretrained_model_name_or_path} (model.safetensors or a "
                f"shard of it is truncated or corrupted): {error}"
            ) from error

    def _init_weights(self, module: nn.Module) -> None:
        """transformers' default covers `nn.LSTM` only; here every cell gets Xavier input weights, orthogonal
        recurrent weights (which keep the state's norm through time) and zero biases, with LSTM forget-gate biases
        at 1 (Jozefowicz et al. 2015)."""
        if not isinstance(module, nn.RNNBase):
            super()._init_weights(module)
            return
        for name, parameter in module.named_parameters():
            if name.startswith("weight_ih"):
                init.xavier_uniform_(parameter)
            elif name.startswith("weight_hh"):
                init.orthogonal_(parameter)
            elif name.startswith("bias_ih") and isinstance(module, nn.LSTM):
                forget_gate_bias = torch.zeros_like(parameter)  # gates are stacked (input, forget, cell, output)
                forget_gate_bias[module.hidden_size : 2 * module.hidden_size] = 1.0
                init.copy_(parameter, forget_gate_bias)
            elif name.startswith("bias"):
                init.zeros_(parameter)

    def _check_inputs(
        self,
        input_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
    ) -> None:
        """Name what is wrong with the inputs before torch fails somewhere deeper (or, worse, does not)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of `input_ids` or `inputs_embeds`.")
        if input_ids is not None:
            if input_ids.dim() != 2:
                raise ValueError(f"`input_ids` must have shape (batch, seq_len), got {tuple(input_ids.shape)}.")
            if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size):
                raise ValueError(
                    f"`input_ids` must lie in [0, vocab_size={self.config.vocab_size}), got values from "
                    f"{int(input_ids.min())} to {int(input_ids.max())}: does the tokenizer match the model?"
                )
            shape = tuple(input_ids.shape)
        else:
            if inputs_embeds.dim() != 3 or inputs_embeds.size(-1) != self.config.embedding_size:
                raise ValueError(
                    f"`inputs_embeds` must have shape (batch, seq_len, embedding_size={self.config.embedding_size}), "
                    f"got {tuple(inputs_embeds.shape)}."
                )
            shape = tuple(inputs_embeds.shape[:2])
        if attention_mask is not None and tuple(attention_mask.shape) != shape:
            raise ValueError(
                f"`attention_mask` must have the inputs' shape {shape}, got {tuple(attention_mask.shape)}."
            )


def check_labels_shape(labels: torch.Tensor, expected_shape: tuple[int, ...]) -> None:
    if tuple(labels.shape) != expected_shape:
        raise ValueError(f"`labels` must have shape {expected_shape}, got {tuple(labels.shape)}.")


# ---------------------------------------------------------------------------------------------------------------------
# Base model
# ---------------------------------------------------------------------------------------------------------------------


class BiRNNModel(BiRNNPreTrainedModel):
    """Embeddings → stacked bidirectional layers. `last_hidden_state` is H_t of the last layer, zero at padding;
    `pooler_output` is [H→ at each row's last real token ; H← at its first], the seed's sentence representation."""

    def __init__(self, config: BiRNNConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        self.embedding_dropout = nn.Dropout(config.embedding_dropout)
        self.layers = nn.ModuleList([BiRNNLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)])
        self.hidden_dropout = nn.Dropout(config.hidden_dropout)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, new_embeddings: nn.Embedding) -> None:
        self.embeddings = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> tuple | BaseModelOutputWithPooling:
        r"""
        token_type_ids (`torch.Tensor`, *optional*):
            Accepted and ignored: tokenizers emit it and pipelines pass it on, but a BiRNN has no segments.
        """
        self._check_inputs(input_ids, inputs_embeds, attention_mask)
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict

        if inputs_embeds is None:
            inputs_embeds = self.embeddings(input_ids)
        num_steps = inputs_embeds.size(1)
        if num_steps == 0:  # e.g. "" through a tokenizer without special tokens; nn.RNN refuses empty sequences, so
            # one padding step (whose outputs are zeros) runs instead and `restore` cuts it off again
            inputs_embeds = nn.functional.pad(inputs_embeds, (0, 0, 0, 1))
            attention_mask = inputs_embeds.new_zeros(inputs_embeds.shape[:2])
        batch_size, seq_len, _ = inputs_embeds.shape
        layout = SpanLayout.from_attention_mask(attention_mask, batch_size, seq_len, inputs_embeds.device)
        real_steps = layout.aligned_mask(seq_len).to(inputs_embeds.dtype)  # (batch, seq_len, 1)

        def restore(aligned: torch.Tensor) -> torch.Tensor:
            return gather_steps(aligned * real_steps, layout.restore_index)[:, :num_steps]

        hidden_states = gather_steps(self.embedding_dropout(inputs_embeds), layout.align_index)
        all_hidden_states = (restore(hidden_states),) if output_hidden_states else None
        for layer_idx, layer in enumerate(self.layers):
            if layer_idx > 0:
                hidden_states = self.hidden_dropout(hidden_states)
            forward_states, backward_states = layer(hidden_states, layout)
            hidden_states = (
                forward_states if backward_states is None else torch.cat([forward_states, backward_states], -1)
            )
            if output_hidden_states:
                all_hidden_states += (restore(hidden_states),)

        pooled_output = self._pool(forward_states, backward_states, layout) * (layout.lengths > 0)[:, None]
        last_hidden_state = restore(hidden_states)

        if not return_dict:
            return tuple(v for v in (last_hidden_state, pooled_output, all_hidden_states) if v is not None)
        return BaseModelOutputWithPooling(
            last_hidden_state=last_hidden_state, pooler_output=pooled_output, hidden_states=all_hidden_states
        )

    @staticmethod
    def _pool(forward_states: torch.Tensor, backward_states: torch.Tensor | None, layout: SpanLayout) -> torch.Tensor:
        """[H→ at the last real token ; H← at the first] of each aligned row (zeros are applied to empty rows)."""
        batch_index = torch.arange(forward_states.size(0), device=forward_states.device)
        last_forward = forward_states[batch_index, (layout.lengths - 1).clamp(min=0)]
        if backward_states is None:
            return last_forward
        return torch.cat([last_forward, backward_states[:, 0]], dim=-1)


# ---------------------------------------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------------------------------------


class BiRNNForTokenClassification(BiRNNPreTrainedModel):
    """O_t = H_t W_hq + b_q for every token: NER, POS tagging, chunking."""

    def __init__(self, config: BiRNNConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.birnn = BiRNNModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.output_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> tuple | TokenClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Tag ids in `[0, num_labels)`; `-100` marks tokens without a loss (padding, non-first sub-tokens).
        """
        outputs = self.birnn(
            input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(self.dropout(outputs.last_hidden_state))

        loss = None
        if labels is not None:
            check_labels_shape(labels, tuple(logits.shape[:2]))
            loss = self.loss_function(logits, labels, self.config, **kwargs)

        if not (return_dict if return_dict is not None else self.config.return_dict):
            output = (logits,) + ((outputs.hidden_states,) if outputs.hidden_states is not None else ())
            return ((loss,) + output) if loss is not None else output
        return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


class BiRNNForMaskedLM(BiRNNPreTrainedModel):
    """Predicts masked tokens from both sides: the way to pretrain a BiRNN. (Next-token prediction is not: the
    backward direction has already read the token to be predicted, see `BiRNNForCausalLM`.)"""

    _tied_weights_keys = {"lm_head.decoder.weight": "birnn.embeddings.weight"}

    def __init__(self, config: BiRNNConfig):
        super().__init__(config)
        self.birnn = BiRNNModel(config)
        self.lm_head = BiRNNLMHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head.decoder = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> tuple | MaskedLMOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            The original ids at masked positions, `-100` elsewhere (as `DataCollatorForLanguageModeling` makes them).
        """
        outputs = self.birnn(
            input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.lm_head(outputs.last_hidden_state)

        loss = None
        if labels is not None:
            check_labels_shape(labels, tuple(logits.shape[:2]))
            loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)

        if not (return_dict if return_dict is not None else self.config.return_dict):
            output = (logits,) + ((outputs.hidden_states,) if outputs.hidden_states is not None else ())
            return ((loss,) + output) if loss is not None else output
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


class BiRNNForSequenceClassification(BiRNNPreTrainedModel):
    """Classifies a whole sequence from the pooled [H→_T ; H←_1]: the seed's sentence classifier."""

    # The regression and multi-label losses are batch means that ignore `num_items_in_batch`, so Trainer's
    # multiplying the loss by the number of processes would double them under DDP. One label per row makes the
    # per-process mean, averaged by DDP, already the global mean.
    accepts_loss_kwargs = False

    def __init__(self, config: BiRNNConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.birnn = BiRNNModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.output_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> tuple | SequenceClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Class ids (or floats for regression when `num_labels == 1`).
        """
        outputs = self.birnn(
            input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(self.dropout(outputs.pooler_output))

        loss = None
        if labels is not None:
            loss = self.loss_function(labels, logits, self.config, **kwargs)

        if not (return_dict if return_dict is not None else self.config.return_dict):
            output = (logits,) + ((outputs.hidden_states,) if outputs.hidden_states is not None else ())
            return ((loss,) + output) if loss is not None else output
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


__all__ = [
    "BiRNNForMaskedLM",
    "BiRNNForSequenceClassification",
    "BiRNNForTokenClassification",
    "BiRNNModel",
    "BiRNNPreTrainedModel",
]
