#!/usr/bin/env python
r"""Pretrain a BiRNN encoder with masked-language modelling on raw text files, with `transformers.Trainer`.

Text files may be plain text, WikiText `.tokens`, CoNLL-U `.conllu` (its `# text = ` lines) or CoNLL `.conll`
columns. The saved folder loads with `pipeline("fill-mask")` and `AutoModelForMaskedLM`, and `scripts/run_ner.py
--model_name_or_path` fine-tunes a tagger from it. (A masked LM is the way to pretrain a BiRNN: next-token
prediction lets its backward direction copy the answer.) Flags follow transformers'
`examples/pytorch/language-modeling/run_mlm.py`.

Example:

    python scripts/run_mlm.py --train_file ../shared/data/wikitext2/wiki.test.tokens \
        ../shared/data/timemachine/timemachine.txt --validation_file ../shared/data/wikitext2/wiki.valid.tokens \
        --output_dir outputs/birnn-mlm
"""

import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from huggingface_hub import ModelCardData
from transformers import (
    PreTrainedTokenizerBase,
    pipeline,
    set_seed,
)

from hf_birnn import BiRNNConfig, BiRNNForMaskedLM
from hf_birnn.language_modeling import (
    DataCollatorForMaskedLM,
    group_into_blocks,
    masked_token_accuracy,
    predicted_token_ids,
    read_text_lines,
)
from hf_birnn.model_card import (
    architecture_summary,
    evaluation_results,
    metrics_table,
    training_facts,
    training_summary,
    write_model_card,
)
from hf_birnn.training import (
    RNN_TRAINING_DEFAULTS,
    BiRNNTrainer,
    configure_script_logging,
    finish_run,
    fresh_model,
    load_or_train_tokenizer,
    prepare_run,
    script_parser,
    script_trainer,
    train_if_asked,
    training_arguments_with_defaults,
)
from hf_birnn.training import ModelArguments as SharedModelArguments

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
CARD_TEMPLATE = REPO_ROOT / "model_cards" / "masked-lm.md"
DEMO_SENTENCES = [
    "The Time Traveller was one of the [MASK] men I have ever met .",
    "The city is the [MASK] of the state .",
    "I would like to [MASK] a table for two .",
]

MlmTrainingArguments = training_arguments_with_defaults(
    "MlmTrainingArguments",
    __name__,
    output_dir="outputs/birnn-mlm",
    do_train=True,
    do_eval=True,
    num_train_epochs=3.0,
    per_device_train_batch_size=16,
    per_device_eval_batch_size=64,
    **RNN_TRAINING_DEFAULTS,
)


@dataclass
class ModelArguments(SharedModelArguments):
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A saved BiRNN masked LM to go on training; without it a fresh one is built."}
    )
    config_overrides: str | None = field(
        default="embedding_size=128,hidden_size=256,num_hidden_layers=2,cell_type=lstm,embedding_dropout=0.25,"
        "hidden_dropout=0.25,classifier_dropout=0.25,embedding_initializer_range=1.0",
        metadata={
            "help": "Comma-separated `field=value` BiRNNConfig settings for a fresh model. A tagger fine-tuned from "
            "the MLM keeps them (run_ner.py's --config_overrides applies to fresh models only), so give its "
            "from-scratch baseline the same ones. (Pretrained word vectors do not combine with a masked LM: its "
            "tied decoder scores every token id.)"
        },
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "A saved fast tokenizer with a mask token; by default one is trained."}
    )


