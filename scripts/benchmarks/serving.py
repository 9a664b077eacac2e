"""The CPU serving paths against eager fp32: `quantize_for_cpu` with either backend and `OnnxRuntimeModel` on the
WNUT-17 dev set (int8), and `export_onnx` per cell type on padded random batches (onnx)."""

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, pipeline

from hf_birnn.serving import OnnxRuntimeModel, export_onnx, quantize_for_cpu
from hf_birnn.tagging import WordTagScorer, entity_scores

from .common import Report, Section, interleaved, median, ms, ratio
from .sizes import Sizes
from .workloads import (
    DEMO_SENTENCES,
    Batch,
    agreement,
    birnn_tagger,
    encode_tagged,
    label_names_of,
    load_tagger,
    padded_batches,
    predicted_ids,
    random_batch,
    run_batches,
    wnut_split,
)


def int8(args: argparse.Namespace, sizes: Sizes, report: Report) -> None:
    """Speed, label agreement and entity F1 of each runtime on real text, and whether each serves the pipeline."""
    rows = wnut_split("emerging.dev.conll", sizes.dev_sentences)
    tokenizer, model, description = load_tagger(args, sizes, label_names_of(rows))
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
        report.note(
            f"pipeline('token-classification') with {name}: {same} of {len(DEMO_SENTENCES)} demo sentences get the "
            "fp32 model's entities."
        )


def _logits_array(model: PreTrainedModel, batch: Batch) -> np.ndarray:
    return model(**batch).logits.numpy()


def _same_pipeline_entities(
    model: PreTrainedModel, served_model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> int:
    """How many demo sentences `served_model` tags with the fp32 model's entities, through the pipeline."""
    entities = []
    for tagger in (model, served_model):
        tag = pipeline("token-classification", model=tagger, tokenizer=tokenizer, aggregation_strategy="simple")
        entities.append([[(e["word"], e["entity_group"]) for e in found] for found in tag(DEMO_SENTENCES)])
    return sum(a == b for a, b in zip(*entities, strict=True))


def ort_session(path: Path, threads: int):
    """An ONNX Runtime CPU session with `threads` intra-op threads and no inter-op parallelism."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx(args: argparse.Namespace, sizes: Sizes, report: Report) -> None:
    """Per cell type: export time, how far the graph's logits are from eager on both paddings, and its speed."""
    generator = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="benchmark-onnx-") as folder:
        rows = [
            _onnx_row(args, sizes, cell_type, Path(folder) / f"{cell_type}.onnx", generator)
            for cell_type in sizes.onnx_cells
        ]
    report.table(
        "onnx",
        f"`export_onnx` + ONNX Runtime fp32 vs eager fp32 per cell type (random weights; batch {sizes.batch_size}, "
        f"half left- and half right-padded, lengths in [L/2, L], L = {sizes.onnx_length})",
        ["cell", "export s", "max |Δ logits|", "identical labels", "eager ms", "ORT ms", "ORT speed-up"],
        rows,
    )


def _onnx_row(
    args: argparse.Namespace, sizes: Sizes, cell_type: str, path: Path, generator: torch.Generator
) -> list[object]:
    torch.manual_seed(0)
    model = birnn_tagger(sizes, cell_type=cell_type).eval()
    right = random_batch(sizes, sizes.onnx_length, sizes.batch_size // 2, generator, side="right")
    left = random_batch(sizes, sizes.onnx_length, sizes.batch_size // 2, generator, side="left")
    batch = {"input_ids": torch.cat([right[0], left[0]]), "attention_mask": torch.cat([right[1], left[1]])}
    feed = {name: tensor.numpy() for name, tensor in batch.items()}
    start = time.perf_counter()
    session = ort_session(export_onnx(model, path), args.threads)
    export_seconds = time.perf_counter() - start
    with torch.inference_mode():
        eager = model(**batch).logits.numpy()
        times = interleaved({"eager": partial(model, **batch), "ORT": partial(session.run, None, feed)}, args.repeats)
    logits = session.run(None, feed)[0]
    real = batch["attention_mask"].numpy().astype(bool)
    return [
        cell_type,
        round(export_seconds, 1),
        f"{np.abs(logits - eager)[real].max():.1e}",
        f"{np.mean(logits.argmax(-1)[real] == eager.argmax(-1)[real]):.2%}",
        ms(median(times["eager"])),
        ms(median(times["ORT"])),
        1 / ratio(times, "ORT", "eager"),
    ]


INT8 = Section(
    name="int8",
    run=int8,
    title="int8 and ONNX Runtime on the WNUT-17 dev set",
    summary=(
        "`quantize_for_cpu(model)` (torch int8), `OnnxRuntimeModel.from_model(model)` (ONNX Runtime fp32) and "
        "`quantize_for_cpu(model, backend='onnxruntime')` (ONNX Runtime int8) against eager fp32 on the WNUT-17 dev "
        "set: sentences/s, labels identical to eager fp32, dev entity F1, and whether each serves "
        "`pipeline('token-classification')` with the fp32 model's entities."
    ),
    goal=(
        "int8 ≥ 2× eager fp32 with ≥ 99.5 % identical labels, and it serves the pipeline; ONNX Runtime ≥ 1.5× "
        "eager fp32."
    ),
    packages=("onnxruntime", "onnx", "onnxscript"),
)
ONNX = Section(
    name="onnx",
    run=onnx,
    title="export_onnx per cell type",
    summary=(
        "`export_onnx` for each cell type on a batch half left- and half right-padded: the export time, how far "
        "ONNX Runtime's fp32 logits are from eager fp32 on the real tokens, and its speed against eager fp32."
    ),
    goal="Padding-exact for every cell type: max |Δ logits| at float rounding, identical labels.",
    packages=("onnxruntime", "onnx", "onnxscript"),
)
