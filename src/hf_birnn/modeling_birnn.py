"""PyTorch BiRNN model: a deep bidirectional recurrent network (RNN, GRU or LSTM cells) with transformers heads.

Each layer computes, for every step t of a sequence of inputs X_t,

    H→_t = φ(X_t W_xh^(f) + H→_{t-1} W_hh^(f) + b_h^(f))      (forward direction, t = 1 … T)
    H←_t = φ(X_t W_xh^(b) + H←_{t+1} W_hh^(b) + b_h^(b))      (backward direction, t = T … 1)
    H_t  = [H→_t ; H←_t]                                     (the next layer's input)

and a task head reads H_t of the last layer (token classification: O_t = H_t W_hq + b_q).

Padding never changes an output. `PaddingExactRunner` turns each row's real tokens into a span that starts at step 0,
runs the forward direction over the padded batch with the plain (cuDNN / oneDNN) kernel, and runs the backward
direction on each row reversed *within its own length*, so it starts at the row's own last token. Rows are sorted
by length and run in groups cut to their longest row (`length_groups`), because a recurrence pays for every padded
step; a row's outputs never depend on its batch mates, so the groups change only the work done.
"""

import os
from dataclasses import dataclass

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    CausalLMOutput,
    MaskedLMOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.utils import ModelOutput, can_return_tuple

from .configuration_birnn import BiRNNConfig

RNN_CLASSES: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
IGNORE_INDEX = -100


# ---------------------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------------------


def build_recurrence(config: BiRNNConfig, input_size: int, hidden_size: int) -> nn.RNNBase:
    """One unidirectional single-layer cell of the configured type; the two directions are separate modules
    because they may have different numbers of hidden units."""
    rnn_class = RNN_CLASSES[config.cell_type]
    extra = {"nonlinearity": config.nonlinearity} if config.cell_type == "rnn" else {}
    return rnn_class(input_size, hidden_size, num_layers=1, **extra)  # steps first: nn.RNN's own layout


class BiRNNLayer(GradientCheckpointingLayer):
    """One bidirectional layer on aligned, steps-first rows (each row's real steps first, see `SpanLayout`):
    (steps, rows, input width) → H_t = [H→_t ; H←_t], (steps, rows, output_size)."""

    def __init__(self, config: BiRNNConfig, layer_idx: int):
        super().__init__()
        input_size = config.token_embedding_size if layer_idx == 0 else config.output_size
        self.forward_rnn = build_recurrence(config, input_size, config.hidden_size)
        self.backward_rnn = (
            build_recurrence(config, input_size, config.backward_hidden_size) if config.bidirectional else None
        )

    def forward(self, aligned_inputs: torch.Tensor, layout: "SpanLayout") -> torch.Tensor:
        forward_states, _ = self.forward_rnn(aligned_inputs)
        if self.backward_rnn is None:
            return forward_states
        reversed_states, _ = self.backward_rnn(layout.reverse_within_lengths(aligned_inputs))
        return torch.cat([forward_states, layout.reverse_within_lengths(reversed_states)], dim=-1)


class WordDropout(nn.Module):
    """Zeroes whole token embeddings with probability `p` in training (no rescaling: a dropped word is absent)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return embeddings
        keep = embeddings.new_empty(embeddings.shape[:2] + (1,)).bernoulli_(1 - self.p)
        return embeddings * keep


class TokenSpellingEncoder(nn.Module):
    """Spelling features of each token id: a character CNN (Ma & Hovy 2016) over the UTF-8 bytes of the token's
    text as written, max-pooled over positions. They let rare and unseen words share what their spelling says
    (capitals, digits, suffixes) where a rarely trained embedding row says little.

    The spellings of the whole vocabulary sit in the `token_spellings` buffer (one row of symbols per token id),
    filled from the tokenizer by `set_token_spellings` and saved with the weights: the features depend on the
    token id alone, so the model keeps taking `input_ids` only (pipelines, ONNX export).
    """

    PADDING, WORD_START, CONTINUATION = 0, 257, 258  # byte b is stored as b + 1
    NUM_SYMBOLS = 259

    def __init__(self, config: BiRNNConfig):
        super().__init__()
        self.register_buffer(
            "token_spellings", torch.zeros(config.vocab_size, config.max_token_characters, dtype=torch.int16)
        )
        self.byte_embeddings = nn.Embedding(self.NUM_SYMBOLS, config.character_embedding_size, padding_idx=0)
        self.convolution = nn.Conv1d(
            config.character_embedding_size,
            config.character_filters,
            config.character_kernel_size,
            padding=config.character_kernel_size // 2,
        )

    @classmethod
    def spell(cls, token: str, max_characters: int) -> list[int]:
        """Marker + UTF-8 bytes of a token's text, cut or zero-padded to `max_characters`. A WordPiece `##`
        prefix becomes the continuation marker."""
        marker = cls.CONTINUATION if token.startswith("##") else cls.WORD_START
        text = token[2:] if marker == cls.CONTINUATION else token
        symbols = [marker] + [byte + 1 for byte in text.encode("utf-8")]
        return (symbols + [cls.PADDING] * max_characters)[:max_characters]

    def forward(self, input_ids: torch.LongTensor) -> torch.Tensor:
        spellings = self.token_spellings[input_ids].flatten(0, 1).long()  # (batch * seq_len, max_token_characters)
        byte_vectors = self.byte_embeddings(spellings).transpose(1, 2)  # (batch * seq_len, width, characters)
        features = self.convolution(byte_vectors).amax(dim=-1)
        return features.view(*input_ids.shape, features.size(-1))


class PretrainedWordVectors(nn.Module):
    """The pretrained vector of each token id (GloVe, fastText, word2vec): a table of `num_word_vectors` rows and
    `token_vector_rows`, the row of each token id. Case variants of a word share its row ("Paris", "PARIS",
    "paris"); a token without a vector points at the extra zero row at the end. Both are filled by
    `set_word_vectors` and saved with the weights. The table is frozen unless `freeze_word_vectors=False`."""

    def __init__(self, config: BiRNNConfig):
        super().__init__()
        self.no_vector_row = config.num_word_vectors
        table = torch.zeros(config.num_word_vectors + 1, config.embedding_size)
        self.vectors = nn.Parameter(table, requires_grad=not config.freeze_word_vectors)
        self.register_buffer(
            "token_vector_rows", torch.full((config.vocab_size,), self.no_vector_row, dtype=torch.int32)
        )

    def forward(self, input_ids: torch.LongTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the vectors (batch, seq_len, width), whether each token has one (batch, seq_len))."""
        rows = self.token_vector_rows[input_ids].long()
        vectors = nn.functional.embedding(rows, self.vectors, padding_idx=self.no_vector_row)
        return vectors, rows != self.no_vector_row