@dataclass
class DataTrainingArguments:
    train_file: list[str] | None = field(default=None, metadata={"help": "One or more text files to train on."})
    validation_file: list[str] | None = field(
        default=None, metadata={"help": "One or more held-out text files to report accuracy and perplexity on."}
    )
    validation_split_percentage: int = field(
        default=5,
        metadata={
            "help": "Without --validation_file, the first this many percent of the training texts are held out "
            "(as transformers' run_mlm.py does)."
        },
    )
    max_seq_length: int = field(
        default=128,
        metadata={
            "help": "Tokens per row: the texts are concatenated and cut into rows this long, or, with "
            "--line_by_line, each text is truncated to it."
        },
    )
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of the tokens picked for prediction."})
    line_by_line: bool = field(
        default=False, metadata={"help": "One row per non-empty text line instead of concatenated blocks."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only this many training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only this many validation rows."})
    dataset_license: str = field(default="see the data's own terms", metadata={"help": "For the model card."})
    run_demo: bool = field(default=True, metadata={"help": "Fill in a few masked sentences with the saved pipeline."})


def load_raw_texts(data_args: DataTrainingArguments) -> datasets.DatasetDict:
    """A `text` column per split; the validation texts come from --validation_file or the training texts' head."""
    splits = {}
    if data_args.train_file:
        splits["train"] = [text for path in data_args.train_file for text in read_text_lines(path)]
    if data_args.validation_file:
        splits["validation"] = [text for path in data_args.validation_file for text in read_text_lines(path)]
    elif "train" in splits and data_args.validation_split_percentage > 0:
        held_out = len(splits["train"]) * data_args.validation_split_percentage // 100
        splits["validation"], splits["train"] = splits["train"][:held_out], splits["train"][held_out:]
    if not splits:
        raise ValueError("Give a --train_file (and a --validation_file, or a --validation_split_percentage).")
    for split, texts in splits.items():
        logger.info("%s: %d texts, %d characters", split, len(texts), sum(map(len, texts)))
    return datasets.DatasetDict(
        {split: datasets.Dataset.from_dict({"text": texts}) for split, texts in splits.items()}
    )


def masked_lm_tokenizer(
    model_args: ModelArguments, raw: datasets.DatasetDict, resume_from_checkpoint: str | None
) -> PreTrainedTokenizerBase:
    """The tokenizer (`hf_birnn.training.load_or_train_tokenizer`), which must have a mask token."""
    training_texts = raw["train"]["text"] if "train" in raw else None
    tokenizer, _ = load_or_train_tokenizer(model_args, None, training_texts, resume_from_checkpoint, None)
    if tokenizer.mask_token is None:
        raise ValueError("The tokenizer has no mask token, which masked-LM training needs.")
    return tokenizer


def build_model(
    model_args: ModelArguments, tokenizer: PreTrainedTokenizerBase, resume_from_checkpoint: str | None
) -> BiRNNForMaskedLM:
    if model_args.model_name_or_path is not None:
        return BiRNNForMaskedLM.from_pretrained(model_args.model_name_or_path)
    if resume_from_checkpoint is not None:  # the Trainer loads the checkpoint's weights
        return BiRNNForMaskedLM(BiRNNConfig.from_pretrained(resume_from_checkpoint))
    return fresh_model(BiRNNForMaskedLM, tokenizer, model_args.config_name, model_args.config_overrides)


def tokenize_into_rows(
    raw: datasets.DatasetDict, tokenizer: PreTrainedTokenizerBase, data_args: DataTrainingArguments
) -> datasets.DatasetDict:
    """Rows of token ids. Unlike transformers' run_mlm.py they carry no `special_tokens_mask`: that marks only tokens
    the tokenizer adds, so the collator would pick the `[UNK]`s of the text to predict; without it, the collator
    leaves every special id alone."""

    def encode(batch: dict[str, list]) -> dict[str, list]:
        return tokenizer(
            batch["text"],
            truncation=data_args.line_by_line,
            max_length=data_args.max_seq_length if data_args.line_by_line else None,
        )

    encoded = raw.map(encode, batched=True, remove_columns=["text"], desc="Tokenizing")
    if not data_args.line_by_line:
        encoded = encoded.map(
            group_into_blocks,
            batched=True,
            fn_kwargs={"block_size": data_args.max_seq_length},
            desc=f"Grouping into rows of {data_args.max_seq_length} tokens",
        )
    limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples}
    for split, limit in limits.items():
        if split in encoded and limit is not None:
            encoded[split] = encoded[split].select(range(min(limit, len(encoded[split]))))
    return encoded


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = script_parser((ModelArguments, DataTrainingArguments, MlmTrainingArguments), __doc__)
    if argv is None and len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(json_file=Path(sys.argv[1]).resolve())
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)

    configure_script_logging()
    set_seed(training_args.seed)

    resume = prepare_run(training_args)
    raw = load_raw_texts(data_args)
    tokenizer = masked_lm_tokenizer(model_args, raw, resume)
    model = build_model(model_args, tokenizer, resume)
    logger.info("%s, %s parameters", type(model).__name__, f"{model.num_parameters():,}")
    encoded = tokenize_into_rows(raw, tokenizer, data_args)
    for split, rows in encoded.items():
        logger.info("%s: %d rows, %d tokens", split, len(rows), sum(map(len, rows["input_ids"])))

    trainer = script_trainer(
        model,
        training_args,
        encoded,
        tokenizer,
        DataCollatorForMaskedLM(
            tokenizer, mlm_probability=data_args.mlm_probability, seed=training_args.seed
        ),
        compute_metrics=masked_token_accuracy,
        preprocess_logits_for_metrics=predicted_token_ids,
    )

    results = train_if_asked(trainer, resume)
    if training_args.do_eval and "validation" in encoded:
        metrics = trainer.evaluate()
        metrics["eval_perplexity"] = math.exp(metrics["eval_loss"])
        trainer.log_metrics("eval", metrics)
        results.update(metrics)
    if not training_args.do_train:
        trainer.save_metrics("all", results)
        return results

    command = "python scripts/run_mlm.py " + " ".join(argv if argv is not None else sys.argv[1:])
    finish_run(trainer, results, lambda folder: write_run_artifacts(folder, trainer, data_args, results, command))
    if trainer.is_world_process_zero() and data_args.run_demo:
        run_pipeline_demo(training_args.output_dir)
    return results


