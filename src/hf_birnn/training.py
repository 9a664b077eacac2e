"""Pieces the training scripts share: a `Trainer` whose evaluation keeps dataset order, config overrides, and the
training-curve plot."""

import dataclasses
import json
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase, Trainer, TrainingArguments
from transformers.trainer_pt_utils import LengthGroupedSampler

from .configuration_birnn import BiRNNConfig
from .modeling_birnn import BiRNNPreTrainedModel


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """Length-grouped order drawn from `seed + epoch`. Every DDP process draws the same order, so their shares of a
    step never overlap (transformers' sampler draws from each process's own global RNG, which drifts apart once the
    processes have drawn different numbers, e.g. for dropout on CPU), and a resumed run draws each epoch again."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths, generator=torch.Generator())
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed + epoch)


class BiRNNTrainer(Trainer):
    """`Trainer` with two sampling fixes:

    - evaluation and prediction read rows in dataset order: transformers 5.x applies
      `train_sampling_strategy="group_by_length"` to those dataloaders too, which permutes the rows of `predict()`
      output, and per-word scoring and written predictions need them in order (in one process and under DDP);
    - length grouping draws its order from a per-epoch seed (`EpochSeededLengthGroupedSampler`);

    and it stops at the first non-finite loss, naming the step, where `Trainer` would log an average that hides it
    (`logging_nan_inf_filter`) and train on.
    """

    def training_step(self, model, inputs, num_items_in_batch=None) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"The training loss is {loss.item()} at step {self.state.global_step + 1} (epoch "
                f"{self.state.epoch:.2f}): check the batch for rows without labels or the learning rate."
            )
        return loss

    def _get_train_sampler(self, train_dataset=None) -> torch.utils.data.Sampler | None:
        sampler = super()._get_train_sampler(train_dataset)
        if isinstance(sampler, LengthGroupedSampler):
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return EpochSeededLengthGroupedSampler(sampler.batch_size, sampler.lengths, seed)
        return sampler

    def _get_eval_sampler(self, eval_dataset) -> torch.utils.data.Sampler | None:
        return torch.utils.data.SequentialSampler(eval_dataset)


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


def fresh_config(config_name: str | None, config_overrides: str | None, **settings) -> BiRNNConfig:
    """The config of a model trained from scratch: the fields of `config_name` (a config file or folder, without its
    task's labels and bookkeeping), then `--config_overrides`, then `settings` (what the tokenizer and labels fix)."""
    fields = {}
    if config_name is not None:
        fields = BiRNNConfig.from_pretrained(config_name).to_dict()
        for key in ("model_type", "transformers_version", "auto_map", "architectures", "id2label", "label2id"):
            fields.pop(key, None)
    fields.update(parse_config_overrides(config_overrides))
    fields.update(settings)
    return BiRNNConfig(**fields)


def fresh_model(
    model_class: type[BiRNNPreTrainedModel],
    tokenizer: PreTrainedTokenizerBase,
    config_name: str | None,
    config_overrides: str | None,
    **settings,
) -> BiRNNPreTrainedModel:
    """A model trained from scratch whose vocabulary is `tokenizer`'s: `fresh_config` with the tokenizer's size and
    padding id, and the spelling features' table read from the tokenizer when the config has them."""
    config = fresh_config(
        config_name, config_overrides, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **settings
    )
    model = model_class(config)
    if config.character_filters > 0:
        model.set_token_spellings(tokenizer)
    return model


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
    if train or evals:
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
    "ddp_find_unused_parameters": False,  # every parameter takes part in every step: spare DDP the graph search
    "dataloader_pin_memory": False,  # pinning only warns without an accelerator; pass true on GPUs
}
