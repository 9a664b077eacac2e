"""Publishing a trained BiRNN folder to the Hugging Face Hub: which of its files go up, and the commit that puts
them there.

The selection is an allow-list read from the folder's top level only: weights (safetensors), config, the code
files its `auto_map` needs (so the repo loads with `trust_remote_code=True` where `hf_birnn` is not installed),
tokenizer files, the model card, metrics and plots. Checkpoint folders, optimizer and scheduler states,
`training_args.bin` (a pickle) and test predictions (the test text itself, under the data's license) never match.

A push replaces the repo's copy of that selection as a whole: a weight layout left from an earlier push (a single
file beside new shards, shards beside a new single file) would otherwise be what loads. And a folder goes up only
if it loads: its weight files are complete and agree with each other and with the model its config describes.
"""

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import CommitInfo, CommitOperationAdd, CommitOperationDelete, HfApi
from safetensors import SafetensorError, safe_open
from transformers import Trainer

from . import modeling_birnn
from .modeling_birnn import BiRNNPreTrainedModel

WEIGHT_PATTERNS = ("model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json")
CONFIG_PATTERNS = ("config.json", "generation_config.json")
TOKENIZER_PATTERNS = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
)
CARD_PATTERNS = ("README.md",)
METRIC_PATTERNS = ("*results.json",)  # all_results.json, train_results.json, eval_results.json, test_results.json
PLOT_PATTERNS = ("*.png",)
UPLOAD_PATTERNS = (
    WEIGHT_PATTERNS + CONFIG_PATTERNS + TOKENIZER_PATTERNS + CARD_PATTERNS + METRIC_PATTERNS + PLOT_PATTERNS
)
SINGLE_WEIGHTS, WEIGHTS_INDEX = "model.safetensors", "model.safetensors.index.json"
SHARD_PATTERN = "model-*-of-*.safetensors"


@dataclass(frozen=True)
class UploadFile:
    name: str  # path in the folder, and in the repo
    size: int


def auto_map_modules(folder: Path) -> list[str]:
    """Module names in the `auto_map` of the folder's config and tokenizer config (`"modeling_birnn"` for
    `"modeling_birnn.BiRNNForTokenClassification"`, also when written as `"user/repo--modeling_birnn.…"`)."""
    modules = set()
    for config_name in ("config.json", "tokenizer_config.json"):
        path = folder / config_name
        if not path.is_file():
            continue
        for reference in json.loads(path.read_text()).get("auto_map", {}).values():
            for class_path in reference if isinstance(reference, list) else [reference]:
                if class_path:
                    modules.add(class_path.split("--")[-1].rsplit(".", 1)[0])
    return sorted(modules)


def remote_code_files(folder: Path) -> list[str]:
    """The `.py` files that `trust_remote_code=True` loading needs: each `auto_map` module and, recursively, the
    modules it imports relatively (as transformers' `get_relative_import_files` finds them)."""
    from transformers.dynamic_module_utils import get_relative_import_files

    names = set()
    for module in auto_map_modules(folder):
        module_file = folder / f"{module}.py"
        if not module_file.is_file():
            raise FileNotFoundError(f"config's auto_map names `{module}` but {module_file} is missing")
        names.add(module_file.name)
        names.update(Path(path).name for path in get_relative_import_files(module_file))
    missing = sorted(name for name in names if not (folder / name).is_file())
    if missing:
        raise FileNotFoundError(f"{folder} lacks code files that its auto_map modules import: {missing}")
    return sorted(names)


def package_code_files() -> list[str]:
    """The code files that `save_pretrained` copies into a BiRNN folder for its `auto_map`: the modules defining the
    config and model classes, and those they import relatively. A repo file of one of these names that a new push
    does not carry is code left from an earlier version of the package."""
    from transformers.dynamic_module_utils import get_relative_import_files

    modules = [Path(modeling_birnn.__file__), Path(modeling_birnn.__file__).with_name("configuration_birnn.py")]
    names = {path.name for path in modules}
    for module in modules:
        names.update(Path(path).name for path in get_relative_import_files(module))
    return sorted(names)


