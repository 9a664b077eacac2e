"""Pieces the training scripts share: a `Trainer` whose evaluation keeps dataset order, config overrides, and the
training-curve plot."""

import dataclasses
import json
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments

from .configuration_birnn import BiRNNConfig


class BiRNNTrainer(Trainer):
    """`Trainer` whose evaluation and prediction read rows in dataset order.

    transformers 5.x applies `train_sampling_strategy="group_by_length"` to the evaluation and test dataloaders too,
    which permutes the rows of `predict()` output; per-word scoring and the written predictions need them in order.
    """

    def _get_eval_sampler(self, eval_dataset) -> torch.utils.data.Sampler | None:
        if self.args.world_size <= 1:
            return torch.utils.data.SequentialSampler(eval_dataset)
        return super()._get_eval_sampler(eval_dataset)


def parse_config_overrides(overrides: str | None) -> dict[str, object]:
    """`"hidden_size=128,cell_type=gru"` → `{"hidden_size": 128, "cell_type": "gru"}`, values typed by
    `BiRNNConfig`'s fields (as transformers' `--config_overrides`, with unknown names refused)."""
    if not overrides:
        return {}
    fields = BiRNNConfig.__dataclass_fields__
    parsed = {}
    for item in overrides.split(","):
        name, separator, text = item.partition("=")
        name = name.strip()
        if not separator or name not in fields:
            raise ValueError(f"--config_overrides: {item!r} is not `field=value` for a BiRNNConfig field.")
        parsed[name] = _typed_value(text.strip())
    return parsed


def _typed_value(text: str) -> object:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.lower() == "none":
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def plot_training_curves(log_history: list[dict], metric_name: str, path: Path) -> None:
    """Training and validation loss per epoch, and the validation metric per epoch, side by side (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(entry["epoch"], entry["loss"]) for entry in log_history if "loss" in entry]
    evals = [entry for entry in log_history if "eval_loss" in entry]
    figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(10, 4))
    if train:
        loss_axis.plot(*zip(*train, strict=True), label="training loss")
    if evals:
        epochs = [entry["epoch"] for entry in evals]
        loss_axis.plot(epochs, [entry["eval_loss"] for entry in evals], marker="o", label="validation loss")
        metric_axis.plot(epochs, [entry.get(f"eval_{metric_name}") for entry in evals], marker="o", color="C2")
    loss_axis.set(xlabel="epoch", ylabel="loss", title="Loss")
    loss_axis.legend()
    metric_axis.set(xlabel="epoch", ylabel=metric_name, title=f"Validation {metric_name}")
    metric_axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def training_arguments_with_defaults(class_name: str, module: str, **defaults) -> type[TrainingArguments]:
    """A `TrainingArguments` subclass whose defaults suit a script's BiRNN run, keeping each field's help text, so
    that `--help` shows the defaults the script really uses. Assign it to `class_name` in `module` (Trainer pickles
    the arguments into each checkpoint, which needs the class to be found there)."""
    base_fields = TrainingArguments.__dataclass_fields__
    unknown = sorted(set(defaults) - set(base_fields))
    if unknown:
        raise ValueError(f"Not TrainingArguments fields: {unknown}")
    fields = [
        (name, base_fields[name].type, dataclasses.field(default=value, metadata=base_fields[name].metadata))
        for name, value in defaults.items()
    ]
    arguments_class = dataclasses.make_dataclass(class_name, fields, bases=(TrainingArguments,))
    arguments_class.__module__ = module
    return arguments_class


RNN_TRAINING_DEFAULTS = {
    "learning_rate": 2e-3,  # AdamW on LSTMs trains well at 1e-3 … 3e-3; 5e-5 (transformers' default) barely moves
    "max_grad_norm": 1.0,  # clipping keeps exploding recurrent gradients in check (Pascanu et al. 2013)
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "save_total_limit": 2,
    "load_best_model_at_end": True,
    "train_sampling_strategy": "group_by_length",  # rows of similar length together: less padding, faster steps
    "logging_steps": 50,
    "report_to": "none",
}
