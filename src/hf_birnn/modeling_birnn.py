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
    CausalLMOutput,
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
    its own length* (`reverse_rows`, its own inverse), runs the same kernel, and reverses back: it starts at each
    row's own last token. This keeps the fast kernel and exports, where `pack_padded_sequence` measured 0.26–0.88×
    the speed of a padded batch on CPU and does not export (see the README).

    The recurrences run with the steps first, (seq_len, batch, width), the layout nn.RNN computes in: with
    `batch_first` every call would transpose its input and output (issue 7). One gather aligns a group of rows and
    puts its steps first (`group_input_rows`); one gather puts every token's state back in place, in batch order,
    with zeros at the padding (`output_rows`).
    """

    lengths: torch.Tensor  # (batch,) number of real tokens per row
    starts: torch.Tensor  # (batch,) position of each row's first real token in the unaligned layout (0 if empty)
    align_index: torch.Tensor | None  # (batch, seq_len) rotation putting each span first; None when all start at 0
    restore_index: torch.Tensor | None  # (batch, seq_len) the inverse rotation
    # (seq_len, batch) reversal within each row's length, as rows of the flattened steps-first states; None when no
    # row is padded
    reverse_rows: torch.Tensor | None

    @classmethod
    def from_attention_mask(
        cls, attention_mask: torch.Tensor | None, batch_size: int, seq_len: int, device
    ) -> "SpanLayout":
        if attention_mask is None:
            lengths = torch.full((batch_size,), seq_len, dtype=torch.long, device=device)
            return cls(lengths, torch.zeros_like(lengths), align_index=None, restore_index=None, reverse_rows=None)

        real = attention_mask.bool()
        lengths = real.sum(dim=1)
        starts = torch.where(lengths > 0, real.int().argmax(dim=1), torch.zeros_like(lengths))
        positions = torch.arange(seq_len, device=device)
        span = (positions >= starts[:, None]) & (positions < (starts + lengths)[:, None])
        exporting = is_exporting()
        if not exporting and not torch.equal(span, real):
            holed_rows = (span != real).any(dim=1).nonzero().flatten().tolist()
            raise ValueError(
                "`attention_mask` must mark one contiguous span of real tokens per row (right or left padding), "
                f"but rows {holed_rows[:10]} have holes."
            )

        align_index = restore_index = reverse_rows = None
        if exporting or bool(starts.any()):
            # rotations that wrap around without `%`: the ONNX exporter cannot take a modulus by a symbolic length
            shifted, unshifted = positions + starts[:, None], positions - starts[:, None]
            align_index = torch.where(shifted < seq_len, shifted, shifted - seq_len)
            restore_index = torch.where(unshifted >= 0, unshifted, unshifted + seq_len)
        if exporting or bool((lengths < seq_len).any()):
            reverse_rows = cls._reverse_rows(lengths, positions)
        return cls(lengths, starts, align_index=align_index, restore_index=restore_index, reverse_rows=reverse_rows)

    @classmethod
    def of_aligned_rows(cls, lengths: torch.Tensor, seq_len: int) -> "SpanLayout":
        """The layout of rows that are already aligned (each row's `lengths` real steps first)."""
        positions = torch.arange(seq_len, device=lengths.device)
        reverse_rows = cls._reverse_rows(lengths, positions) if bool((lengths < seq_len).any()) else None
        starts = torch.zeros_like(lengths)
        return cls(lengths, starts, align_index=None, restore_index=None, reverse_rows=reverse_rows)

    @staticmethod
    def _reverse_rows(lengths: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        reversed_positions = lengths[:, None] - 1 - positions
        source_steps = torch.where(reversed_positions >= 0, reversed_positions, positions)  # (batch, seq_len)
        batch_size = lengths.numel()
        return (source_steps * batch_size + torch.arange(batch_size, device=lengths.device)[:, None]).T

    def aligned_mask(self, seq_len: int) -> torch.Tensor:
        """(batch, seq_len, 1) bool mask of the real tokens in the aligned layout."""
        positions = torch.arange(seq_len, device=self.lengths.device)
        return (positions < self.lengths[:, None]).unsqueeze(-1)

    def group_input_rows(self, rows: torch.Tensor, group_len: int, seq_len: int) -> torch.Tensor:
        """(group_len, len(rows)): where the first `group_len` aligned steps of `rows` lie among the flattened
        (batch × seq_len) token vectors, steps first."""
        if self.align_index is None:
            steps = torch.arange(group_len, device=rows.device)[:, None]
        else:
            steps = self.align_index[rows, :group_len].T
        return rows * seq_len + steps

    def output_rows(self, seq_len: int, groups: list[torch.Tensor] | None, group_lens: list[int]) -> torch.Tensor:
        """(batch, seq_len): where each token's state lies among the groups' steps-first states (`groups` as
        `length_groups` gives them, None for the whole batch in one), flattened and concatenated in group order with
        one zero row after them, which every padding position takes."""
        batch_size, device = self.lengths.numel(), self.lengths.device
        aligned_steps = self.restore_index  # the aligned step that each position's state comes from
        if aligned_steps is None:
            aligned_steps = torch.arange(seq_len, device=device)[None]
        if groups is None:
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

    def reverse_steps_first(self, aligned: torch.Tensor) -> torch.Tensor:
        """Reverse each row of aligned (seq_len, batch, width) within its length; padding stays where it is."""
        if self.reverse_rows is None:
            return aligned.flip(0)
        return gather_rows(aligned, self.reverse_rows, aligned.shape)


def is_exporting() -> bool:
    """True while `torch.export` (and so `torch.onnx.export`) or `torch.jit.trace` records the forward. The graph
    must then hold for every input: the host-side mask check and the shortcuts that skip an index map when a batch
    does not need it are data-dependent branches, so they are left out and every map is built."""
    return torch.compiler.is_exporting() or torch.jit.is_tracing()


def gather_rows(sequence: torch.Tensor, source_rows: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The vectors of `sequence` (…, width), taken as one list of rows, at `source_rows`, viewed as `shape`."""
    # `index_select` over the flattened steps copies whole rows; `gather` indexes every element: 13 ms against 0.3 ms
    # for a (32, 128, 256) batch on one CPU thread, 5% of a BiLSTM forward (issue 7)
    width = sequence.size(-1)
    return sequence.reshape(-1, width).index_select(0, source_rows.flatten()).view(shape)


def gather_steps(sequence: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """Reorder the time steps of each row of `sequence` (batch, seq_len, width) by `index` (batch, seq_len)."""
    if index is None:
        return sequence
    batch_size, seq_len = index.shape
    source_rows = index + torch.arange(batch_size, device=index.device)[:, None] * seq_len
    return gather_rows(sequence, source_rows, (batch_size, seq_len, sequence.size(-1)))


# The recurrences' cost grows with the padded length of a batch, and batches of real text are mostly padding. Rows
# sorted by length and run in groups, each cut to its longest row, skip most of it. The cost of a group, in units of
# one row's step, is its length × (rows + STEP_OVERHEAD_ROWS) + GROUP_OVERHEAD: one LSTM step of 8 rows costs what 11
# or 12 rows would if the cost were proportional (measured, 1 thread); GROUP_OVERHEAD stands for the fixed cost of a
# group's calls and keeps batches of similar lengths whole.
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


def in_batch_order(grouped: list[torch.Tensor], groups: list[torch.Tensor]) -> torch.Tensor:
    """The rows of `grouped` (one tensor per group of `length_groups`, rows first) put back in batch order."""
    return torch.cat(grouped)[torch.cat(groups).argsort()]


# ---------------------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------------------


def build_recurrence(config: BiRNNConfig, input_size: int, hidden_size: int) -> nn.RNNBase:
    """One unidirectional single-layer cell of the configured type; the two directions are separate modules
    because they may have different numbers of hidden units."""
    rnn_class = RNN_CLASSES[config.cell_type]
    extra = {"nonlinearity": config.nonlinearity} if config.cell_type == "rnn" else {}
    return rnn_class(input_size, hidden_size, num_layers=1, **extra)  # steps first (see `SpanLayout`)


class BiRNNLayer(nn.Module):
    """One bidirectional layer: H_t = [H→_t ; H←_t], computed on the aligned, steps-first layout of `SpanLayout`."""

    def __init__(self, config: BiRNNConfig, layer_idx: int):
        super().__init__()
        input_size = config.token_embedding_size if layer_idx == 0 else config.output_size
        self.forward_rnn = build_recurrence(config, input_size, config.hidden_size)
        self.backward_rnn = (
            build_recurrence(config, input_size, config.backward_hidden_size) if config.bidirectional else None
        )

    def forward(self, aligned_inputs: torch.Tensor, layout: SpanLayout) -> tuple[torch.Tensor, torch.Tensor | None]:
        forward_states, _ = self.forward_rnn(aligned_inputs)
        if self.backward_rnn is None:
            return forward_states, None
        reversed_states, _ = self.backward_rnn(layout.reverse_steps_first(aligned_inputs))
        backward_states = layout.reverse_steps_first(reversed_states)
        return forward_states, backward_states


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
    text, max-pooled over positions. They let rare and unseen words share what their spelling says (capitals,
    digits, suffixes) where a rarely trained embedding row says little.

    The spellings of the whole vocabulary sit in the `token_spellings` buffer (one row of byte ids per token id),
    filled from the tokenizer by `set_token_spellings` and saved with the weights: the features depend on the
    token id alone, so the model keeps taking `input_ids` only (pipelines, ONNX export).
    """

    PADDING, WORD_START, CONTINUATION = 0, 257, 258  # byte b is stored as b + 1
    NUM_SYMBOLS = 259

    def __init__(self, config: BiRNNConfig):
        super().__init__()
        self.register_buffer(
            "token_spellings", torch.zeros(config.vocab_size, config.max_token_characters, dtype=torch.long)
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
        spellings = self.token_spellings[input_ids].flatten(0, 1)  # (batch * seq_len, max_token_characters)
        byte_vectors = self.byte_embeddings(spellings).transpose(1, 2)  # (batch * seq_len, width, characters)
        features = self.convolution(byte_vectors).amax(dim=-1)
        return features.view(*input_ids.shape, -1)


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


class LinearChainCRF(nn.Module):
    """A linear-chain CRF over tag ids: score(y) = Σ_t (E_t[y_t] + T[y_{t-1}, y_t]) + start[y_1] + end[y_T].

    Works on aligned rows (each row's real steps first, `lengths` of them; see `SpanLayout`). Tags may be
    partially observed: steps labelled `-100` are summed over (Tsuboi et al. 2008), so training with `-100` on
    non-first sub-tokens needs no special case. Forbidden transitions (`allowed_transitions`) score `FORBIDDEN`.
    """

    FORBIDDEN = -1e4  # finite, so that a forbidden gold path gives a large loss rather than inf/NaN gradients

    def __init__(self, num_tags: int, allowed: torch.Tensor | None = None):
        super().__init__()
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))
        self.start_transitions = nn.Parameter(torch.zeros(num_tags))
        self.end_transitions = nn.Parameter(torch.zeros(num_tags))
        self.register_buffer("transition_penalty", self.penalty_for(num_tags, allowed), persistent=False)

    @classmethod
    def penalty_for(cls, num_tags: int, allowed: torch.Tensor | None) -> torch.Tensor:
        """(C + 2, C + 2) additive scores: 0 where allowed, `FORBIDDEN` elsewhere; START = C, END = C + 1.
        It is derived from the config, not saved, so `_init_weights` rebuilds it after loading."""
        if allowed is None:
            return torch.zeros(num_tags + 2, num_tags + 2)
        return (~allowed).float() * cls.FORBIDDEN

    def _scores(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(transitions (C, C), start (C,), end (C,)) with forbidden moves penalised."""
        num_tags = self.transitions.size(0)
        penalty = self.transition_penalty
        return (
            self.transitions + penalty[:num_tags, :num_tags],
            self.start_transitions + penalty[num_tags, :num_tags],
            self.end_transitions + penalty[:num_tags, num_tags + 1],
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
        """log Z per row: the log-sum of the scores of every tag path."""
        _, _, end = self._scores()
        return torch.logsumexp(self._forward_scores(emissions, lengths)[:, -1] + end, dim=1)

    def negative_log_likelihood(self, emissions: torch.Tensor, tags: torch.Tensor, lengths: torch.Tensor):
        """Per-row −log p(observed tags); unobserved (`-100`) steps are marginalised, empty rows give 0."""
        observed = tags >= 0
        gold_only = torch.full_like(emissions, self.FORBIDDEN).scatter(2, tags.clamp(min=0).unsqueeze(2), 0.0)
        constrained = emissions + torch.where(observed.unsqueeze(2), gold_only, torch.zeros_like(emissions))
        nll = self.log_partition(emissions, lengths) - self.log_partition(constrained, lengths)
        return nll * (lengths > 0)

    def max_marginals(self, emissions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(batch, seq_len, C): the score of the best path through tag c at step t, minus the best path's score
        (so 0 on the Viterbi path, negative elsewhere). Its argmax at every step is the Viterbi path."""
        forward_best = self._forward_scores(emissions, lengths, reduce=torch.amax)
        through = forward_best + self._backward_scores(emissions, lengths, reduce=torch.amax)
        return through - through.amax(dim=2, keepdim=True)

    def max_marginals_in_place(self, emissions: torch.Tensor, layout: SpanLayout) -> torch.Tensor:
        """`max_marginals` of each row's span of `emissions` (batch, seq_len, C) as the model lays rows out (any
        padding side), put back in place; 0 on padding."""
        aligned_emissions = gather_steps(emissions, layout.align_index)
        max_marginals = self.max_marginals(aligned_emissions, layout.lengths) * layout.aligned_mask(emissions.size(1))
        return gather_steps(max_marginals, layout.restore_index)

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

    allowed = torch.ones(num_tags + 2, num_tags + 2, dtype=torch.bool)
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


def crf_from_config(config: BiRNNConfig) -> LinearChainCRF:
    """The CRF of `config`'s labels, with the transitions its `crf_constraints` scheme forbids."""
    return LinearChainCRF(config.num_labels, allowed_transitions_of(config))


def allowed_transitions_of(config: BiRNNConfig) -> torch.Tensor | None:
    """`allowed_transitions` under `config.crf_constraints`; None (all allowed) without constraints."""
    return allowed_transitions(config.id2label, config.crf_constraints) if config.crf_constraints else None


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
        if isinstance(module, LinearChainCRF):
            for parameter in (module.transitions, module.start_transitions, module.end_transitions):
                init.zeros_(parameter)
            allowed = allowed_transitions_of(self.config)
            init.copy_(module.transition_penalty, LinearChainCRF.penalty_for(self.config.num_labels, allowed))
            return
        if isinstance(module, nn.Embedding) and self.config.embedding_initializer_range is not None:
            init.normal_(module.weight, mean=0.0, std=self.config.embedding_initializer_range)
            if module.padding_idx is not None:
                init.zeros_(module.weight[module.padding_idx])
            return
        if isinstance(module, nn.Conv1d):  # the character CNN: N(0, 0.02) filters would barely respond at first
            init.xavier_uniform_(module.weight)
            init.zeros_(module.bias)
            return
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

    def set_token_spellings(self, tokenizer) -> None:
        """Read the text of every token id from `tokenizer` into the spelling features' table (a config with
        `character_filters > 0` needs it before training; it is saved with the weights). Special tokens get an
        empty spelling."""
        encoder = self.base_model.token_spelling
        if encoder is None:
            raise ValueError("This model has no spelling features: set `character_filters` > 0 in its config.")
        if len(tokenizer) > self.config.vocab_size:
            raise ValueError(
                f"The tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {self.config.vocab_size}."
            )
        special_ids = set(tokenizer.all_special_ids)
        max_characters = self.config.max_token_characters
        rows = [
            [TokenSpellingEncoder.PADDING] * max_characters
            if token_id in special_ids or token is None
            else TokenSpellingEncoder.spell(token, max_characters)
            for token_id, token in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))))
        ]
        spellings = torch.zeros_like(encoder.token_spellings)
        spellings[: len(rows)] = torch.tensor(rows, dtype=torch.long)
        encoder.token_spellings.copy_(spellings)

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
            check_range = input_ids.numel() and not is_exporting()
            if check_range and (input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size):
                raise ValueError(
                    f"`input_ids` must lie in [0, vocab_size={self.config.vocab_size}), got values from "
                    f"{int(input_ids.min())} to {int(input_ids.max())}: does the tokenizer match the model?"
                )
            shape = tuple(input_ids.shape)
        else:
            if self.config.character_filters > 0:
                raise ValueError(
                    "This model adds spelling features looked up by token id (`character_filters` > 0): pass "
                    "`input_ids`, not `inputs_embeds`."
                )
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
        self.token_spelling = TokenSpellingEncoder(config) if config.character_filters > 0 else None
        self.word_dropout = WordDropout(config.word_dropout)
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
            if input_ids is not None:
                input_ids = nn.functional.pad(input_ids, (0, 1), value=self.config.pad_token_id or 0)
        batch_size, seq_len, _ = inputs_embeds.shape
        layout = SpanLayout.from_attention_mask(attention_mask, batch_size, seq_len, inputs_embeds.device)
        token_vectors = self.word_dropout(inputs_embeds)  # the spelling features stay: a dropped word is spelt out
        if self.token_spelling is not None:
            if self.training and not is_exporting() and not self.token_spelling.token_spellings.any():
                raise ValueError(
                    "The spelling features' table is empty: call `model.set_token_spellings(tokenizer)` before "
                    "training a model with `character_filters` > 0."
                )
            token_vectors = torch.cat([token_vectors, self.token_spelling(input_ids)], dim=-1)
        layer_states, pooled_output = self._run_layers_in_length_groups(
            self.embedding_dropout(token_vectors), layout, output_hidden_states
        )
        pooled_output = pooled_output * (layout.lengths > 0)[:, None]
        layer_states = [states[:, :num_steps] for states in layer_states]
        last_hidden_state = layer_states[-1]
        all_hidden_states = tuple(layer_states) if output_hidden_states else None

        if not return_dict:
            return tuple(v for v in (last_hidden_state, pooled_output, all_hidden_states) if v is not None)
        return BaseModelOutputWithPooling(
            last_hidden_state=last_hidden_state, pooler_output=pooled_output, hidden_states=all_hidden_states
        )

    def _run_layers(
        self, aligned_inputs: torch.Tensor, layout: SpanLayout, every_layer: bool
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """([inputs, H_t of layer 1, …, of the last layer] with `every_layer`, else [H_t of the last layer], pooled
        output) on aligned, steps-first inputs."""
        layer_states = [aligned_inputs]
        hidden_states = aligned_inputs
        for layer_idx, layer in enumerate(self.layers):
            if layer_idx > 0:
                hidden_states = self.hidden_dropout(hidden_states)
            forward_states, backward_states = layer(hidden_states, layout)
            hidden_states = (
                forward_states if backward_states is None else torch.cat([forward_states, backward_states], -1)
            )
            layer_states.append(hidden_states)
        return layer_states if every_layer else layer_states[-1:], self._pool(forward_states, backward_states, layout)

    def _run_layers_in_length_groups(
        self, token_vectors: torch.Tensor, layout: SpanLayout, every_layer: bool
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """`_run_layers` on groups of rows of similar length, each cut to its longest row (`length_groups`), with
        every state put back in place and in batch order: (batch, seq_len, width) states as `_run_layers` lists
        them, and the pooled output. Each row's outputs are its own whatever its batch mates, so the groups change
        nothing but the work spent on padding (and the rounding of the matrix products)."""
        batch_size, seq_len, width = token_vectors.shape
        groups = length_groups(layout.lengths)
        if groups is None:
            rows_of_groups, group_lens = [torch.arange(batch_size, device=token_vectors.device)], [seq_len]
        else:
            rows_of_groups = groups
            group_lens = [max(int(layout.lengths[rows].max()), 1) for rows in groups]
        grouped_states, grouped_pooled = [], []
        for rows, group_len in zip(rows_of_groups, group_lens, strict=True):
            group_layout = layout if groups is None else SpanLayout.of_aligned_rows(layout.lengths[rows], group_len)
            input_rows = layout.group_input_rows(rows, group_len, seq_len)
            aligned_inputs = gather_rows(token_vectors, input_rows, (group_len, rows.numel(), width))
            states, pooled = self._run_layers(aligned_inputs, group_layout, every_layer)
            grouped_states.append(states)
            grouped_pooled.append(pooled)
        output_rows = layout.output_rows(seq_len, groups, group_lens)

        def in_place(states_of_groups: tuple[torch.Tensor, ...]) -> torch.Tensor:
            states_width = states_of_groups[0].size(-1)
            # reshape(-1, …), not flatten(0, 1): the ONNX export folds a flatten's row count into a constant, the
            # example's (onnxscript 0.7), and the graph then fails on other lengths
            flat_states = [states.reshape(-1, states_width) for states in states_of_groups]
            zero_row = flat_states[0].new_zeros(1, states_width)
            return gather_rows(torch.cat([*flat_states, zero_row]), output_rows, (batch_size, seq_len, states_width))

        layer_states = [in_place(states) for states in zip(*grouped_states, strict=True)]
        pooled_output = grouped_pooled[0] if groups is None else in_batch_order(grouped_pooled, groups)
        return layer_states, pooled_output

    @staticmethod
    def _pool(forward_states: torch.Tensor, backward_states: torch.Tensor | None, layout: SpanLayout) -> torch.Tensor:
        """[H→ at the last real token ; H← at the first] of each aligned row (zeros are applied to empty rows)."""
        batch_index = torch.arange(forward_states.size(1), device=forward_states.device)
        last_forward = forward_states[(layout.lengths - 1).clamp(min=0), batch_index]
        if backward_states is None:
            return last_forward
        return torch.cat([last_forward, backward_states[0]], dim=-1)


# ---------------------------------------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------------------------------------


class BiRNNForTokenClassification(BiRNNPreTrainedModel):
    """O_t = H_t W_hq + b_q for every token: NER, POS tagging, chunking; optionally decoded by a linear-chain CRF.

    With `config.use_crf` the loss is the CRF's negative log-likelihood per labelled token, and outside training
    `logits` are the CRF's max-marginals: for each step and tag, the score of the best tag path through that tag,
    relative to the best path. Their argmax is the Viterbi path, so the pipeline, `argmax(logits)` and the scores
    the scripts report all agree; the pipeline's softmax of them says how far the best alternative tag falls behind.
    (Posterior marginals would give calibrated per-token probabilities, but their argmax can disagree with the best
    path, e.g. split "New York" into two entities.) In training mode `logits` are the emission scores O_t.
    """

    def __init__(self, config: BiRNNConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.birnn = BiRNNModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.output_size, config.num_labels)
        self.crf = crf_from_config(config) if config.use_crf else None
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
        if labels is not None:
            check_labels_shape(labels, tuple(logits.shape[:2]))

        loss = None
        if self.crf is None:
            if labels is not None:
                loss = self.loss_function(logits, labels, self.config, **kwargs)
        else:
            loss, logits = self._crf_outputs(logits, attention_mask, labels, kwargs.get("num_items_in_batch"))

        if not (return_dict if return_dict is not None else self.config.return_dict):
            output = (logits,) + ((outputs.hidden_states,) if outputs.hidden_states is not None else ())
            return ((loss,) + output) if loss is not None else output
        return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)

    def _crf_outputs(
        self,
        emissions: torch.Tensor,
        attention_mask: torch.Tensor | None,
        labels: torch.LongTensor | None,
        num_items_in_batch: torch.Tensor | int | None,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(loss, logits), computed on each row's aligned span and put back in place."""
        batch_size, seq_len, _ = emissions.shape
        layout = SpanLayout.from_attention_mask(attention_mask, batch_size, seq_len, emissions.device)

        loss = None
        if labels is not None:
            aligned_emissions = gather_steps(emissions, layout.align_index)
            aligned_labels = gather_steps(labels.unsqueeze(-1), layout.align_index).squeeze(-1)
            aligned_labels = aligned_labels.masked_fill(~layout.aligned_mask(seq_len).squeeze(-1), -100)
            nll = self.crf.negative_log_likelihood(aligned_emissions, aligned_labels, layout.lengths).sum()
            # per labelled token, like the softmax head, so gradient accumulation and DDP scale the same way
            labelled_tokens = num_items_in_batch if num_items_in_batch is not None else (labels >= 0).sum()
            loss = nll / torch.as_tensor(labelled_tokens, device=nll.device).clamp(min=1)
        if self.training:
            return loss, emissions
        return loss, self.crf.max_marginals_in_place(emissions, layout)


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


class BiRNNForCausalLM(BiRNNPreTrainedModel):
    """Predicts token t+1 from H→_t: a left-to-right language model, for a unidirectional config.

    A bidirectional config is refused. At step t its backward direction has already read token t+1, the very token to
    predict, so training reaches a perplexity near 1 by copying it, and generation, where token t+1 does not exist yet,
    produces garbage ("time travellerererer"; d2l.ai, "Bidirectional Recurrent Neural Networks"). Pretrain a BiRNN
    with `BiRNNForMaskedLM` instead. `allow_future_leak=True` builds the leaking model anyway, only to demonstrate
    the failure (`scripts/reproduce_seed.py`).
    """

    _tied_weights_keys = {"lm_head.decoder.weight": "birnn.embeddings.weight"}

    def __init__(self, config: BiRNNConfig, allow_future_leak: bool = False):
        if config.bidirectional and not allow_future_leak:
            raise ValueError(
                "BiRNNForCausalLM predicts the next token, but this config is bidirectional: the backward direction "
                "has already read the token to be predicted, so training reaches a perplexity of ~1 by copying it "
                "and generation produces garbage ('travellerererer'). Pretrain a bidirectional model with "
                "BiRNNForMaskedLM, or set `bidirectional=False` for a left-to-right language model."
            )
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
    ) -> tuple | CausalLMOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            The input ids (`-100` where no loss is wanted); the loss shifts them, so step t is scored on token t+1.
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
        return CausalLMOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


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
    "BiRNNForCausalLM",
    "BiRNNForMaskedLM",
    "LinearChainCRF",
    "BiRNNForSequenceClassification",
    "BiRNNForTokenClassification",
    "BiRNNModel",
    "BiRNNPreTrainedModel",
]
