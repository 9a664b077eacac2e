"""What `pipeline("token-classification")` costs over the model on pre-tokenized batches, and what the int8 ONNX
Runtime model gains through the same pipeline."""

import argparse
from functools import partial

import torch
from transformers import pipeline

from hf_birnn.serving import quantize_for_cpu

from .common import Report, Row, Section, interleaved, median, ratio
from .sizes import Sizes
from .workloads import label_names_of, load_tagger, run_batches, wnut_split


def run(args: argparse.Namespace, sizes: Sizes, report: Report) -> None:
    """Sentences/s of the model, tokenizer + model, the pipeline and the int8 pipeline at each batch size."""
    rows = wnut_split("emerging.dev.conll", sizes.pipeline_sentences)
    tokenizer, model, description = load_tagger(args, sizes, label_names_of(rows))
    sentences = [" ".join(tokens) for tokens in rows["tokens"]]
    tag = pipeline("token-classification", model=model, tokenizer=tokenizer, aggregation_strategy="simple")
    int8_model = quantize_for_cpu(model, backend="onnxruntime", threads=args.threads)
    tag_int8 = pipeline("token-classification", model=int8_model, tokenizer=tokenizer, aggregation_strategy="simple")
    table: list[Row] = []
    for batch_size in sizes.pipeline_batch_sizes:
        batches = [
            tokenizer(sentences[start : start + batch_size], padding=True, return_tensors="pt")
            for start in range(0, len(sentences), batch_size)
        ]

        def tokenize_and_run(batch_size: int = batch_size) -> None:
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


SECTION = Section(
    name="pipeline",
    run=run,
    title="The pipeline's overhead",
    summary=(
        "`pipeline('token-classification', aggregation_strategy='simple')` against the model on pre-tokenized "
        "batches and against tokenizing and running the model by hand, at several batch sizes; and the same "
        "pipeline serving `quantize_for_cpu(model, backend='onnxruntime')`."
    ),
    packages=("onnxruntime", "onnx", "onnxscript", "tokenizers"),
)
