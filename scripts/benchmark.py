#!/usr/bin/env python
r"""CPU speed of hf_birnn against the baselines of issue 7, printed as tables of ratios (and saved as JSON and PNG).

    # first the tagger that the int8 and pipeline sections read (no CRF, so that the runtimes' ratios are the
    # encoder's: a CRF's decoding runs in torch after every runtime)
    python scripts/run_ner.py --output_dir outputs/wnut17-bilstm --num_train_epochs 10 --run_demo false \
        --config_overrides hidden_size=256,cell_type=lstm,embedding_dropout=0.25,hidden_dropout=0.25,\
classifier_dropout=0.25
    python scripts/benchmark.py                               # every section, 5-15 minutes on one thread
    python scripts/benchmark.py --only overhead,int8 --repeats 7
    python scripts/benchmark.py --quick                       # tiny sizes, a smoke test (tests/test_serving.py)

Sections: overhead (BiRNN vs raw nn.LSTM), trainer (Trainer vs a hand-written loop), int8 (`quantize_for_cpu` and
ONNX Runtime on the WNUT-17 dev set), onnx (`export_onnx` per cell type), scaling (BiLSTM vs BERT from L = 32 to
8192), pipeline (the pipeline's overhead), denormal (flush-to-zero on a padded training step). Within a round the
variants of a row run one after another, so that load from other processes falls on all of them; times are medians
over `--repeats` rounds of the process's CPU time (`--clock wall` for wall-clock time), and each ratio is the
median of the per-round ratios.
"""

import argparse
import contextlib
import copy
import json
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import datasets
import numpy as np
import torch
import transformers
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch.profiler import ProfilerActivity
from transformers import (
    AutoModelForTokenClassification,
    AutoTokenizer,
    BertConfig,
    BertForTokenClassification,
    DataCollatorForTokenClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    get_linear_schedule_with_warmup,
    pipeline,
)
from transformers.trainer_callback import PrinterCallback
from transformers.trainer_pt_utils import LengthGroupedSampler

from hf_birnn import BiRNNConfig, BiRNNForTokenClassification
from hf_birnn.serving import OnnxRuntimeModel, export_onnx, quantize_for_cpu
from hf_birnn.tagging import WordTagScorer, align_labels_with_tokens, entity_scores, load_tagging_dataset
from hf_birnn.tokenization import train_wordpiece_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]
WNUT17_DIR = REPO_ROOT / "data" / "wnut17"
SECTIONS = ("overhead", "trainer", "int8", "onnx", "scaling", "pipeline", "denormal")
# The timer of every measurement (`--clock`). CPU time of the process leaves out the time other processes hold the
# cores, which on a shared machine is most of the noise of wall-clock time; with one thread the two agree when idle.
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCKS["cpu"]  # main() sets it from --clock
DEMO_SENTENCES = [
    "Justin Bieber is playing Madison Square Garden in New York next Friday .",
    "Just bought the new iPhone from Apple , loving it so far",
    "Watching Game of Thrones with my friends from Manchester United tonight",
]


@dataclass
class Sizes:
    """The shapes of a run (issue 7's by default); `--quick` shrinks every one of them."""

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
    bert_training_max_length: int = 4096  # BERT training at 8192 needs ~20 GB (attention grows with L²)


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


# ---------------------------------------------------------------------------------------------------------------------
# Timing and reporting
# ---------------------------------------------------------------------------------------------------------------------


