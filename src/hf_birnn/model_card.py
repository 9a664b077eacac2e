"""Model cards for trained BiRNNs: `huggingface_hub`'s `ModelCardData` for the YAML metadata (with `model-index`
results) and a Jinja template from `model_cards/` for the text."""

import enum
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from transformers import TrainerState, TrainingArguments

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


def training_summary(args: TrainingArguments, extra_rows: dict[str, object] | None = None) -> str:
    """The hyperparameters as a table, enum settings by their value (`linear`, not `SchedulerType.LINEAR`)."""
    values = {name: getattr(args, name) for name in TRAINING_FIELDS} | (extra_rows or {})
    rows = [f"| {name} | {value.value if isinstance(value, enum.Enum) else value} |" for name, value in values.items()]
    return "\n".join(["| hyperparameter | value |", "| --- | --- |", *rows])


@dataclass(frozen=True)
class KeptCheckpoint:
    """Which checkpoint a run kept, from the Trainer's state."""

    epoch: float | None  # None when no evaluation chose one: the last weights were kept
    num_epochs: float
    metric_name: str
    metric_value: float | None
    train_minutes: float

    @classmethod
    def of(cls, state: TrainerState, metric_name: str, train_runtime: float) -> "KeptCheckpoint":
        kept_epoch = None
        if state.best_global_step:
            epochs = [entry["epoch"] for entry in state.log_history if entry.get("step") == state.best_global_step]
            kept_epoch = epochs[0] if epochs else state.best_global_step * state.num_train_epochs / state.max_steps
        return cls(kept_epoch, state.epoch or 0.0, metric_name, state.best_metric, train_runtime / 60)

    def sentence(self) -> str:
        if self.epoch is None:
            return f"The weights after the last of {self.num_epochs:g} epochs were kept."
        if self.metric_name.endswith("loss"):
            best = f"the lowest validation {self.metric_name} ({self.metric_value:.4f})"
        else:
            best = f"the best validation {self.metric_name} ({100 * self.metric_value:.2f})"
        return f"The checkpoint of epoch {self.epoch:g} of {self.num_epochs:g} was kept: it had {best}."


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line]
        if names:
            return names[0]
    return platform.processor() or platform.machine()


def hardware_summary() -> str:
    """What the run trained on: the GPU, or the CPU and the threads torch used."""
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} × {torch.cuda.get_device_name(0)}"
    return f"CPU ({cpu_name()}, {os.cpu_count()} cores), {torch.get_num_threads()} torch thread(s)"


def per_type_table(results: dict[str, float], prefixes: dict[str, str]) -> str:
    """Precision / recall / F1 and the gold count per entity type and split, from keys like `test_PER_f1`; a type
    the model never finds shows as 0, not as a missing row."""
    rows = []
    for split, prefix in prefixes.items():
        counts = [key for key in results if key.startswith(prefix + "_") and key.endswith("_number")]
        for entity_type in sorted(key[len(prefix) + 1 : -len("_number")] for key in counts):
            scores = [100 * results[f"{prefix}_{entity_type}_{name}"] for name in ("precision", "recall", "f1")]
            number = int(results[f"{prefix}_{entity_type}_number"])
            rows.append(f"| {split} | {entity_type} | " + " | ".join(f"{v:.2f}" for v in scores) + f" | {number} |")
    if not rows:
        return ""
    header = ["| split | type | precision | recall | F1 | entities |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    return "\n".join(header + rows)


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


def training_facts(trainer, metric_name: str, results: dict[str, float], folder: Path) -> dict[str, str]:
    """What every card says about its run: the training time and hardware, the kept checkpoint and why, and the
    training-curve plot (written to `folder`, marking the kept epoch)."""
    from .training import plot_training_curves

    selection_metric = trainer.args.metric_for_best_model or "loss"
    kept = KeptCheckpoint.of(trainer.state, selection_metric, results.get("train_runtime", 0.0))
    plot_training_curves(trainer.state.log_history, metric_name, folder / "training_curves.png", kept.epoch)
    return {
        "train_minutes": f"{kept.train_minutes:.1f}",
        "hardware": hardware_summary(),
        "kept_checkpoint": kept.sentence(),
    }