class BiRNNEmbeddings(nn.Module):
    """The one place that decides a token's vector: its learned embedding plus its pretrained word vector (if
    any), word dropout on that, then its spelling features appended, then dropout.

    With word vectors, only the first `learned_vocab_size` ids (sub-word pieces and the words of the training
    data) have a learned row, which starts at zero for a token that has a vector: a learned correction of it. The
    other ids, words known from the vectors alone, use the padding row (zero, never trained) and their vector.
    """

    def __init__(self, config: BiRNNConfig):
        super().__init__()
        self.learned_vocab_size = config.learned_vocab_size
        self.unlearned_id = config.pad_token_id
        self.word_embeddings = nn.Embedding(
            config.learned_vocab_size, config.embedding_size, padding_idx=config.pad_token_id
        )
        self.word_vectors = PretrainedWordVectors(config) if config.num_word_vectors > 0 else None
        self.token_spelling = TokenSpellingEncoder(config) if config.character_filters > 0 else None
        self.word_dropout = WordDropout(config.word_dropout)
        self.correction_dropout = config.vector_correction_dropout
        self.dropout = nn.Dropout(config.embedding_dropout)
        self.vocab_size = config.vocab_size

    def word_vectors_of(self, input_ids: torch.LongTensor) -> torch.Tensor:
        """(batch, seq_len, embedding_size): what `inputs_embeds` stands for."""
        learned_ids = input_ids
        if self.learned_vocab_size < self.vocab_size:
            learned_ids = torch.where(input_ids < self.learned_vocab_size, input_ids, self.unlearned_id)
        embeddings = self.word_embeddings(learned_ids)
        if self.word_vectors is None:
            return embeddings
        vectors, has_vector = self.word_vectors(input_ids)
        if self.training and self.correction_dropout > 0:
            # a training word seen as an unseen word is: its vector alone (Lample et al. 2016 train <UNK> so)
            dropped = has_vector & (torch.rand_like(vectors[..., 0]) < self.correction_dropout)
            embeddings = embeddings.masked_fill(dropped.unsqueeze(-1), 0.0)
        return embeddings + vectors

    def forward(
        self, input_ids: torch.LongTensor | None = None, inputs_embeds: torch.Tensor | None = None
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_vectors_of(input_ids)
        token_vectors = self.word_dropout(inputs_embeds)  # the spelling stays: a dropped word is still spelt out
        if self.token_spelling is not None:
            token_vectors = torch.cat([token_vectors, self.token_spelling(input_ids)], dim=-1)
        return self.dropout(token_vectors)


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
# Linear-chain CRF
# ---------------------------------------------------------------------------------------------------------------------


class LinearChainCRF(nn.Module):
    """A linear-chain CRF over tag ids: score(y) = Σ_t (E_t[y_t] + T[y_{t-1}, y_t]) + start[y_1] + end[y_T].

    Works on aligned rows (each row's real steps first, `lengths` of them; see `SpanLayout`), in float32 whatever
    the model's dtype: the forward algorithm and Viterbi sum hundreds of scores, which bfloat16 cannot hold apart.
    Tags may be partially observed: steps labelled `-100` are summed over (Tsuboi et al. 2008), so training with
    `-100` on non-first sub-tokens needs no special case. Forbidden transitions (`allowed_transitions`) score
    `FORBIDDEN`.
    """

    FORBIDDEN = -1e4  # finite, so that a forbidden gold path gives a large loss rather than inf/NaN gradients

    def __init__(self, num_tags: int, allowed: torch.Tensor | None = None):
        super().__init__()
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))
        self.start_transitions = nn.Parameter(torch.zeros(num_tags))
        self.end_transitions = nn.Parameter(torch.zeros(num_tags))
        # plain data, not a buffer: the constraints follow from the config, and transformers builds models on the
        # meta device before loading, where a derived buffer would have to be rebuilt
        self.allowed = None if allowed is None else allowed.tolist()

    @property
    def transition_penalty(self) -> torch.Tensor:
        """(C + 2, C + 2) additive scores: 0 where allowed, `FORBIDDEN` elsewhere; START = C, END = C + 1."""
        num_tags = self.transitions.size(0)
        if self.allowed is None:
            return torch.zeros(num_tags + 2, num_tags + 2, device=self.transitions.device)
        allowed = torch.tensor(self.allowed, dtype=torch.bool, device=self.transitions.device)
        return (~allowed).float() * self.FORBIDDEN

    def _scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(transitions (C, C), start (C,), end (C,)) in float32, forbidden moves penalised."""
        num_tags = self.transitions.size(0)
        penalty = self.transition_penalty
        return (
            self.transitions.float() + penalty[:num_tags, :num_tags],
            self.start_transitions.float() + penalty[num_tags, :num_tags],
            self.end_transitions.float() + penalty[:num_tags, num_tags + 1],
        )

    def _forward_scores(self, emissions: torch.Tensor, lengths: torch.Tensor, reduce=torch.logsumexp):
        """α_t(c) (batch, seq_len, C): the paths' scores up to step t ending in tag c, combined by `reduce`
        (`logsumexp`: the forward algorithm; `amax`: Viterbi). α stays put after each row's end."""
        transitions, start, _ = self._scores()
        alpha = start + emissions[:, 0]
        alphas = [alpha]
        for t in range(1, emissions.size(1)):
            step = reduce(alpha.unsqueeze(2) + transitions + emissions[:, t].unsqueeze(1), dim=1)
            alpha = torch.where((t < lengths).unsqueeze(1), step, alpha)
            alphas.append(alpha)
        return torch.stack(alphas, dim=1)

    def _backward_scores(self, emissions: torch.Tensor, lengths: torch.Tensor, reduce=torch.logsumexp):
        """β_t(c) (batch, seq_len, C): the paths' scores after step t given tag c there, the end included."""
        transitions, _, end = self._scores()
        beta = end.expand_as(emissions[:, 0])
        betas = [beta]
        for t in range(emissions.size(1) - 2, -1, -1):
            step = reduce(transitions + (emissions[:, t + 1] + beta).unsqueeze(1), dim=2)
            beta = torch.where((t + 1 < lengths).unsqueeze(1), step, end.expand_as(step))
            betas.append(beta)
        return torch.stack(betas[::-1], dim=1)

    def log_partition(self, emissions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """log Z per row: the log-sum of the scores of every tag path (0 for a batch of no steps)."""
        emissions = emissions.float()
        if emissions.size(1) == 0:
            return emissions.sum(dim=(1, 2))
        _, _, end = self._scores()
        return torch.logsumexp(self._forward_scores(emissions, lengths)[:, -1] + end, dim=1)

    def negative_log_likelihood(self, emissions: torch.Tensor, tags: torch.Tensor, lengths: torch.Tensor):
        """Per-row −log p(observed tags); unobserved (`-100`) steps are marginalised, empty rows give 0."""
        emissions = emissions.float()
        observed = tags >= 0
        gold_only = torch.full_like(emissions, self.FORBIDDEN).scatter(2, tags.clamp(min=0).unsqueeze(2), 0.0)
        constrained = emissions + torch.where(observed.unsqueeze(2), gold_only, torch.zeros_like(emissions))
        nll = self.log_partition(emissions, lengths) - self.log_partition(constrained, lengths)
        return nll * (lengths > 0)

    def max_marginals(self, emissions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(batch, seq_len, C): the score of the best path through tag c at step t, minus the best path's score
        (so 0 on the Viterbi path, negative elsewhere; 0 past each row's end). Its argmax at every step is the
        Viterbi path."""
        emissions = emissions.float()
        if emissions.size(1) == 0:
            return emissions.clone()
        forward_best = self._forward_scores(emissions, lengths, reduce=torch.amax)
        through = forward_best + self._backward_scores(emissions, lengths, reduce=torch.amax)
        within_length = torch.arange(emissions.size(1), device=emissions.device) < lengths[:, None]
        return (through - through.amax(dim=2, keepdim=True)) * within_length.unsqueeze(-1)

    def viterbi_decode(self, emissions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The best tag path of each row (batch, seq_len); steps past a row's length are 0."""
        path = self.max_marginals(emissions, lengths).argmax(dim=2)
        steps = torch.arange(emissions.size(1), device=emissions.device)
        return path.masked_fill(steps >= lengths.unsqueeze(1), 0)


def allowed_transitions(id2label: dict[int, str], scheme: str) -> torch.Tensor:
    """(C + 2, C + 2) boolean matrix of the moves a tag scheme allows, START = C and END = C + 1.

    IOB2: I-X only after B-X or I-X. BIOES: I-X and E-X only after B-X or I-X; B-X, S-X, O only after O, E-*, S-*
    or START; a row ends only after O, E-* or S-*.
    """
    num_tags = len(id2label)
    start, end = num_tags, num_tags + 1
    names = {**{i: id2label[i] for i in range(num_tags)}, start: "START", end: "END"}

    def prefix_and_type(index: int) -> tuple[str, str]:
        name = names[index]
        return (name[0], name[2:]) if name[1:2] == "-" else (name, "")

    allowed = torch.ones(num_tags + 2, num_tags + 2, dtype=torch.bool, device="cpu")  # not meta: read at once
    for i in range(num_tags + 2):
        for j in range(num_tags + 2):
            (from_prefix, from_type), (to_prefix, to_type) = prefix_and_type(i), prefix_and_type(j)
            inside = to_prefix in ("I", "E") if scheme == "bioes" else to_prefix == "I"
            if j == start or i == end:
                allowed[i, j] = False
            elif inside:
                allowed[i, j] = from_prefix in ("B", "I") and from_type == to_type
            elif scheme == "bioes" and (to_prefix in ("B", "S", "O") or j == end):
                allowed[i, j] = from_prefix in ("O", "E", "S") or i == start
    return allowed


def crf_logits(crf: LinearChainCRF, emissions: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """The CRF's max-marginals of each row's span of `emissions` (batch, seq_len, C), laid out as the rows are
    (any padding side), 0 at padding: what a CRF tagger returns as `logits` outside training."""
    layout = SpanLayout.from_attention_mask(attention_mask, *emissions.shape[:2], device=emissions.device)
    return layout.restore(crf.max_marginals(layout.align(emissions), layout.lengths))


def crf_from_config(config: BiRNNConfig) -> LinearChainCRF:
    """The CRF of `config`'s labels, with the transitions its `crf_constraints` scheme forbids."""
    allowed = allowed_transitions(config.id2label, config.crf_constraints) if config.crf_constraints else None
    return LinearChainCRF(config.num_labels, allowed)


# ---------------------------------------------------------------------------------------------------------------------
# The padding seam: inputs checked, rows aligned, layers run in length groups, states put back in place
# ---------------------------------------------------------------------------------------------------------------------


def is_exporting() -> bool:
    """True while `torch.export` (and so `torch.onnx.export`) or `torch.jit.trace` records the forward. The graph
    must then hold for every input: host-side checks and the shortcuts that skip an index map a batch does not
    need are data-dependent branches, so they are left out and every map is built."""
    return torch.compiler.is_exporting() or torch.jit.is_tracing()


def gather_rows(sequence: torch.Tensor, source_rows: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The vectors of `sequence` (…, width), taken as one list of rows, at `source_rows`, viewed as `shape`.
    `index_select` copies whole rows where `gather` would index every element."""
    width = sequence.size(-1)
    # reshape(-1, …), not flatten: the ONNX export would fold a flatten's row count into the example's constant
    return sequence.reshape(-1, width).index_select(0, source_rows.flatten()).view(shape)


@dataclass
class SpanLayout:
    """Where each row's real tokens lie: one contiguous span `[start, start + length)` per row (right padding,
    left padding, or both), and the index maps between that and the aligned layout, where every span starts at
    step 0 and padding only ever follows the real tokens."""

    lengths: torch.Tensor  # (batch,) real tokens per row
    starts: torch.Tensor  # (batch,) position of each row's first real token (0 if empty)
    align_index: torch.Tensor | None  # (batch, seq_len) source position of each aligned step; None if all start at 0
    restore_index: torch.Tensor | None  # (batch, seq_len) source aligned step of each position; the inverse
    reversal_rows: torch.Tensor | None  # (seq_len, batch) the within-length reversal, as rows of flattened
    # steps-first states; None when no row is padded

    @classmethod
    def from_attention_mask(cls, attention_mask: torch.Tensor | None, batch_size: int, seq_len: int, device):
        if attention_mask is None:
            lengths = torch.full((batch_size,), seq_len, dtype=torch.long, device=device)
            return cls(lengths, torch.zeros_like(lengths), align_index=None, restore_index=None, reversal_rows=None)
        real = attention_mask.bool()
        lengths = real.sum(dim=1)
        if seq_len == 0:  # argmax needs a step to look at
            return cls(lengths, torch.zeros_like(lengths), align_index=None, restore_index=None, reversal_rows=None)
        starts = torch.where(lengths > 0, real.int().argmax(dim=1), torch.zeros_like(lengths))
        positions = torch.arange(seq_len, device=device)
        exporting = is_exporting()
        if not exporting:
            span = (positions >= starts[:, None]) & (positions < (starts + lengths)[:, None])
            if not torch.equal(span, real):
                holed_rows = (span != real).any(dim=1).nonzero().flatten().tolist()
                raise ValueError(
                    "`attention_mask` must mark one contiguous span of real tokens per row (right or left "
                    f"padding), but rows {holed_rows[:10]} have holes."
                )
        align_index = restore_index = reversal_rows = None
        if exporting or bool(starts.any()):
            # rotations that wrap around without `%`: the ONNX exporter cannot take a modulus by a symbolic length
            shifted, unshifted = positions + starts[:, None], positions - starts[:, None]
            align_index = torch.where(shifted < seq_len, shifted, shifted - seq_len)
            restore_index = torch.where(unshifted >= 0, unshifted, unshifted + seq_len)
        if exporting or bool((lengths < seq_len).any()):
            reversal_rows = cls._reversal_rows(lengths, positions)
        return cls(lengths, starts, align_index=align_index, restore_index=restore_index, reversal_rows=reversal_rows)

    @classmethod
    def of_aligned_rows(cls, lengths: torch.Tensor, seq_len: int) -> "SpanLayout":
        """The layout of rows that are already aligned (each row's `lengths` real steps first)."""
        positions = torch.arange(seq_len, device=lengths.device)
        reversal_rows = cls._reversal_rows(lengths, positions) if bool((lengths < seq_len).any()) else None
        starts = torch.zeros_like(lengths)
        return cls(lengths, starts, align_index=None, restore_index=None, reversal_rows=reversal_rows)

    @staticmethod
    def _reversal_rows(lengths: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        reversed_positions = lengths[:, None] - 1 - positions
        source_steps = torch.where(reversed_positions >= 0, reversed_positions, positions)  # (batch, seq_len)
        batch_size = lengths.numel()
        return (source_steps * batch_size + torch.arange(batch_size, device=lengths.device)[:, None]).T

    def real_steps(self, seq_len: int) -> torch.Tensor:
        """(batch, seq_len) bool: the real tokens in the aligned layout."""
        return torch.arange(seq_len, device=self.lengths.device) < self.lengths[:, None]

    def align(self, sequence: torch.Tensor) -> torch.Tensor:
        """(batch, seq_len, …) as the caller laid it out → each row's span first."""
        return self._reorder_steps(sequence, self.align_index)

    def restore(self, aligned: torch.Tensor) -> torch.Tensor:
        """The inverse of `align`."""
        return self._reorder_steps(aligned, self.restore_index)

    @staticmethod
    def _reorder_steps(sequence: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        if index is None:
            return sequence
        return sequence.gather(1, index.view(*index.shape, *([1] * (sequence.dim() - 2))).expand_as(sequence))

    def reverse_within_lengths(self, aligned: torch.Tensor) -> torch.Tensor:
        """Reverse each row of aligned (seq_len, batch, width) within its length; padding stays where it is."""
        if self.reversal_rows is None:
            return aligned.flip(0)
        return gather_rows(aligned, self.reversal_rows, aligned.shape)

    def steps_first_source_rows(self, rows: torch.Tensor, group_len: int, seq_len: int) -> torch.Tensor:
        """(group_len, len(rows)): where the first `group_len` aligned steps of `rows` lie among the flattened
        (batch × seq_len) vectors of a batch-first sequence."""
        if self.align_index is None:
            steps = torch.arange(group_len, device=rows.device)[:, None]
        else:
            steps = self.align_index[rows, :group_len].T
        return rows * seq_len + steps

    def batch_order_source_rows(self, seq_len: int, groups: list[torch.Tensor], group_lens: list[int]):
        """(batch, seq_len): where each position's state lies among the groups' steps-first states, flattened and
        concatenated in group order with one zero row after them, which every padding position takes."""
        device = self.lengths.device
        aligned_steps = self.restore_index  # the aligned step that each position's state comes from
        if aligned_steps is None:
            aligned_steps = torch.arange(seq_len, device=device)[None]
        if len(groups) == 1:  # a closed form, so that an exported graph holds no per-group index assignments
            batch_size = self.lengths.numel()
            rows_in_states = aligned_steps * batch_size + torch.arange(batch_size, device=device)[:, None]
            zero_row = seq_len * batch_size
        else:
            group_start, rows_per_step, row_in_group = (torch.empty_like(self.lengths) for _ in range(3))
            zero_row = 0
            for rows, group_len in zip(groups, group_lens, strict=True):
                group_start[rows], rows_per_step[rows] = zero_row, rows.numel()
                row_in_group[rows] = torch.arange(rows.numel(), device=device)
                zero_row += group_len * rows.numel()
            rows_in_states = group_start[:, None] + aligned_steps * rows_per_step[:, None] + row_in_group[:, None]
        return torch.where(aligned_steps < self.lengths[:, None], rows_in_states, zero_row)


# The cost of a group of rows, in units of one row's step, is its length × (rows + STEP_OVERHEAD_ROWS) +
# GROUP_OVERHEAD: a recurrence step of a few rows costs more than its share (`scripts/benchmarks` measures it), and
# each group pays a fixed cost for its calls, which keeps batches of similar lengths whole.
STEP_OVERHEAD_ROWS = 4
GROUP_OVERHEAD = 32
GROUP_ROWS_MULTIPLE = 4  # groups hold a multiple of this many rows (and the rest), which keeps the search short


def length_groups(lengths: torch.Tensor) -> list[torch.Tensor] | None:
    """Row indices of a batch sorted by length, longest first, split into the groups of least cost (above); None
    where one group is cheapest, or while exporting, where the groups would be baked into the graph."""
    num_rows = lengths.numel()
    if is_exporting() or num_rows < 2 * GROUP_ROWS_MULTIPLE:
        return None
    sorted_lengths, order = lengths.sort(descending=True)
    longest = sorted_lengths.tolist()  # a group starting at sorted row i is cut to length longest[i]
    bounds = list(range(0, num_rows, GROUP_ROWS_MULTIPLE)) + [num_rows]
    # best_cost[j]: the least cost of running rows [0, bounds[j]); first_bound[j]: where its last group starts
    best_cost, first_bound = [0.0] + [float("inf")] * (len(bounds) - 1), [0] * len(bounds)
    for j in range(1, len(bounds)):
        for i in range(j):
            rows = bounds[j] - bounds[i]
            cost = best_cost[i] + longest[bounds[i]] * (rows + STEP_OVERHEAD_ROWS) + GROUP_OVERHEAD
            if cost < best_cost[j]:
                best_cost[j], first_bound[j] = cost, i
    group_sizes, j = [], len(bounds) - 1
    while j > 0:
        group_sizes.append(bounds[j] - bounds[first_bound[j]])
        j = first_bound[j]
    return list(order.split(group_sizes[::-1])) if len(group_sizes) > 1 else None


def check_model_inputs(
    config: BiRNNConfig,
    input_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
) -> None:
    """Name what is wrong with a model's inputs before torch fails somewhere deeper (or, worse, does not). The
    eager model and `OnnxRuntimeModel` both call it."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("Pass exactly one of `input_ids` or `inputs_embeds`.")
    if input_ids is not None:
        if input_ids.dtype == torch.bool or input_ids.is_floating_point() or input_ids.is_complex():
            raise TypeError(f"`input_ids` must hold integer token ids, got dtype {input_ids.dtype}.")
        if input_ids.dim() != 2:
            raise ValueError(f"`input_ids` must have shape (batch, seq_len), got {tuple(input_ids.shape)}.")
        if input_ids.numel() and not is_exporting() and (input_ids.min() < 0 or input_ids.max() >= config.vocab_size):
            raise ValueError(
                f"`input_ids` must lie in [0, vocab_size={config.vocab_size}), got values from "
                f"{int(input_ids.min())} to {int(input_ids.max())}: does the tokenizer match the model?"
            )
        shape = tuple(input_ids.shape)
    else:
        if config.character_filters > 0 or config.num_word_vectors > 0:
            raise ValueError(
                "This model looks up spelling features or word vectors by token id: pass `input_ids`, not "
                "`inputs_embeds`."
            )
        if inputs_embeds.dim() != 3 or inputs_embeds.size(-1) != config.embedding_size:
            raise ValueError(
                f"`inputs_embeds` must have shape (batch, seq_len, embedding_size={config.embedding_size}), "
                f"got {tuple(inputs_embeds.shape)}."
            )
        shape = tuple(inputs_embeds.shape[:2])
    if attention_mask is None:
        return
    if tuple(attention_mask.shape) != shape:
        raise ValueError(f"`attention_mask` must have the inputs' shape {shape}, got {tuple(attention_mask.shape)}.")
    if attention_mask.dtype != torch.bool and attention_mask.numel() and not is_exporting():
        if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
            values = sorted(set(attention_mask.unique().tolist()) - {0, 1})
            raise ValueError(
                f"`attention_mask` must hold only 0 (padding) and 1 (real tokens), got also {values[:5]}: was it "
                "built from something other than the tokenizer's mask?"
            )


class PaddingExactRunner:
    """Runs the recurrent layers over a padded batch so that each row gets the outputs it would get alone: the one
    place that knows about padding, length groups and the export branches.

    Built from a batch's `attention_mask`, it aligns the rows (`SpanLayout`), splits them into length groups,
    runs every layer on each group's aligned, steps-first rows, and puts each layer's states back in place, in
    batch order, with zeros at the padding. Those batch-order states are what the next layer reads, so the
    hidden states handed out are the live activations. A batch of 0 steps runs one padding step (outputs zero)
    and is cut back, since `nn.RNN` refuses empty sequences.
    """

    def __init__(self, attention_mask: torch.Tensor | None, batch_size: int, seq_len: int, device: torch.device):
        self.num_steps = seq_len
        self.run_len = max(seq_len, 1) if not is_exporting() else seq_len
        if self.run_len > seq_len:  # the added step is padding
            if attention_mask is None:
                attention_mask = torch.ones(batch_size, seq_len, dtype=torch.long, device=device)
            attention_mask = nn.functional.pad(attention_mask, (0, self.run_len - seq_len))
        self.layout = SpanLayout.from_attention_mask(attention_mask, batch_size, self.run_len, device)
        self.padding = None if attention_mask is None else ~attention_mask.bool()  # (batch, run_len)
        groups = length_groups(self.layout.lengths)
        if groups is None:
            self.groups, self.group_lens = [torch.arange(batch_size, device=device)], [self.run_len]
            self.group_layouts = [self.layout]
        else:
            self.groups = groups
            self.group_lens = [max(int(self.layout.lengths[rows].max()), 1) for rows in groups]
            self.group_layouts = [
                SpanLayout.of_aligned_rows(self.layout.lengths[rows], group_len)
                for rows, group_len in zip(groups, self.group_lens, strict=True)
            ]
        self.input_rows = [
            self.layout.steps_first_source_rows(rows, group_len, self.run_len)
            for rows, group_len in zip(self.groups, self.group_lens, strict=True)
        ]
        self.output_rows = self.layout.batch_order_source_rows(self.run_len, self.groups, self.group_lens)

    @property
    def lengths(self) -> torch.Tensor:
        return self.layout.lengths

    def run_layers(
        self, layers: nn.ModuleList, token_vectors: torch.Tensor, between_layers: nn.Module
    ) -> list[torch.Tensor]:
        """[the token vectors, H_t of layer 1, …, of the last layer], each (batch, seq_len, width)."""
        hidden_states = self._padded(token_vectors)
        if self.padding is not None:  # what the first layer reads, handed out with zeros at the padding
            hidden_states = hidden_states.masked_fill(self.padding.unsqueeze(-1), 0.0)
        all_states = [hidden_states]
        for layer_idx, layer in enumerate(layers):
            if layer_idx > 0:
                hidden_states = between_layers(hidden_states)
            hidden_states = self._run_layer(layer, hidden_states)
            all_states.append(hidden_states)
        if self.run_len == self.num_steps:
            return all_states
        return [states[:, : self.num_steps] for states in all_states]

    def _padded(self, sequence: torch.Tensor) -> torch.Tensor:
        if self.run_len == self.num_steps:
            return sequence
        return nn.functional.pad(sequence, (0, 0, 0, self.run_len - self.num_steps))

    def _run_layer(self, layer: BiRNNLayer, hidden_states: torch.Tensor) -> torch.Tensor:
        """One layer over the batch (batch, run_len, width): each group gathered aligned and steps first, run, and
        every state gathered back in place."""
        width = hidden_states.size(-1)
        grouped_states = []
        for rows, group_len, group_layout, input_rows in zip(
            self.groups, self.group_lens, self.group_layouts, self.input_rows, strict=True
        ):
            aligned_inputs = gather_rows(hidden_states, input_rows, (group_len, rows.numel(), width))  # steps first
            states = layer(aligned_inputs, layout=group_layout)  # (group_len, rows, output width)
            grouped_states.append(states.reshape(-1, states.size(-1)))
        zero_row = grouped_states[0].new_zeros(1, grouped_states[0].size(-1))
        batch_size = hidden_states.size(0)
        states_shape = (batch_size, self.run_len, zero_row.size(-1))
        return gather_rows(torch.cat([*grouped_states, zero_row]), self.output_rows, states_shape)

    def pool(self, last_states: torch.Tensor, forward_size: int) -> torch.Tensor:
        """[H→ at each row's last real token ; H← at its first] from the last layer's states (batch, seq_len,
        width); zeros for a row without tokens."""
        if last_states.size(1) == 0:
            return last_states.new_zeros(last_states.size(0), last_states.size(-1))
        batch_index = torch.arange(last_states.size(0), device=last_states.device)
        last_real = (self.layout.starts + self.layout.lengths - 1).clamp(min=0)
        pooled = last_states[batch_index, last_real]
        if forward_size < last_states.size(-1):
            first_backward = last_states[batch_index, self.layout.starts, forward_size:]
            pooled = torch.cat([pooled[:, :forward_size], first_backward], dim=-1)
        return pooled * (self.layout.lengths > 0)[:, None]

    def run_in_groups(self, run, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """`run(input_ids, attention_mask) → {name: output}` (an exported graph) on each length group, cut to the
        steps its rows' spans cover, with the outputs put back in batch order; per-token outputs are 0 at the steps
        a group's cut leaves out."""
        if len(self.groups) == 1:
            return run(input_ids, attention_mask)
        starts, ends = self.layout.starts, self.layout.starts + self.layout.lengths
        seq_len = input_ids.size(1)
        grouped_outputs = []
        for rows in self.groups:
            begin = int(starts[rows].min())
            end = max(int(ends[rows].max()), begin + 1)
            outputs = run(input_ids[rows, begin:end], attention_mask[rows, begin:end])
            grouped_outputs.append(
                {
                    name: nn.functional.pad(output, (0, 0, begin, seq_len - end)) if output.dim() == 3 else output
                    for name, output in outputs.items()
                }
            )
        batch_order = torch.cat(self.groups).argsort()
        return {name: torch.cat([out[name] for out in grouped_outputs])[batch_order] for name in grouped_outputs[0]}


# ---------------------------------------------------------------------------------------------------------------------
# Pretrained model base
# ---------------------------------------------------------------------------------------------------------------------


class BiRNNPreTrainedModel(PreTrainedModel):
    config_class = BiRNNConfig
    config: BiRNNConfig
    base_model_prefix = "birnn"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
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
        A `model.safetensors` that cannot be read (truncated, corrupted) raises an `OSError` naming the folder.
        Weights missing from the checkpoint are an error (`check_loaded_weights`), not transformers' warning."""
        if use_safetensors is False:
            raise ValueError("BiRNN models load weights from safetensors only; `use_safetensors=False` is refused.")
        wants_loading_info = kwargs.pop("output_loading_info", False)
        new_head_asked = kwargs.get("ignore_mismatched_sizes", False) or any(
            name in kwargs for name in ("num_labels", "id2label", "label2id")
        )
        try:
            model, loading_info = super().from_pretrained(
                pretrained_model_name_or_path,
                *model_args,
                use_safetensors=True,
                output_loading_info=True,
                **kwargs,
            )
        except SafetensorError as error:
            raise OSError(
                f"Cannot read the safetensors weights in {pretrained_model_name_or_path} (model.safetensors or a "
                f"shard of it is truncated or corrupted): {error}"
            ) from error
        model.check_loaded_weights(loading_info["missing_keys"], pretrained_model_name_or_path, new_head_asked)
        return (model, loading_info) if wants_loading_info else model

    def check_loaded_weights(self, missing_keys, source, new_head_asked: bool) -> None:
        """Refuse a checkpoint that lacks weights the config calls for (`num_hidden_layers` or `use_crf` edited, a
        wrong folder): the model would run with random layers. A head of its own (classifier, CRF, LM head) may be
        new when the checkpoint is another architecture (a masked LM fine-tuned as a tagger) or when the caller
        asked for new labels (`num_labels`, `id2label`, `ignore_mismatched_sizes`)."""
        prefix = self.base_model_prefix + "."
        encoder_missing = sorted(key for key in missing_keys if key.startswith(prefix) or self.base_model is self)
        head_missing = sorted(set(missing_keys) - set(encoder_missing))
        saved_architectures = getattr(self.config, "architectures", None) or []
        same_architecture = type(self).__name__ in saved_architectures
        if encoder_missing or (head_missing and same_architecture and not new_head_asked):
            raise OSError(
                f"{source} lacks weights that its config calls for: {(encoder_missing + head_missing)[:8]}. Was the "
                "config edited (`num_hidden_layers`, `use_crf`, `character_filters`), or is this another model's "
                "folder? To start a new head on purpose, pass `ignore_mismatched_sizes=True` or new labels."
            )

    def _init_weights(self, module: nn.Module) -> None:
        """transformers' default covers `nn.LSTM` only; here every cell gets Xavier input weights, orthogonal
        recurrent weights (which keep the state's norm through time) and zero biases, with LSTM forget-gate biases
        at 1 (Jozefowicz et al. 2015). Pretrained word vectors are never touched: `set_word_vectors` fills them."""
        if isinstance(module, LinearChainCRF):
            for parameter in (module.transitions, module.start_transitions, module.end_transitions):
                init.zeros_(parameter)
        elif isinstance(module, PretrainedWordVectors):
            return
        elif isinstance(module, nn.Embedding) and self.config.embedding_initializer_range is not None:
            init.normal_(module.weight, mean=0.0, std=self.config.embedding_initializer_range)
            if module.padding_idx is not None:
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.Conv1d):  # the character CNN: N(0, 0.02) filters would barely respond at first
            init.xavier_uniform_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.RNNBase):
            self._init_recurrence(module)
        else:
            super()._init_weights(module)

    @staticmethod
    def _init_recurrence(module: nn.RNNBase) -> None:
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

    def encode(
        self,
        input_ids: torch.LongTensor | None,
        attention_mask: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        output_hidden_states: bool | None,
    ) -> BaseModelOutputWithPooling:
        """A head's view of its inputs: the base model's outputs, as a `ModelOutput` whatever `return_dict` says."""
        return self.base_model(
            input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )

    def token_loss(self, logits: torch.Tensor, labels: torch.Tensor, **loss_kwargs) -> torch.Tensor:
        """transformers' token loss (`self.loss_function`), 0 for a batch without a labelled token, whose mean is 0/0
        (a row of padding only, a masked-LM batch where no token was picked): the CRF head gives 0 there too."""
        if not bool((labels != IGNORE_INDEX).any()):
            return logits.sum() * 0.0
        return self.loss_function(logits, labels, **loss_kwargs)

    def export_outputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """The named tensors an exported graph returns (`hf_birnn.serving.export_onnx`), which
        `OnnxRuntimeModel` turns back into this class's `output_class`."""
        return {"logits": self(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).logits}

    def set_token_spellings(self, tokenizer) -> None:
        """Read the text of every token id from `tokenizer` into the spelling features' table (a config with
        `character_filters > 0` needs it before training; it is saved with the weights). Special tokens get an
        empty spelling."""
        encoder = self.base_model.embeddings.token_spelling
        if encoder is None:
            raise ValueError("This model has no spelling features: set `character_filters` > 0 in its config.")
        if len(tokenizer) > self.config.vocab_size:
            raise ValueError(
                f"The tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {self.config.vocab_size}."
            )
        special_ids = set(tokenizer.all_special_ids)
        max_characters = self.config.max_token_characters
        empty = [TokenSpellingEncoder.PADDING] * max_characters
        rows = [
            empty if token_id in special_ids or token is None else TokenSpellingEncoder.spell(token, max_characters)
            for token_id, token in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))))
        ]
        spellings = torch.zeros_like(encoder.token_spellings)
        spellings[: len(rows)] = torch.tensor(rows, dtype=spellings.dtype)
        encoder.token_spellings.copy_(spellings)

    def set_word_vectors(self, vectors: torch.Tensor, token_vector_rows: torch.Tensor) -> None:
        """Fill the pretrained word vectors: `vectors` (num_word_vectors, embedding_size) and the row of each token
        id, `token_vector_rows` (vocab_size,), -1 for a token without one. The learned rows of tokens that have a
        vector start at zero, so that they learn a correction of it (`BiRNNEmbeddings`)."""
        embeddings = self.base_model.embeddings
        if embeddings.word_vectors is None:
            raise ValueError("This model has no word vectors: build it with `num_word_vectors` > 0 in its config.")
        expected = (self.config.num_word_vectors, self.config.embedding_size)
        if tuple(vectors.shape) != expected or tuple(token_vector_rows.shape) != (self.config.vocab_size,):
            raise ValueError(
                f"Word vectors must have shape {expected} and their token rows ({self.config.vocab_size},), got "
                f"{tuple(vectors.shape)} and {tuple(token_vector_rows.shape)}."
            )
        if token_vector_rows.min() < -1 or token_vector_rows.max() >= self.config.num_word_vectors:
            raise ValueError(f"Token vector rows must lie in [-1, num_word_vectors={self.config.num_word_vectors}).")
        word_vectors = embeddings.word_vectors
        rows = torch.where(token_vector_rows < 0, word_vectors.no_vector_row, token_vector_rows)
        with torch.no_grad():
            word_vectors.vectors[:-1].copy_(vectors)
            word_vectors.token_vector_rows.copy_(rows)
            has_vector = token_vector_rows[: self.config.learned_vocab_size] >= 0
            embeddings.word_embeddings.weight[has_vector] = 0.0


# ---------------------------------------------------------------------------------------------------------------------
# Base model
# ---------------------------------------------------------------------------------------------------------------------


class BiRNNModel(BiRNNPreTrainedModel):
    """Embeddings → stacked bidirectional layers. `last_hidden_state` is H_t of the last layer, zero at padding;
    `pooler_output` is [H→ at each row's last real token ; H← at its first], a sentence representation; and
    `hidden_states` are the token vectors and every layer's H_t, the tensors the next layer reads."""

    def __init__(self, config: BiRNNConfig):
        super().__init__(config)
        self.embeddings = BiRNNEmbeddings(config)
        self.layers = nn.ModuleList([BiRNNLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)])
        self.hidden_dropout = nn.Dropout(config.hidden_dropout)
        self.post_init()

    output_class = BaseModelOutputWithPooling

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, new_embeddings: nn.Embedding) -> None:
        self.embeddings.word_embeddings = new_embeddings

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        r"""
        token_type_ids (`torch.Tensor`, *optional*):
            Accepted and ignored: tokenizers emit it and pipelines pass it on, but a BiRNN has no segments.
        """
        check_model_inputs(self.config, input_ids, inputs_embeds, attention_mask)
        if input_ids is not None:
            input_ids = input_ids.long()
            self._check_tables_filled()
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        token_vectors = self.embeddings(input_ids, inputs_embeds)
        runner = PaddingExactRunner(attention_mask, *token_vectors.shape[:2], device=token_vectors.device)
        all_states = runner.run_layers(self.layers, token_vectors, between_layers=self.hidden_dropout)
        return BaseModelOutputWithPooling(
            last_hidden_state=all_states[-1],
            pooler_output=runner.pool(all_states[-1], forward_size=self.config.hidden_size),
            hidden_states=tuple(all_states) if output_hidden_states else None,
        )

    def export_outputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        return {"last_hidden_state": outputs.last_hidden_state, "pooler_output": outputs.pooler_output}

    def _check_tables_filled(self) -> None:
        """Training with a lookup table that was never filled would learn from zeros without a word."""
        if not self.training or is_exporting():
            return
        spelling, word_vectors = self.embeddings.token_spelling, self.embeddings.word_vectors
        if spelling is not None and not spelling.token_spellings.any():
            raise ValueError(
                "The spelling features' table is empty: call `model.set_token_spellings(tokenizer)` before "
                "training a model with `character_filters` > 0."
            )
        if word_vectors is not None and bool((word_vectors.token_vector_rows == word_vectors.no_vector_row).all()):
            raise ValueError(
                "No token has a word vector: fill them with `hf_birnn.word_vectors.attach_word_vectors(model, "
                "tokenizer, vectors)` before training a model with `num_word_vectors` > 0."
            )


