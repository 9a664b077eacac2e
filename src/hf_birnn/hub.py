"""Publishing a trained BiRNN folder to the Hugging Face Hub: which of its files go up, and the commit that puts
them there.

The selection is an allow-list read from the folder's top level only: weights (safetensors), config, the code
files its `auto_map` needs (so the repo loads with `trust_remote_code=True` where `hf_birnn` is not installed),
tokenizer files, the model card, metrics and plots. Checkpoint folders, optimizer and scheduler states,
`training_args.bin` (a pickle) and test predictions (the test text itself, under the data's license) never match.
"""

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi
from transformers import Trainer

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


def files_to_upload(folder: str | Path) -> list[UploadFile]:
    """The files of a trained folder that belong on the Hub, by name. Fails on a folder without weights or config
    (not a saved model) or with an `auto_map` whose code files are missing (the repo would not load)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: not a saved model folder")
    top_level = sorted(path.name for path in folder.iterdir() if path.is_file())
    names = {name for name in top_level if any(fnmatch.fnmatchcase(name, p) for p in UPLOAD_PATTERNS)}
    if not any(name.endswith(".safetensors") for name in names):
        raise FileNotFoundError(f"{folder} has no safetensors weights (only safetensors are uploaded)")
    names.update(remote_code_files(folder))
    return [UploadFile(name, (folder / name).stat().st_size) for name in sorted(names)]


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
    repo keeps its visibility) and the `revision` branch if missing. Files already on the Hub with the same content
    are left out of the commit; with nothing changed no commit is made and the head's info is returned."""
    folder = Path(folder)
    files = files_to_upload(folder)
    api = api or HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if revision is not None:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    operations = [CommitOperationAdd(path_in_repo=file.name, path_or_fileobj=folder / file.name) for file in files]
    return api.create_commit(repo_id, operations, commit_message=commit_message, revision=revision)


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