def interleaved(
    variants: dict[str, Callable[[], object]], repeats: int, warm_up: bool = True, calls: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of each variant over `repeats` rounds, after one warm-up call each; a round runs every
    variant `calls` times, in turn (several calls per sample steady the timing of short ones)."""
    for run in variants.values() if warm_up else ():
        run()
    times = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            start = clock()
            for _ in range(calls):
                run()
            times[name].append((clock() - start) / calls)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def ratio(times: dict[str, list[float]], name: str, baseline: str) -> float:
    """Median over rounds of time(name) / time(baseline): above 1 means `name` is slower."""
    return statistics.median(a / b for a, b in zip(times[name], times[baseline], strict=True))


class Report:
    """Prints each table as markdown when it is complete and keeps everything for the JSON file."""

    def __init__(self):
        self.tables = {}

    def table(self, key: str, title: str, headers: list[str], rows: list[list]) -> None:
        self.tables[key] = {"title": title, "headers": headers, "rows": rows}
        lines = [f"\n### {title}\n", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
        print("\n".join(lines), flush=True)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


# ---------------------------------------------------------------------------------------------------------------------
# Models and data
# ---------------------------------------------------------------------------------------------------------------------


def birnn_tagger(sizes: Sizes, num_labels: int = 13, cell_type: str = "lstm") -> BiRNNForTokenClassification:
    config = BiRNNConfig(
        vocab_size=sizes.vocab_size,
        embedding_size=sizes.embedding_size,
        hidden_size=sizes.hidden_size,
        num_hidden_layers=sizes.num_layers,
        cell_type=cell_type,
        num_labels=num_labels,
    )
    return BiRNNForTokenClassification(config)


class RawBiLSTMTagger(nn.Module):
    """Issue 7's baseline: nn.Embedding → nn.LSTM(bidirectional) → nn.Linear with a BiRNN's weights and dropouts.
    `packed=True` runs the LSTM on a `PackedSequence`, padding-exact like the BiRNN; `packed=False` runs it on the
    padded batch, where the backward direction reads the padding first (not padding-exact)."""

    def __init__(self, birnn: BiRNNForTokenClassification, packed: bool):
        super().__init__()
        config = birnn.config
        self.packed = packed
        self.embeddings = copy.deepcopy(birnn.birnn.embeddings.word_embeddings)
        self.embedding_dropout = nn.Dropout(config.embedding_dropout)
        self.lstm = nn.LSTM(
            config.embedding_size,
            config.hidden_size,
            num_layers=config.num_hidden_layers,
            bidirectional=True,
            batch_first=True,
            dropout=config.hidden_dropout,
        )
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = copy.deepcopy(birnn.classifier)
        with torch.no_grad():
            for layer_idx, layer in enumerate(birnn.birnn.layers):
                for suffix, rnn in (("", layer.forward_rnn), ("_reverse", layer.backward_rnn)):
                    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                        getattr(self.lstm, f"{name}_l{layer_idx}{suffix}").copy_(getattr(rnn, f"{name}_l0"))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        embeds = self.embedding_dropout(self.embeddings(input_ids))
        if self.packed:
            lengths = attention_mask.sum(dim=1).cpu()
            packed = pack_padded_sequence(embeds, lengths, batch_first=True, enforce_sorted=False)
            states, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=input_ids.size(1))
        else:
            states, _ = self.lstm(embeds)
        return self.classifier(self.dropout(states))


def random_batch(sizes: Sizes, length: int, batch_size: int, generator: torch.Generator, side: str = "right"):
    """(input_ids, attention_mask, labels) with lengths drawn from [length / 2, length] (one row of full length)."""
    lengths = torch.randint(length // 2, length + 1, (batch_size,), generator=generator)
    lengths[0] = length
    positions = torch.arange(length)
    mask = positions < lengths[:, None]
    if side == "left":
        mask = mask.flip(1)
    input_ids = torch.randint(1, sizes.vocab_size, (batch_size, length), generator=generator) * mask
    labels = torch.randint(0, 13, (batch_size, length), generator=generator).masked_fill(~mask, -100)
    return input_ids, mask.long(), labels


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer, **batch: torch.Tensor) -> None:
    """Forward, loss, backward and an AdamW step of a transformers model on a batch with labels."""
    optimizer.zero_grad(set_to_none=True)
    model(**batch).loss.backward()
    optimizer.step()


def raw_training_step(model: RawBiLSTMTagger, optimizer: torch.optim.Optimizer, input_ids, attention_mask, labels):
    optimizer.zero_grad(set_to_none=True)
    token_loss(model(input_ids, attention_mask), labels).backward()
    optimizer.step()


def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)


def load_tagger(args, sizes: Sizes, label_names: list[str]):
    """(tokenizer, fp32 tagger, description): the trained model of `--model`, or in `--quick` a random one over a
    WordPiece vocabulary trained on the WNUT-17 training text."""
    if not args.quick:
        if not Path(args.model).is_dir():
            raise SystemExit(f"--model {args.model} does not exist: train one with scripts/run_ner.py.")
        model = AutoModelForTokenClassification.from_pretrained(args.model).eval()
        return AutoTokenizer.from_pretrained(args.model), model, f"loaded from {args.model}"
    tokenizer = wnut_tokenizer(sizes)
    model = birnn_tagger(sizes, num_labels=len(label_names))
    model.config.id2label = dict(enumerate(label_names))
    model.config.label2id = {label: i for i, label in enumerate(label_names)}
    return tokenizer, model.eval(), "random weights (--quick)"


def wnut_tokenizer(sizes: Sizes):
    train = load_tagging_dataset(
        {"train": str(WNUT17_DIR / "wnut17train.conll")}, "tokens", "ner_tags", ["tokens", "ner_tags"]
    )["train"]
    return train_wordpiece_tokenizer((" ".join(tokens) for tokens in train["tokens"]), vocab_size=sizes.vocab_size)


def wnut_split(split_file: str, limit: int | None):
    split = load_tagging_dataset({"split": str(WNUT17_DIR / split_file)}, "tokens", "ner_tags", ["tokens", "ner_tags"])
    rows = split["split"]
    return rows.select(range(min(limit, len(rows)))) if limit else rows


def encode_tagged(rows, tokenizer, label2id: dict[str, int]) -> list[dict]:
    """Tokenized rows with labels on every sub-token (as scripts/run_ner.py trains)."""
    b_to_i = {i: label2id.get("I-" + name[2:], i) for name, i in label2id.items() if name.startswith("B-")}
    encoded = tokenizer([list(tokens) for tokens in rows["tokens"]], is_split_into_words=True)
    features = []
    for row, tags in enumerate(rows["tags"]):
        word_ids = encoded.word_ids(row)
        labels = align_labels_with_tokens(word_ids, [label2id.get(tag, 0) for tag in tags], True, b_to_i)
        features.append({"input_ids": encoded["input_ids"][row], "labels": labels, "word_ids": word_ids})
    return features


def padded_batches(features: list[dict], tokenizer, batch_size: int) -> list[dict[str, torch.Tensor]]:
    batches = []
    for start in range(0, len(features), batch_size):
        chunk = [{"input_ids": feature["input_ids"]} for feature in features[start : start + batch_size]]
        batches.append(tokenizer.pad(chunk, return_tensors="pt"))
    return batches


def run_batches(tagger: Callable[[dict], object], batches: list[dict]) -> None:
    for batch in batches:
        tagger(batch)


def predicted_ids(run: Callable[[dict], np.ndarray], batches: list[dict]) -> list[np.ndarray]:
    """Per row, the argmax label of each real token."""
    rows = []
    for batch in batches:
        labels = run(batch).argmax(-1)
        rows += [row[mask.astype(bool)] for row, mask in zip(labels, batch["attention_mask"].numpy(), strict=True)]
    return rows


def agreement(rows: list[np.ndarray], reference: list[np.ndarray]) -> float:
    return float(np.mean(np.concatenate([a == b for a, b in zip(rows, reference, strict=True)])))


# ---------------------------------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------------------------------


def overhead(args, sizes: Sizes, report: Report) -> None:
    """Goal 1: the BiRNN within 1.05× of raw nn.LSTM taggers with the same weights."""
    generator = torch.Generator().manual_seed(0)
    rounds = 2 * args.repeats  # short calls, easily disturbed by other processes: more rounds, several calls each
    rows = []
    for length in sizes.overhead_lengths:
        calls = max(1, 128 // length)
        torch.manual_seed(0)  # same weights in all three at the start of each length (training moves them apart)
        birnn = birnn_tagger(sizes)
        raws = {"packed": RawBiLSTMTagger(birnn, packed=True), "padded": RawBiLSTMTagger(birnn, packed=False)}
        optimizers = {name: torch.optim.AdamW(model.parameters()) for name, model in [("birnn", birnn), *raws.items()]}
        input_ids, mask, labels = random_batch(sizes, length, sizes.batch_size, generator)
        for model in (birnn, *raws.values()):
            model.eval()
        with torch.inference_mode():
            real = mask.bool()[..., None]
            exact = (birnn(input_ids=input_ids, attention_mask=mask).logits - raws["packed"](input_ids, mask)) * real
            times = interleaved(
                {
                    "birnn": partial(birnn, input_ids=input_ids, attention_mask=mask),
                    "packed": partial(raws["packed"], input_ids, mask),
                    "padded": partial(raws["padded"], input_ids, mask),
                },
                rounds,
                calls=calls,
            )
        rows.append(_overhead_row(length, "inference", times, float(exact.abs().max())))
        for model in (birnn, *raws.values()):
            model.train()
        times = interleaved(
            {
                "birnn": partial(
                    training_step, birnn, optimizers["birnn"], input_ids=input_ids, attention_mask=mask, labels=labels
                ),
                **{
                    name: partial(raw_training_step, raw, optimizers[name], input_ids, mask, labels)
                    for name, raw in raws.items()
                },
            },
            rounds,
            calls=calls,
        )
        rows.append(_overhead_row(length, "training step", times, None))
    report.table(
        "overhead",
        f"Overhead: BiRNNForTokenClassification vs raw nn.Embedding → nn.LSTM → nn.Linear (batch {sizes.batch_size}, "
        f"lengths in [L/2, L], right padding; {rounds} rounds)",
        ["L", "mode", "BiRNN ms", "packed ms", "padded ms", "BiRNN / packed", "BiRNN / padded", "max |Δ| vs packed"],
        rows,
    )
    directions(args, sizes, report)


def _overhead_row(length: int, mode: str, times: dict, difference: float | None) -> list:
    return [
        length,
        mode,
        ms(median(times["birnn"])),
        ms(median(times["packed"])),
        ms(median(times["padded"])),
        ratio(times, "birnn", "packed"),
        ratio(times, "birnn", "padded"),
        "—" if difference is None else f"{difference:.1e}",
    ]


def directions(args, sizes: Sizes, report: Report) -> None:
    """Does running the directions as two nn.LSTM calls (as BiRNNLayer does) cost against one bidirectional call?"""
    length = sizes.overhead_lengths[-1]
    inputs = torch.randn(sizes.batch_size, length, sizes.embedding_size)
    both = nn.LSTM(sizes.embedding_size, sizes.hidden_size, batch_first=True, bidirectional=True)
    forward = nn.LSTM(sizes.embedding_size, sizes.hidden_size, batch_first=True)
    backward = nn.LSTM(sizes.embedding_size, sizes.hidden_size, batch_first=True)

    def separate() -> torch.Tensor:
        return torch.cat([forward(inputs)[0], backward(inputs.flip(1))[0].flip(1)], dim=-1)

    with torch.inference_mode():
        inference = interleaved({"one call": lambda: both(inputs), "two calls": separate}, 2 * args.repeats)
    training = interleaved(
        {"one call": lambda: both(inputs)[0].sum().backward(), "two calls": lambda: separate().sum().backward()},
        2 * args.repeats,
    )
    report.table(
        "directions",
        f"One bidirectional nn.LSTM layer vs two unidirectional calls (batch {sizes.batch_size}, L = {length})",
        ["mode", "one call ms", "two calls ms", "two / one"],
        [
            [
                mode,
                ms(median(times["one call"])),
                ms(median(times["two calls"])),
                ratio(times, "two calls", "one call"),
            ]
            for mode, times in (("inference", inference), ("forward + backward", training))
        ],
    )


def trainer_vs_loop(args, sizes: Sizes, report: Report) -> None:
    """Goal 2: Trainer (group_by_length) at ≥ 0.9× the tokens/s of a hand-written loop on the same data."""
    tokenizer = wnut_tokenizer(sizes)
    rows = wnut_split("wnut17train.conll", None)
    label_names = sorted({tag for tags in rows["tags"] for tag in tags}, key=lambda tag: (tag != "O", tag))
    label2id = {label: i for i, label in enumerate(label_names)}
    features = [
        {key: feature[key] for key in ("input_ids", "labels")} for feature in encode_tagged(rows, tokenizer, label2id)
    ]
    torch.manual_seed(0)
    model = birnn_tagger(sizes, num_labels=len(label_names))
    initial_state = copy.deepcopy(model.state_dict())
    collator = DataCollatorForTokenClassification(tokenizer)
    batch_tokens, step_ends = [], []  # real tokens of each batch collated; time at the end of each step

    def counting_collator(batch: list[dict]) -> dict:
        collated = collator(batch)
        batch_tokens.append(int(collated["attention_mask"].sum()))
        return collated

    def with_trainer() -> None:
        arguments = TrainingArguments(
            output_dir=tempfile.mkdtemp(prefix="benchmark-trainer-"),
            per_device_train_batch_size=sizes.batch_size,
            max_steps=sizes.trainer_steps,
            learning_rate=2e-3,
            max_grad_norm=1.0,
            train_sampling_strategy="group_by_length",
            eval_strategy="no",
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=True,
            seed=0,
        )
        trainer = Trainer(model=model, args=arguments, train_dataset=features, data_collator=counting_collator)
        trainer.remove_callback(PrinterCallback)  # it prints the final metrics even with logging off
        trainer.add_callback(StepClock(step_ends))
        trainer.train()

    def by_hand() -> None:
        model.train()
        torch.manual_seed(0)
        sampler = LengthGroupedSampler(sizes.batch_size, lengths=[len(feature["input_ids"]) for feature in features])
        loader = torch.utils.data.DataLoader(
            features, batch_size=sizes.batch_size, sampler=sampler, collate_fn=counting_collator
        )
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
        scheduler = get_linear_schedule_with_warmup(optimizer, 0, sizes.trainer_steps)
        for step, batch in enumerate(loader):
            if step == sizes.trainer_steps:
                break
            model(**batch).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step_ends.append(clock())

    whole, steady = {"Trainer": [], "loop": []}, {"Trainer": [], "loop": []}
    batches_seen = set()
    for _ in range(max(1, min(args.repeats, 3))):
        for name, run in (("Trainer", with_trainer), ("loop", by_hand)):
            model.load_state_dict(initial_state)
            batch_tokens.clear()
            step_ends.clear()
            start = clock()
            run()
            whole[name].append(sum(batch_tokens[: sizes.trainer_steps]) / (clock() - start))
            # from the end of the first step: without Trainer's one-off setup and the first step's warm-up
            steady[name].append(sum(batch_tokens[1 : sizes.trainer_steps]) / (step_ends[-1] - step_ends[0]))
            batches_seen.add(tuple(batch_tokens[: sizes.trainer_steps]))
    report.table(
        "trainer",
        f"Training on WNUT-17: Trainer (group_by_length) vs a hand-written loop (same sampler, collator, AdamW, "
        f"clipping, schedule), {sizes.trainer_steps} steps of {sizes.batch_size} rows; both saw "
        f"{'the same batches' if len(batches_seen) == 1 else 'different batches'}",
        ["timed", "Trainer tokens/s", "loop tokens/s", "Trainer / loop"],
        [
            [
                label,
                median(speeds["Trainer"]),
                median(speeds["loop"]),
                statistics.median(a / b for a, b in zip(speeds["Trainer"], speeds["loop"], strict=True)),
            ]
            for label, speeds in (("whole `train()` call", whole), ("steps 2 … N", steady))
        ],
    )


class StepClock(TrainerCallback):
    """Notes the time at the end of every training step."""

    def __init__(self, step_ends: list[float]):
        self.step_ends = step_ends

    def on_step_end(self, args, state, control, **kwargs):
        self.step_ends.append(clock())


def int8(args, sizes: Sizes, report: Report) -> None:
    """Goals 3 and 4 on real data: `quantize_for_cpu` with either backend (≥ 2× fp32, ≥ 99.5% identical labels,
    works in the pipeline) and `OnnxRuntimeModel` in fp32, against eager fp32 on the WNUT-17 dev set."""
    rows = wnut_split("emerging.dev.conll", sizes.dev_sentences)
    label_names = sorted({tag for tags in rows["tags"] for tag in tags}, key=lambda tag: (tag != "O", tag))
    tokenizer, model, description = load_tagger(args, sizes, label_names)
    features = encode_tagged(rows, tokenizer, model.config.label2id)
    batches = padded_batches(features, tokenizer, sizes.batch_size)
    served = {
        "eager fp32": model,
        "eager int8 (quantize_for_cpu)": quantize_for_cpu(model),
        "ONNX Runtime fp32 (OnnxRuntimeModel)": OnnxRuntimeModel.from_model(model, threads=args.threads),
        "ONNX Runtime int8 (quantize_for_cpu, backend='onnxruntime')": quantize_for_cpu(
            model, backend="onnxruntime", threads=args.threads
        ),
    }
    taggers = {name: partial(_logits_array, served_model) for name, served_model in served.items()}
    with torch.inference_mode():
        predictions = {name: predicted_ids(tagger, batches) for name, tagger in taggers.items()}
        times = interleaved(
            {name: partial(run_batches, tagger, batches) for name, tagger in taggers.items()}, args.repeats
        )
    scorer = WordTagScorer([feature["word_ids"] for feature in features], rows["tags"], model.config.id2label)
    reference = predictions["eager fp32"]
    report.table(
        "int8",
        f"int8 and ONNX Runtime vs eager fp32 on the WNUT-17 dev set ({len(rows)} sentences in dataset order, "
        f"batches of {sizes.batch_size}); model: {description}",
        ["runtime", "sentences/s", "speed-up vs eager fp32", "labels identical to eager fp32", "dev entity F1"],
        [
            [
                name,
                len(rows) / median(times[name]),
                1 / ratio(times, name, "eager fp32"),
                f"{agreement(ids, reference):.2%}",
                f"{entity_scores(scorer.gold_tags, scorer.predicted_tags(ids))['f1']:.4f}",
            ]
            for name, ids in predictions.items()
        ],
    )
    for name, served_model in list(served.items())[1:]:
        same = _same_pipeline_entities(model, served_model, tokenizer)
        print(f"pipeline('token-classification') with {name}: {same} of {len(DEMO_SENTENCES)} demo sentences get the")
        print("fp32 model's entities.")


def _logits_array(model, batch: dict) -> np.ndarray:
    return model(**batch).logits.numpy()


def _same_pipeline_entities(model, served_model, tokenizer) -> int:
    """How many demo sentences `served_model` tags with the fp32 model's entities, through the pipeline."""
    entities = []
    for tagger in (model, served_model):
        tag = pipeline("token-classification", model=tagger, tokenizer=tokenizer, aggregation_strategy="simple")
        entities.append([[(e["word"], e["entity_group"]) for e in found] for found in tag(DEMO_SENTENCES)])
    return sum(a == b for a, b in zip(*entities, strict=True))


def ort_session(path: Path, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx(args, sizes: Sizes, report: Report) -> None:
    """Goal 4: `export_onnx` is padding-exact for every cell type; ONNX Runtime's speed against eager fp32."""
    folder = Path(tempfile.mkdtemp(prefix="benchmark-onnx-"))
    generator = torch.Generator().manual_seed(0)
    rows = []
    for cell_type in sizes.onnx_cells:
        torch.manual_seed(0)
        model = birnn_tagger(sizes, cell_type=cell_type).eval()
        right = random_batch(sizes, sizes.onnx_length, sizes.batch_size // 2, generator, side="right")
        left = random_batch(sizes, sizes.onnx_length, sizes.batch_size // 2, generator, side="left")
        batch = {"input_ids": torch.cat([right[0], left[0]]), "attention_mask": torch.cat([right[1], left[1]])}
        feed = {name: tensor.numpy() for name, tensor in batch.items()}
        start = time.perf_counter()
        session = ort_session(export_onnx(model, folder / f"{cell_type}.onnx"), args.threads)
        export_seconds = time.perf_counter() - start
        with torch.inference_mode():
            eager = model(**batch).logits.numpy()
            times = interleaved(
                {"eager": partial(model, **batch), "ORT": partial(session.run, None, feed)}, args.repeats
            )
        logits = session.run(None, feed)[0]
        real = batch["attention_mask"].numpy().astype(bool)
        rows.append(
            [
                cell_type,
                round(export_seconds, 1),
                f"{np.abs(logits - eager)[real].max():.1e}",
                f"{np.mean(logits.argmax(-1)[real] == eager.argmax(-1)[real]):.2%}",
                ms(median(times["eager"])),
                ms(median(times["ORT"])),
                1 / ratio(times, "ORT", "eager"),
            ]
        )
    report.table(
        "onnx",
        f"`export_onnx` + ONNX Runtime fp32 vs eager fp32 per cell type (random weights; batch {sizes.batch_size}, "
        f"half left- and half right-padded, lengths in [L/2, L], L = {sizes.onnx_length})",
        ["cell", "export s", "max |Δ logits|", "identical labels", "eager ms", "ORT ms", "ORT speed-up"],
        rows,
    )


def scaling(args, sizes: Sizes, report: Report) -> None:
    """Goal 5: tokens/s and peak memory of the BiLSTM tagger vs a BERT tagger of the same non-embedding size."""
    torch.manual_seed(0)
    birnn = birnn_tagger(sizes)
    bert_config = BertConfig(
        vocab_size=sizes.vocab_size,
        hidden_size=sizes.hidden_size // 2,
        num_hidden_layers=12,
        num_attention_heads=2,
        intermediate_size=sizes.hidden_size * 2,
        max_position_embeddings=max(sizes.scaling_lengths),
        num_labels=13,
    )
    bert = BertForTokenClassification._from_config(bert_config, attn_implementation="sdpa")
    models = {"BiLSTM": birnn, "BERT": bert}
    parameters = {name: _non_embedding_parameters(model) for name, model in models.items()}
    optimizers = {name: torch.optim.AdamW(model.parameters()) for name, model in models.items()}
    generator = torch.Generator().manual_seed(0)
    rows, points = [], []
    for length in sizes.scaling_lengths:
        batch_size = max(1, sizes.scaling_tokens // length)
        batch = {
            "input_ids": torch.randint(1, sizes.vocab_size, (batch_size, length), generator=generator),
            "attention_mask": torch.ones(batch_size, length, dtype=torch.long),
            "labels": torch.randint(0, 13, (batch_size, length), generator=generator),
        }
        repeats = min(args.repeats, 3) if length <= 2048 else 1  # one round at longer lengths keeps the run bounded
        for mode in ("inference", "training"):
            # BERT's training step at L = 8192 was killed at 22 GB on the 24 GiB machine this was written on
            too_long = mode == "training" and length > sizes.bert_training_max_length
            measured = {name: model for name, model in models.items() if not (name == "BERT" and too_long)}
            speed, memory, times = _scaling_measurement(measured, optimizers, batch, mode, repeats)
            rows.append(
                [length, batch_size, mode, speed["BiLSTM"], speed.get("BERT", "—")]
                + [1 / ratio(times, "BiLSTM", "BERT") if "BERT" in times else "—"]
                + [round(memory["BiLSTM"], 1), round(memory["BERT"], 1) if "BERT" in memory else "—"]
            )
            points += [
                {"model": name, "length": length, "mode": mode, "tokens/s": speed[name], "peak MiB": memory[name]}
                for name in measured
            ]
        print(f"(scaling: L = {length} measured)", flush=True)
    report.table(
        "scaling",
        f"Length scaling: BiLSTM vs BERT ({parameters['BiLSTM']:,} vs {parameters['BERT']:,} non-embedding "
        f"parameters; 12 × {bert_config.hidden_size} BERT, sdpa), ~{sizes.scaling_tokens} tokens per batch, "
        "no padding",
        [
            "L",
            "batch",
            "mode",
            "BiLSTM tok/s",
            "BERT tok/s",
            "BiLSTM / BERT speed",
            "BiLSTM peak MiB",
            "BERT peak MiB",
        ],
        rows,
    )
    plot_scaling(points, Path(args.output_dir) / "length_scaling.png")


def _scaling_measurement(models: dict, optimizers: dict, batch: dict, mode: str, repeats: int):
    """(tokens/s, peak MiB, times) of each model, in inference or for a training step."""
    for model in models.values():
        model.train(mode == "training")
    with torch.inference_mode(mode == "inference"):
        if mode == "training":
            runs = {name: partial(training_step, model, optimizers[name], **batch) for name, model in models.items()}
        else:
            inputs = {key: batch[key] for key in ("input_ids", "attention_mask")}
            runs = {name: partial(model, **inputs) for name, model in models.items()}
        memory = {name: peak_memory_mb(run) for name, run in runs.items()}  # also the warm-up call
        times = interleaved(runs, repeats, warm_up=False)
    tokens = batch["input_ids"].numel()
    return {name: tokens / median(values) for name, values in times.items()}, memory, times


def _non_embedding_parameters(model: nn.Module) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name)


def peak_memory_mb(run: Callable[[], object]) -> float:
    """Peak of the bytes torch allocates while `run` runs, above what was allocated before (profiler memory events;
    weights are not counted, activations, gradients and optimizer states created inside are)."""
    with _silenced_stderr(), torch.profiler.profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profile:
        run()
    events = profile.profiler.kineto_results.events()
    changes = sorted((event.start_ns(), event.nbytes()) for event in events if event.name() == "[memory]")
    allocated = peak = 0
    for _, nbytes in changes:
        allocated += nbytes
        peak = max(peak, allocated)
    return peak / 2**20


@contextlib.contextmanager
def _silenced_stderr():
    """The profiler's C++ side logs every start and stop on stderr."""
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def plot_scaling(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for mode, style in (("inference", "-"), ("training", "--")):
        for name, color in (("BiLSTM", "C0"), ("BERT", "C1")):
            selected = [point for point in points if point["mode"] == mode and point["model"] == name]
            lengths = [point["length"] for point in selected]
            for axis, key in zip(axes, ("tokens/s", "peak MiB"), strict=True):
                values = [point[key] for point in selected]
                axis.plot(lengths, values, style, color=color, marker="o", label=f"{name} {mode}")
    for axis, ylabel in zip(axes, ("tokens / s", "peak MiB allocated"), strict=True):
        axis.set(xscale="log", yscale="log", xlabel="sequence length L", ylabel=ylabel)
        axis.grid(alpha=0.3)
        axis.legend()
    axes[0].set_title("Throughput (1 thread)")
    axes[1].set_title("Peak memory per step")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def pipeline_overhead(args, sizes: Sizes, report: Report) -> None:
    """Goal 6: pipeline("token-classification") sentences/s vs the model on pre-tokenized batches, and the same
    pipeline serving the int8 ONNX Runtime model (`quantize_for_cpu(model, backend="onnxruntime")`)."""
    rows = wnut_split("emerging.dev.conll", sizes.pipeline_sentences)
    label_names = sorted({tag for tags in rows["tags"] for tag in tags}, key=lambda tag: (tag != "O", tag))
    tokenizer, model, description = load_tagger(args, sizes, label_names)
    sentences = [" ".join(tokens) for tokens in rows["tokens"]]
    tag = pipeline("token-classification", model=model, tokenizer=tokenizer, aggregation_strategy="simple")
    int8_model = quantize_for_cpu(model, backend="onnxruntime", threads=args.threads)
    tag_int8 = pipeline("token-classification", model=int8_model, tokenizer=tokenizer, aggregation_strategy="simple")
    table = []
    for batch_size in sizes.pipeline_batch_sizes:
        batches = [
            tokenizer(sentences[start : start + batch_size], padding=True, return_tensors="pt")
            for start in range(0, len(sentences), batch_size)
        ]

        def tokenize_and_run(batch_size=batch_size) -> None:
            for start in range(0, len(sentences), batch_size):
                model(**tokenizer(sentences[start : start + batch_size], padding=True, return_tensors="pt"))

        with torch.inference_mode():
            times = interleaved(
                {
                    "model": partial(run_batches, lambda batch: model(**batch), batches),
                    "tokenizer + model": tokenize_and_run,
                    "pipeline": lambda batch_size=batch_size: tag(sentences, batch_size=batch_size),
                    "int8 pipeline": lambda batch_size=batch_size: tag_int8(sentences, batch_size=batch_size),
                },
                args.repeats,
            )
        speed = {name: len(sentences) / median(values) for name, values in times.items()}
        table.append(
            [
                batch_size,
                speed["model"],
                speed["tokenizer + model"],
                speed["pipeline"],
                ratio(times, "pipeline", "model"),
                speed["int8 pipeline"],
                1 / ratio(times, "int8 pipeline", "pipeline"),
            ]
        )
    report.table(
        "pipeline",
        f"pipeline('token-classification', aggregation_strategy='simple') vs the model on pre-tokenized batches "
        f"({len(sentences)} WNUT-17 dev sentences, model: {description})",
        [
            "batch size",
            "model sent/s",
            "tokenizer + model sent/s",
            "pipeline sent/s",
            "pipeline time / model time",
            "int8 ONNX Runtime pipeline sent/s",
            "its speed-up",
        ],
        table,
    )


def denormal(args, sizes: Sizes, report: Report) -> None:
    """Subnormal floats on padded batches at long lengths: a training step with and without flush-to-zero."""
    torch.manual_seed(0)
    model = birnn_tagger(sizes).train()
    optimizer = torch.optim.AdamW(model.parameters())
    generator = torch.Generator().manual_seed(0)
    input_ids, mask, labels = random_batch(sizes, sizes.denormal_length, sizes.denormal_batch_size, generator)

    def step(flush: bool) -> None:
        torch.set_flush_denormal(flush)
        try:
            training_step(model, optimizer, input_ids=input_ids, attention_mask=mask, labels=labels)
        finally:
            torch.set_flush_denormal(False)

    times = interleaved({"default": lambda: step(False), "flush-to-zero": lambda: step(True)}, args.repeats)
    report.table(
        "denormal",
        f"Training step on a padded batch (batch {sizes.denormal_batch_size}, lengths in [L/2, L], "
        f"L = {sizes.denormal_length}): subnormal floats kept vs flushed to zero",
        ["default ms", "flush-to-zero ms", "default / flush-to-zero"],
        [[ms(median(times["default"])), ms(median(times["flush-to-zero"])), ratio(times, "default", "flush-to-zero")]],
    )


SECTION_FUNCTIONS = {
    "overhead": overhead,
    "trainer": trainer_vs_loop,
    "int8": int8,
    "onnx": onnx,
    "scaling": scaling,
    "pipeline": pipeline_overhead,
    "denormal": denormal,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime intra-op threads")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds per measurement (median)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu", help="process CPU time or wall-clock time")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}")
    parser.add_argument("--model", default="outputs/wnut17-bilstm", help="trained tagger (scripts/run_ner.py)")
    parser.add_argument("--output_dir", default="outputs/benchmark", help="results.json and length_scaling.png")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 1 round: checks that everything runs")
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    if args.quick:
        args.repeats = 1
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread for the tokenizer too
    global clock
    clock = CLOCKS[args.clock]
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    sizes = QUICK_SIZES if args.quick else Sizes()
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} cores, {args.repeats} rounds, "
        f"{args.clock} clock; "
        f"load average before: {load_before[0]:.1f} / {load_before[1]:.1f} / {load_before[2]:.1f} (1 / 5 / 15 min)"
    )
    report = Report()
    start = time.perf_counter()
    for section in args.only.split(","):
        section_start = time.perf_counter()
        SECTION_FUNCTIONS[section](args, sizes, report)
        print(f"({section}: {time.perf_counter() - section_start:.0f} s)", flush=True)
    load_after = os.getloadavg()
    print(
        f"\nTotal {time.perf_counter() - start:.0f} s; load average after: {load_after[0]:.1f} / {load_after[1]:.1f}"
    )
    results = {
        "threads": args.threads,
        "repeats": args.repeats,
        "clock": args.clock,
        "torch": torch.__version__,
        "cores": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "sizes": asdict(sizes),
        "tables": report.tables,
    }
    (Path(args.output_dir) / "results.json").write_text(json.dumps(results, indent=2, default=str))
    return results


if __name__ == "__main__":
    main()