# ---------------------------------------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------------------------------------


def check_class_labels(labels: torch.Tensor, shape: tuple[int, ...], num_classes: int, hint: str) -> None:
    """Token or sequence labels: integer ids of `shape`, each `-100` (no loss) or in `[0, num_classes)`; `hint`
    ends the message of a value out of range."""
    if tuple(labels.shape) != shape:
        raise ValueError(f"`labels` must have shape {shape}, got {tuple(labels.shape)}.")
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"`labels` must hold integer class ids, got dtype {labels.dtype}.")
    if labels.numel() == 0 or is_exporting():
        return
    wrong = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= num_classes))
    if bool(wrong.any()):
        values = sorted(set(labels[wrong].tolist()))
        raise ValueError(f"`labels` must be -100 (no loss) or ids in [0, {num_classes}), got {values[:5]}: {hint}")


def label_map_hint(config: BiRNNConfig) -> str:
    labels = list(config.id2label.items())
    shown = ", ".join(f"{i}: {name!r}" for i, name in labels[:6]) + (", …" if len(labels) > 6 else "")
    return f"does the data's label map match the model's `id2label` ({{{shown}}})?"


class BiRNNForTokenClassification(BiRNNPreTrainedModel):
    """O_t = H_t W_hq + b_q for every token: NER, POS tagging, chunking; optionally decoded by a linear-chain CRF.

    With `config.use_crf` the loss is the CRF's negative log-likelihood per labelled token, and outside training
    `logits` are the CRF's max-marginals: for each step and tag, the score of the best tag path through that tag,
    relative to the best path. Their argmax is the Viterbi path, so the pipeline, `argmax(logits)` and the scores
    the scripts report all agree; the pipeline's softmax of them says how far the best alternative tag falls behind.
    (Posterior marginals would give calibrated per-token probabilities, but their argmax can disagree with the best
    path, e.g. split "New York" into two entities.) In training mode `logits` are the emission scores O_t.
    """

    output_class = TokenClassifierOutput

    def __init__(self, config: BiRNNConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.birnn = BiRNNModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.output_size, config.num_labels)
        self.crf = crf_from_config(config) if config.use_crf else None
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> TokenClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Tag ids in `[0, num_labels)`; `-100` marks tokens without a loss (padding, non-first sub-tokens).
        """
        outputs = self.encode(input_ids, attention_mask, inputs_embeds, output_hidden_states)
        logits = self.classifier(self.dropout(outputs.last_hidden_state))
        if labels is not None:
            check_class_labels(labels, tuple(logits.shape[:2]), self.num_labels, label_map_hint(self.config))
        if self.crf is None:
            loss = self.token_loss(logits, labels, config=self.config, **kwargs) if labels is not None else None
        else:
            loss, logits = self.crf_loss_and_logits(logits, attention_mask, labels, kwargs.get("num_items_in_batch"))
        return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)

    def crf_loss_and_logits(
        self,
        emissions: torch.Tensor,
        attention_mask: torch.Tensor | None,
        labels: torch.LongTensor | None,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(loss, logits) from the emission scores (batch, seq_len, C): the negative log-likelihood per labelled
        token (like the softmax head's, so gradient accumulation and DDP scale the same way) and, outside training,
        the max-marginals as logits (the emissions themselves in training)."""
        loss = None
        if labels is not None:
            layout = SpanLayout.from_attention_mask(attention_mask, *emissions.shape[:2], device=emissions.device)
            aligned_labels = layout.align(labels).masked_fill(~layout.real_steps(labels.size(1)), IGNORE_INDEX)
            nll = self.crf.negative_log_likelihood(layout.align(emissions), aligned_labels, layout.lengths).sum()
            labelled_tokens = num_items_in_batch if num_items_in_batch is not None else (labels >= 0).sum()
            loss = nll / torch.as_tensor(labelled_tokens, device=nll.device).clamp(min=1)
        return loss, emissions if self.training else crf_logits(self.crf, emissions, attention_mask)

    def export_outputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """With a CRF, the graph ends at the emission scores: the CRF's decoding loops over the steps in Python,
        which does not export, so `OnnxRuntimeModel` decodes them (`crf_logits`)."""
        if self.crf is None:
            return super().export_outputs(input_ids, attention_mask)
        states = self.birnn(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state
        return {"emissions": self.classifier(self.dropout(states))}


class BiRNNForMaskedLM(BiRNNPreTrainedModel):
    """Predicts masked tokens from both sides: the way to pretrain a BiRNN. (Next-token prediction is not: the
    backward direction has already read the token to be predicted, see `BiRNNForCausalLM`.)"""

    _tied_weights_keys = {"lm_head.decoder.weight": "birnn.embeddings.word_embeddings.weight"}
    output_class: type[ModelOutput] = MaskedLMOutput

    def __init__(self, config: BiRNNConfig):
        if config.num_word_vectors > 0:
            raise ValueError(
                "A language-model head scores every token id with the tied input embeddings, but word vectors give "
                f"{config.vocab_size} ids only {config.learned_vocab_size} of which have a learned row: pretrain "
                "without word vectors (`num_word_vectors=0`)."
            )
        super().__init__(config)
        self.birnn = BiRNNModel(config)
        self.lm_head = BiRNNLMHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head.decoder = new_embeddings

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> MaskedLMOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Token ids to predict (the original ids at masked positions for a masked LM, the input ids for a causal
            LM, whose loss shifts them), `-100` where no loss is wanted.
        """
        outputs = self.encode(input_ids, attention_mask, inputs_embeds, output_hidden_states)
        logits = self.lm_head(outputs.last_hidden_state)
        loss = None
        if labels is not None:
            check_class_labels(labels, tuple(logits.shape[:2]), self.config.vocab_size, "a tokenizer mismatch?")
            loss = self.token_loss(logits, labels, vocab_size=self.config.vocab_size, **kwargs)
        return self.output_class(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


class BiRNNForCausalLM(BiRNNForMaskedLM):
    """Predicts token t+1 from H→_t: a left-to-right language model, for a unidirectional config.

    A bidirectional config is refused. At step t its backward direction has already read token t+1, the very token to
    predict, so training reaches a perplexity near 1 by copying it, and generation, where token t+1 does not exist yet,
    produces garbage ("time travellerererer"; d2l.ai, "Bidirectional Recurrent Neural Networks"). Pretrain a BiRNN
    with `BiRNNForMaskedLM` instead. (The head is the masked LM's; transformers picks the shifted loss by the class
    name.)
    """

    output_class = CausalLMOutput

    def __init__(self, config: BiRNNConfig):
        self.check_left_to_right(config)
        super().__init__(config)

    @staticmethod
    def check_left_to_right(config: BiRNNConfig) -> None:
        if config.bidirectional:
            raise ValueError(
                "BiRNNForCausalLM predicts the next token, but this config is bidirectional: the backward direction "
                "has already read the token to be predicted, so training reaches a perplexity of ~1 by copying it "
                "and generation produces garbage ('travellerererer'). Pretrain a bidirectional model with "
                "BiRNNForMaskedLM, or set `bidirectional=False` for a left-to-right language model."
            )


class BiRNNForSequenceClassification(BiRNNPreTrainedModel):
    """Classifies a whole sequence from the pooled [H→_T ; H←_1]: the forward state at the last token and the
    backward state at the first, each direction's summary of the whole sequence."""

    # The regression and multi-label losses are batch means that ignore `num_items_in_batch`, so Trainer's
    # multiplying the loss by the number of processes would double them under DDP. One label per row makes the
    # per-process mean, averaged by DDP, already the global mean.
    accepts_loss_kwargs = False
    output_class = SequenceClassifierOutput

    def __init__(self, config: BiRNNConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.birnn = BiRNNModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.output_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            Class ids; floats for regression (`num_labels == 1`), or 0/1 floats of shape `(batch_size, num_labels)`
            for multi-label classification.
        """
        outputs = self.encode(input_ids, attention_mask, inputs_embeds, output_hidden_states)
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = None
        if labels is not None:
            self.check_sequence_labels(labels, batch_size=logits.size(0))
            loss = self.loss_function(labels, logits, self.config, **kwargs)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)

    def check_sequence_labels(self, labels: torch.Tensor, batch_size: int) -> None:
        """The labels each problem type takes (transformers picks the type from `num_labels` and the labels' dtype
        when `config.problem_type` is unset): regression floats (batch,) or (batch, 1); single-label class ids
        (batch,); multi-label floats (batch, num_labels)."""
        problem_type = self.config.problem_type
        if problem_type is None:
            if self.num_labels == 1:
                problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                problem_type = "single_label_classification"
            else:
                problem_type = "multi_label_classification"
        if problem_type == "single_label_classification":
            check_class_labels(labels, (batch_size,), self.num_labels, label_map_hint(self.config))
        elif problem_type == "regression" and tuple(labels.shape) not in ((batch_size,), (batch_size, 1)):
            raise ValueError(f"Regression `labels` must have shape ({batch_size},), got {tuple(labels.shape)}.")
        elif problem_type == "multi_label_classification" and tuple(labels.shape) != (batch_size, self.num_labels):
            raise ValueError(
                f"Multi-label `labels` must be 0/1 floats of shape ({batch_size}, num_labels={self.num_labels}), got "
                f"{tuple(labels.shape)} of {labels.dtype}; for one class id per row pass integer labels."
            )


__all__ = [
    "BiRNNForCausalLM",
    "BiRNNForMaskedLM",
    "BiRNNForSequenceClassification",
    "BiRNNForTokenClassification",
    "BiRNNModel",
    "BiRNNPreTrainedModel",
    "LinearChainCRF",
]