def _top_level_match(name: str, patterns) -> bool:
    return "/" not in name and any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def files_to_upload(folder: str | Path) -> list[UploadFile]:
    """The files of a trained folder that belong on the Hub, by name. Fails on a folder without weights or config
    (not a saved model), with an `auto_map` whose code files are missing, or whose weights do not load
    (`check_folder_loads`): the repo would not load either."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: not a saved model folder")
    top_level = sorted(path.name for path in folder.iterdir() if path.is_file())
    names = {name for name in top_level if _top_level_match(name, UPLOAD_PATTERNS)}
    if not any(name.endswith(".safetensors") for name in names):
        raise FileNotFoundError(f"{folder} has no safetensors weights (only safetensors are uploaded)")
    names.update(remote_code_files(folder))
    check_folder_loads(folder)
    return [UploadFile(name, (folder / name).stat().st_size) for name in sorted(names)]


def saved_tensors(folder: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The file and shape of each saved tensor, as a loader would find them: through the index's `weight_map` for
    a sharded save, in `model.safetensors` otherwise. Refuses a layout in which a loader would miss weights or pick
    leftovers of an earlier save: shards without an index, an index naming missing shards or not naming shards
    beside it, an index beside a `model.safetensors` that it does not describe. Every file's header is read, so a
    truncated or corrupted file is refused too."""
    single, index = folder / SINGLE_WEIGHTS, folder / WEIGHTS_INDEX
    shards = sorted(path.name for path in folder.glob(SHARD_PATTERN) if path.is_file())
    if not index.is_file():
        if shards:
            raise ValueError(f"{folder} would not load: it holds weight shards {shards} but no {WEIGHTS_INDEX}")
        return {key: (SINGLE_WEIGHTS, shape) for key, shape in tensor_shapes(folder, SINGLE_WEIGHTS).items()}
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(name, str) for name in weight_map.values()):
            raise TypeError("`weight_map` is not a mapping of tensor names to file names")
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{folder} would not load: {WEIGHTS_INDEX} is not a valid index ({error!r})") from error
    named = sorted(set(weight_map.values()))
    if single.is_file() and named != [SINGLE_WEIGHTS]:
        raise ValueError(
            f"{folder} holds both {SINGLE_WEIGHTS} and a {WEIGHTS_INDEX} that names other files ({named[:3]}): one "
            "of them is left from an earlier save_pretrained with another max_shard_size, and a loader would read "
            "the single file. Delete the stale one (or save to an empty folder)."
        )
    missing = [name for name in named if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} would not load: {WEIGHTS_INDEX} names weight files that are missing: {missing}"
        )
    unnamed = sorted(set(shards) - set(named))
    if unnamed:
        raise ValueError(
            f"{folder} holds weight shards that {WEIGHTS_INDEX} does not name, left from an earlier save: {unnamed}"
        )
    tensors = {}
    for name in named:
        shapes = tensor_shapes(folder, name)
        listed = {tensor for tensor, file in weight_map.items() if file == name}
        if set(shapes) != listed:
            absent, unlisted = sorted(listed - set(shapes))[:5], sorted(set(shapes) - listed)[:5]
            raise ValueError(
                f"{folder} would not load: {WEIGHTS_INDEX} does not describe {name} (listed there but absent: "
                f"{absent}; present but not listed: {unlisted})"
            )
        tensors.update({key: (name, shape) for key, shape in shapes.items()})
    return tensors


def tensor_shapes(folder: Path, name: str) -> dict[str, tuple[int, ...]]:
    """The shape of each tensor in a safetensors file, from its header (safetensors checks that the data it
    announces fills the file exactly, so a truncated file fails here)."""
    try:
        with safe_open(folder / name, framework="pt") as file:
            return {key: tuple(file.get_slice(key).get_shape()) for key in file.keys()}
    except (SafetensorError, OSError) as error:
        raise ValueError(
            f"{folder} would not load: {name} is not a readable safetensors file (truncated or corrupted?): {error}"
        ) from error


def model_class_of(folder: Path) -> type[BiRNNPreTrainedModel]:
    """The hf_birnn model class that `config.json`'s `architectures` names."""
    try:
        architectures = json.loads((folder / "config.json").read_text()).get("architectures") or []
    except (ValueError, AttributeError) as error:
        raise ValueError(f"{folder} would not load: config.json is not a JSON object ({error})") from error
    for name in architectures:
        model_class = getattr(modeling_birnn, str(name), None)
        if isinstance(model_class, type) and issubclass(model_class, BiRNNPreTrainedModel):
            return model_class
    raise ValueError(f"{folder} would not load: config.json's `architectures` ({architectures}) names no BiRNN model")