def write_run_artifacts(
    folder: Path, trainer: BiRNNTrainer, data_args: DataTrainingArguments, results: dict[str, float], command: str
) -> None:
    """The plot and the model card, written to `folder` (the final save's staging folder)."""
    output_dir = Path(trainer.args.output_dir)
    metric_names = ["accuracy", "perplexity"]
    results_by_split = {}
    if "eval_accuracy" in results:
        results_by_split["validation"] = {name: results[f"eval_{name}"] for name in metric_names}
    train_names = ", ".join(Path(path).name for path in data_args.train_file)
    if data_args.validation_file:
        held_out = ", ".join(Path(path).name for path in data_args.validation_file)
        split_description = f"held out: {held_out}"
    else:
        held_out = "held-out texts"
        split_description = f"held out: the first {data_args.validation_split_percentage} % of the training texts"
    if data_args.max_eval_samples is not None:
        row_length = f"{'up to ' if data_args.line_by_line else ''}{data_args.max_seq_length} tokens"
        split_description += f" (its first {data_args.max_eval_samples} rows of {row_length})"
    card_data = ModelCardData(
        language="en",
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="fill-mask",
        tags=["birnn", "bilstm", "fill-mask", "masked-lm", "hf_birnn"],
        metrics=metric_names,
        model_name=output_dir.name,
        eval_results=evaluation_results(results_by_split, metric_names, "fill-mask", "text", held_out),
    )
    write_model_card(
        folder,
        CARD_TEMPLATE,
        card_data,
        model_name=output_dir.name,
        model_id=output_dir.name,
        architecture=architecture_summary(trainer.model.config, trainer.model.num_parameters()),
        mlm_percent=f"{data_args.mlm_probability * 100:g}",
        metrics_table=metrics_table(results_by_split, metric_names, percent_metrics={"accuracy"}),
        data_description=f"Trained on {train_names}; {split_description}. Data license: {data_args.dataset_license}.",
        **training_facts(trainer, "accuracy", results, folder),
        command=command,
        training_table=training_summary(trainer.args),
        example_sentence=DEMO_SENTENCES[0],
    )


def run_pipeline_demo(model_dir: str) -> None:
    fill_mask = pipeline("fill-mask", model=model_dir, device="cpu")
    print("\nPipeline demo: pipeline('fill-mask'), top 5")
    for sentence in DEMO_SENTENCES:
        candidates = ", ".join(f"{c['token_str']!r} ({c['score']:.2f})" for c in fill_mask(sentence, top_k=5))
        print(f"  {sentence}\n    -> {candidates}")


if __name__ == "__main__":
    main()
