"""Model cards for trained BiRNNs: `huggingface_hub`'s `ModelCardData` for the YAML metadata (with `model-index`
results) and a Jinja template from `model_cards/` for the text."""

from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from transformers import TrainingArguments

from .configuration_birnn import BiRNNConfig

TRAINING_FIELDS = (
    "learning_rate",
    "per_device_train_batch_size",
    "num_train_epochs",
    "lr_scheduler_type",
    "warmup_steps",
    "weight_decay",
    "max_grad_norm",
    "seed",
)


def architecture_summary(config: BiRNNConfig, num_parameters: int) -> str:
    directions = (
        f"forward {config.hidden_size} + backward {config.backward_hidden_size} hidden units"
        if config.bidirectional
        else f"{config.hidden_size} hidden units, forward only"
    )
    spelling = (
        f" plus {config.character_filters} character-CNN spelling features" if config.character_filters > 0 else ""
    )
    vectors = ""
    if config.num_word_vectors > 0:
        state = "frozen" if config.freeze_word_vectors else "fine-tuned"
        vectors = (
            f" (pretrained word vectors {config.word_vectors_name or ''}, {config.num_word_vectors:,} words, {state}; "
            f"{config.learned_vocab_size:,} token ids with a learned row)"
        )
    return (
        f"{config.num_hidden_layers}-layer {'bidirectional ' if config.bidirectional else ''}"
        f"{config.cell_type.upper()} ({directions}), embeddings of {config.embedding_size}{vectors}{spelling} "
        f"over a vocabulary of {config.vocab_size:,}; {num_parameters:,} parameters"
    )


def training_summary(args: TrainingArguments) -> str:
    rows = [f"| {name} | {getattr(args, name)} |" for name in TRAINING_FIELDS]
    return "\n".join(["| hyperparameter | value |", "| --- | --- |", *rows])


def metrics_table(
    results_by_split: dict[str, dict[str, float]], metric_names: list[str], percent_metrics: set[str] | None = None
) -> str:
    """A markdown table, a row per split; the metrics in `percent_metrics` (all by default) are shown as percentages,
    the others (a perplexity) as they are."""
    percent_metrics = set(metric_names) if percent_metrics is None else percent_metrics
    header = "| split | " + " | ".join(metric_names) + " |"
    rule = "| --- |" + " --- |" * len(metric_names)
    rows = [
        f"| {split} | "
        + " | ".join(f"{results[name] * (100 if name in percent_metrics else 1):.2f}" for name in metric_names)
        + " |"
        for split, results in results_by_split.items()
    ]
    return "\n".join([header, rule, *rows])


def evaluation_results(
    results_by_split: dict[str, dict[str, float]],
    metric_names: list[str],
    task_type: str,
    dataset_id: str,
    dataset_name: str,
) -> list[EvalResult]:
    return [
        EvalResult(
            task_type=task_type,
            dataset_type=dataset_id,
            dataset_name=dataset_name,
            dataset_split=split,
            metric_type=name,
            metric_value=round(results[name], 4),
        )
        for split, results in results_by_split.items()
        for name in metric_names
    ]


def write_model_card(output_dir: Path, template_path: Path, card_data: ModelCardData, **template_values) -> ModelCard:
    """Render `template_path` with the values, put `card_data` in the YAML header, save as `README.md`."""
    card = ModelCard.from_template(card_data, template_path=str(template_path), **template_values)
    card.save(Path(output_dir) / "README.md")
    return card