def check_folder_loads(folder: str | Path) -> None:
    """Refuse a folder that would not load as the model its config describes, before anything goes up.

    The weight layout and every header are checked first (`saved_tensors`); then the tensor shapes against a model
    built from `config.json` on the meta device, which names the tensor that disagrees (`num_labels` edited, the
    weights of another run); last the folder is loaded for real, which also refuses weights the config calls for
    and the checkpoint lacks (`BiRNNPreTrainedModel.from_pretrained`)."""
    folder = Path(folder)
    model_class = model_class_of(folder)
    tensors = saved_tensors(folder)
    try:
        config = model_class.config_class.from_pretrained(folder)
        with torch.device("meta"):
            expected = {key: tuple(value.shape) for key, value in model_class(config).state_dict().items()}
    except Exception as error:
        message = f"{folder} would not load: config.json does not build a {model_class.__name__}: {error}"
        raise ValueError(message) from error
    unexpected = sorted(key for key in tensors if key not in expected)
    if unexpected:
        raise ValueError(
            f"{folder} would not load: {tensors[unexpected[0]][0]} holds weights that a {model_class.__name__} "
            f"built from config.json does not have: {unexpected[:8]}"
        )
    mismatched = [
        f"{key} is {list(expected[key])} for config.json but {list(shape)} in {name}"
        for key, (name, shape) in sorted(tensors.items())
        if shape != expected[key]
    ]
    if mismatched:
        raise ValueError(
            f"{folder} would not load: config.json and the weights disagree: {'; '.join(mismatched[:4])}. Was "
            "config.json edited (num_labels, hidden_size, ...) or copied from another run?"
        )
    try:
        model_class.from_pretrained(folder)
    except Exception as error:
        raise ValueError(f"{folder} would not load with {model_class.__name__}.from_pretrained: {error}") from error


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Upload BiRNN model",
    token: str | None = None,
    api: HfApi | None = None,
) -> CommitInfo:
    """Upload `files_to_upload(folder)` to `repo_id` as one commit, creating the repo (private if asked; an existing
    repo keeps its visibility) and the `revision` branch if missing. A folder that would not load is refused before
    any request.

    The same commit deletes the repo's top-level files of the kinds uploaded (`UPLOAD_PATTERNS`, the package's code
    files) that the folder no longer has, so that the repo holds this folder's model and nothing of an earlier one.
    It is made on the head the deletions were chosen from (`parent_commit`): a commit pushed in between fails it
    instead of keeping files this push would have deleted. Files already on the Hub with the same content are left
    out of the commit; with nothing changed no commit is made and the head's info is returned."""
    folder = Path(folder)
    files = files_to_upload(folder)
    api = api or HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if revision is not None:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    head = api.repo_info(repo_id, revision=revision).sha
    uploaded = {file.name for file in files}
    replaced_patterns = UPLOAD_PATTERNS + tuple(package_code_files())
    stale = [
        name
        for name in api.list_repo_files(repo_id, revision=head)
        if _top_level_match(name, replaced_patterns) and name not in uploaded
    ]
    operations = [CommitOperationAdd(path_in_repo=file.name, path_or_fileobj=folder / file.name) for file in files]
    operations += [CommitOperationDelete(path_in_repo=name, is_folder=False) for name in sorted(stale)]
    return api.create_commit(repo_id, operations, commit_message=commit_message, revision=revision, parent_commit=head)


def push_training_output(trainer: Trainer, commit_message: str = "End of training") -> CommitInfo:
    """The last push of a script run with `--push_to_hub`, after it has written its model card, metrics and plots.

    `Trainer` has created `trainer.hub_model_id` and pushed its saves on its own (`--hub_strategy`); this commit adds
    what the script wrote after training, chosen by `files_to_upload`. (`Trainer.push_to_hub` would not do: it first
    overwrites `README.md` with its own draft card, and uploads the whole folder, `training_args.bin` included.)
    """
    args = trainer.args
    return push_folder(
        args.output_dir,
        trainer.hub_model_id,
        private=bool(args.hub_private_repo),
        revision=args.hub_revision,
        commit_message=commit_message,
        token=args.hub_token,
    )
