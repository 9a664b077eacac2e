"""Publishing to the Hub and loading by repo id, against the in-memory Hub of `hub_server.py` on 127.0.0.1: the
Trainer's pushes of a tiny `run_ner.py --push_to_hub` run, `scripts/push_to_hub.py` (a push replacing an earlier
weight layout, folders that would not load refused), and loading the pushed repo through the Auto classes and
`pipeline` with and without `hf_birnn` installed.

Code that reads `HF_ENDPOINT` runs in subprocesses with the variable set (huggingface_hub reads it once, at import,
and transformers keeps one `HfApi` made then). The push script and the checks run in this process, with the
constants that huggingface_hub reads at call time patched (`hub_client`)."""

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from hub_server import HubServer
from huggingface_hub import HfApi, ModelCard, constants, hf_hub_download
from huggingface_hub.errors import RepositoryNotFoundError
from test_run_ner import REPO_ROOT, conll_args, make_sentences, write_conll
from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

from hf_birnn import BiRNNConfig, BiRNNForTokenClassification
from hf_birnn.hub import files_to_upload
from hf_birnn.testing_utils import WITHOUT_HF_BIRNN
from hf_birnn.tokenization import train_wordpiece_tokenizer

sys.path.insert(0, str(REPO_ROOT / "scripts"))

import push_to_hub  # noqa: E402

TOKEN = "hf_test_token_for_the_local_hub"
USER = "user"
SENTENCE = "Carla Jones lives in New York ."
PUBLISHED = {
    "README.md", "all_results.json", "config.json", "configuration_birnn.py", "model.safetensors",
    "modeling_birnn.py", "tokenizer.json", "tokenizer_config.json", "training_curves.png",
}  # fmt: skip

TRAIN_AND_PUSH = """
import json, sys
sys.path.insert(0, sys.argv[1])
import run_ner
run_ner.main(json.loads(sys.argv[2]))
"""

# run after WITHOUT_HF_BIRNN (remote code), or after `import hf_birnn`, which registers the classes: then no code
# from the repo runs
LOAD_BY_REPO_ID = """
import json, sys
settings = json.loads(sys.argv[1])
import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

repo_id, options = settings["repo_id"], {"trust_remote_code": True} if settings["remote_code"] else {}
model = AutoModelForTokenClassification.from_pretrained(repo_id, **options).eval()
tokenizer = AutoTokenizer.from_pretrained(repo_id, **options)
with torch.no_grad():
    torch.save(model(**tokenizer(settings["sentence"], return_tensors="pt")).logits, settings["logits_path"])
tagger = pipeline("token-classification", model=repo_id, aggregation_strategy="simple", **options)
entities = [{**entity, "score": float(entity["score"])} for entity in tagger(settings["sentence"])]
print(json.dumps({"model_module": type(model).__module__, "entities": entities}))
"""


@pytest.fixture(scope="module")
def hub():
    with HubServer({TOKEN: USER}) as server:
        yield server


@pytest.fixture(scope="module")
def hub_env(hub, tmp_path_factory) -> dict[str, str]:
    """The environment of a subprocess that talks to the test Hub, with its own HF_HOME (nothing reaches the user's
    cache) and the fake token."""
    home = tmp_path_factory.mktemp("hf_home")
    return {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_TOKEN": TOKEN,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_MODULES_CACHE": str(home / "modules"),
        "HF_HUB_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "OMP_NUM_THREADS": "1",
    }


@pytest.fixture(scope="module")
def hub_client(hub, tmp_path_factory):
    """This process's huggingface_hub pointed at the test Hub, with the fake token and a temporary HF_HOME.

    It computed `ENDPOINT` and the paths under HF_HOME when first imported, so the module constants it reads at call
    time are patched instead: `HfApi()` made afterwards takes the endpoint; downloads, and the agent-harness registry
    that building request headers fetches and caches, land in the temporary home. (The host sets derived from the
    endpoint at import only govern redirects, which the test Hub never sends.)"""
    home, user_home = str(tmp_path_factory.mktemp("hf_home_in_process")), constants.HF_HOME
    with pytest.MonkeyPatch.context() as patch:
        for name, value in list(vars(constants).items()):
            if name.isupper() and isinstance(value, str) and value.startswith(user_home):
                patch.setattr(constants, name, home + value[len(user_home) :])
        patch.setattr(constants, "HF_HUB_CACHE", os.path.join(home, "hub"))  # also where HF_HUB_CACHE is set apart
        patch.setattr(constants, "AGENT_HARNESSES_PATH", os.path.join(home, ".agent_harnesses.json"))
        patch.setattr(constants, "ENDPOINT", hub.url)
        patch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
        patch.setattr(constants, "HF_HUB_OFFLINE", False)
        patch.setenv("HF_TOKEN", TOKEN)
        yield hub


@pytest.fixture(scope="module")
def trainer_run(hub, hub_env, tmp_path_factory) -> Path:
    """A tiny `run_ner.py --push_to_hub --hub_model_id tagger-trainer` run (a bare name: the Hub adds the user)."""
    data_dir, output_dir = tmp_path_factory.mktemp("data"), tmp_path_factory.mktemp("trainer_run")
    files = {}
    for split, count, seed in (("train", 64, 0), ("validation", 16, 1), ("test", 16, 2)):
        files[split] = data_dir / f"{split}.txt"
        write_conll(files[split], make_sentences(count, seed))
    argv = conll_args(files, output_dir, "--num_train_epochs", "20", "--seed", "3")
    argv += ["--push_to_hub", "--hub_model_id", "tagger-trainer"]
    result = run_in_subprocess(TRAIN_AND_PUSH, hub_env, str(REPO_ROOT / "scripts"), json.dumps(argv))
    assert result.returncode == 0, result.stderr[-3000:]
    return output_dir


@pytest.fixture(scope="module")
def script_push(trainer_run, hub_client) -> str:
    """The trained folder pushed by `scripts/push_to_hub.py` to `user/tagger`; returns the repo id."""
    assert push_to_hub.main([str(trainer_run), f"{USER}/tagger", "--commit_message", "First upload"]) == 0
    return f"{USER}/tagger"


@pytest.fixture(scope="module")
def reference_outputs(trainer_run) -> tuple[torch.Tensor, list[dict]]:
    """Logits and pipeline entities of the trained folder, loaded from disk here."""
    model = AutoModelForTokenClassification.from_pretrained(trainer_run).eval()
    tokenizer = AutoTokenizer.from_pretrained(trainer_run)
    with torch.no_grad():
        logits = model(**tokenizer(SENTENCE, return_tensors="pt")).logits
    tagger = pipeline("token-classification", model=str(trainer_run), aggregation_strategy="simple")
    return logits, [{**entity, "score": float(entity["score"])} for entity in tagger(SENTENCE)]


def run_in_subprocess(script: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT
    )


def saved_tagger(folder: Path) -> Path:
    """A tiny untrained tagger and tokenizer saved with `save_pretrained`, as the Trainer saves them."""
    tokenizer = train_wordpiece_tokenizer([" ".join(tokens) for tokens, _ in make_sentences(16, 0)], vocab_size=100)
    config = BiRNNConfig(vocab_size=len(tokenizer), embedding_size=8, hidden_size=8, num_labels=3)
    BiRNNForTokenClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# ---- which files go up ----


def test_upload_selection_leaves_out_checkpoints_pickles_predictions_and_unused_code(tmp_path):
    folder = saved_tagger(tmp_path / "run")
    for name in ("training_args.bin", "optimizer.pt", "test_predictions.conll", "label_list.json", "notes.py"):
        (folder / name).write_text("x")
    for name in ("README.md", "all_results.json", "eval_results.json", "training_curves.png"):
        (folder / name).write_text("x")
    (folder / "checkpoint-8").mkdir()
    for name in ("model.safetensors", "optimizer.pt", "config.json", "README.md"):
        (folder / "checkpoint-8" / name).write_text("x")

    names = [file.name for file in files_to_upload(folder)]
    assert names == sorted(PUBLISHED | {"eval_results.json"})


def test_upload_selection_refuses_a_folder_whose_auto_map_code_is_missing(tmp_path):
    folder = saved_tagger(tmp_path / "run")
    (folder / "configuration_birnn.py").unlink()
    with pytest.raises(FileNotFoundError, match="configuration_birnn"):
        files_to_upload(folder)


def test_upload_selection_refuses_a_folder_without_safetensors_weights(tmp_path):
    folder = saved_tagger(tmp_path / "run")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="safetensors"):
        files_to_upload(folder)


def test_dry_run_lists_the_files_and_uploads_nothing(trainer_run, hub_client, capsys):
    requests_before = len(hub_client.requests)
    assert push_to_hub.main([str(trainer_run), f"{USER}/dry-run", "--dry_run"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert listed == sorted(PUBLISHED)
    assert len(hub_client.requests) == requests_before  # not even a look-up
    assert ("model", f"{USER}/dry-run") not in hub_client.repos


# ---- publishing ----


def test_trainer_pushes_during_training_and_the_run_ends_with_the_card_metrics_and_plots(trainer_run, hub):
    repo = hub.repo(f"{USER}/tagger-trainer")
    titles = [commit.title for commit in repo.history("main")]
    assert titles[0] == "End of training" and "Model save" in titles and "initial commit" in titles
    assert any(title.startswith("Training in progress, epoch") for title in titles)
    on_hub = repo.resolve("main").files
    assert PUBLISHED <= set(on_hub)
    for name in PUBLISHED:
        assert on_hub[name] == (trainer_run / name).read_bytes(), name  # the card is the script's, not a draft
    assert f'model="{USER}/tagger-trainer"' in on_hub["README.md"].decode()  # the usage example names the repo
    assert not any(name.startswith("checkpoint-") for name in on_hub)
    assert hub.unhandled == []


def test_push_script_uploads_exactly_the_selected_files(script_push, trainer_run, hub):
    on_hub = hub.repo(script_push).resolve("main").files
    assert set(on_hub) == PUBLISHED | {".gitattributes"}
    for name in PUBLISHED:
        assert on_hub[name] == (trainer_run / name).read_bytes(), name
    config = json.loads(on_hub["config.json"])
    assert config["auto_map"]["AutoModelForTokenClassification"] == "modeling_birnn.BiRNNForTokenClassification"
    assert hub.unhandled == []


def test_model_card_metadata_validates_and_carries_the_test_metrics(script_push, trainer_run, hub_client):
    card = ModelCard.load(script_push)
    card.validate()  # POST /api/validate-yaml on the test Hub
    results = json.loads((trainer_run / "all_results.json").read_text())
    test_metrics = {r.metric_type: r.metric_value for r in card.data.eval_results if r.dataset_split == "test"}
    assert test_metrics == {name: round(results[f"test_{name}"], 4) for name in ("precision", "recall", "f1")}
    info = HfApi().model_info(script_push)
    assert info.pipeline_tag == "token-classification" and "hf_birnn" in info.tags

    no_metrics = "model-index:\n- name: x\n  results:\n  - task: {type: ner}\n    dataset: {type: d, name: d}"
    with pytest.raises(ValueError, match="metrics"):
        ModelCard(f"---\n{no_metrics}\n---\n# x\n").validate()


def test_second_push_makes_a_new_commit_and_downloads_see_the_new_content(
    script_push, trainer_run, hub_client, tmp_path
):
    api = HfApi()
    first_sha = api.model_info(script_push).sha
    folder = shutil.copytree(trainer_run, tmp_path / "run", ignore=shutil.ignore_patterns("checkpoint-*"))
    original = (folder / "README.md").read_text()
    (folder / "README.md").write_text(original + "\nRetrained with more data.\n")
    assert push_to_hub.main([str(folder), script_push, "--commit_message", "Update card"]) == 0

    second_sha = api.model_info(script_push).sha
    assert second_sha != first_sha
    first, second = (hub_client.repo(script_push).resolve(sha).files for sha in (first_sha, second_sha))
    assert {name for name in second if second[name] != first.get(name)} == {"README.md"}  # unchanged files skipped
    assert Path(hf_hub_download(script_push, "README.md")).read_text().endswith("Retrained with more data.\n")
    assert Path(hf_hub_download(script_push, "README.md", revision=first_sha)).read_text() == original


def test_private_push_to_a_new_branch(trainer_run, hub_client):
    argv = [str(trainer_run), f"{USER}/private-tagger", "--private", "--revision", "v1"]
    assert push_to_hub.main(argv) == 0
    repo = hub_client.repo(f"{USER}/private-tagger")
    assert repo.private
    assert set(repo.resolve("v1").files) == PUBLISHED | {".gitattributes"}
    assert set(repo.resolve("main").files) == {".gitattributes"}
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).model_info(f"{USER}/private-tagger")


# ---- replacing the repo's model ----


def tiny_tagger(seed: int) -> BiRNNForTokenClassification:
    torch.manual_seed(seed)
    config = BiRNNConfig(vocab_size=100, embedding_size=8, hidden_size=8, num_hidden_layers=1, num_labels=3)
    return BiRNNForTokenClassification(config)


def saved(model: BiRNNForTokenClassification, folder: Path, sharded: bool) -> Path:
    """`save_pretrained` as one file or, with shards far smaller than the tiny model, as several."""
    model.save_pretrained(folder, max_shard_size="2KB" if sharded else "50GB")
    return folder


def weight_names(names) -> set[str]:
    return {name for name in names if "/" not in name and name.startswith("model") and "safetensors" in name}


@pytest.mark.parametrize("first_sharded", [False, True], ids=["single-then-sharded", "sharded-then-single"])
def test_a_push_replaces_the_weight_layout_of_the_previous_one(first_sharded, hub_client, tmp_path):
    """A loader prefers `model.safetensors` to an index, so a single file left beside new shards would load the
    old model; shards and an index left beside a new single file would be wrong the other way round."""
    repo_id, api = f"{USER}/relayout-{'sharded' if first_sharded else 'single'}-first", HfApi()
    first = saved(tiny_tagger(0), tmp_path / "first", sharded=first_sharded)
    assert push_to_hub.main([str(first), repo_id]) == 0
    for name in ("last-checkpoint/model.safetensors", "notes.txt"):  # not the model's: kept
        api.upload_file(path_or_fileobj=b"x", path_in_repo=name, repo_id=repo_id)
    head = api.model_info(repo_id).sha
    second_model = tiny_tagger(1)
    second = saved(second_model, tmp_path / "second", sharded=not first_sharded)
    assert push_to_hub.main([str(second), repo_id, "--commit_message", "Second model"]) == 0

    repo = hub_client.repo(repo_id)
    assert repo.resolve("main").title == "Second model"
    assert repo.resolve("main").parent == head  # deletions and additions in one commit
    on_hub = set(api.list_repo_files(repo_id))
    assert weight_names(on_hub) == weight_names(path.name for path in second.iterdir())
    if first_sharded:
        assert weight_names(on_hub) == {"model.safetensors"}
    else:
        assert "model.safetensors" not in on_hub and len(weight_names(on_hub)) >= 3  # 2+ shards and the index
    assert {"last-checkpoint/model.safetensors", "notes.txt", ".gitattributes"} <= on_hub

    loaded = BiRNNForTokenClassification.from_pretrained(repo_id).state_dict()
    expected = second_model.state_dict()
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key

    head = api.model_info(repo_id).sha
    assert push_to_hub.main([str(second), repo_id]) == 0
    assert api.model_info(repo_id).sha == head  # nothing changed: no commit, nothing deleted


# ---- refusing a folder that would not load ----


def truncated_file(folder: Path) -> None:
    saved(tiny_tagger(2), folder, sharded=False)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])


def missing_shard(folder: Path) -> None:
    saved(tiny_tagger(2), folder, sharded=True)
    (folder / "model-00002-of-00005.safetensors").unlink()


def index_beside_a_later_single_file(folder: Path) -> None:
    saved(tiny_tagger(2), folder, sharded=True)
    saved(tiny_tagger(3), folder, sharded=False)  # removes the shards, keeps the index


def single_file_beside_later_shards(folder: Path) -> None:
    saved(tiny_tagger(2), folder, sharded=False)
    saved(tiny_tagger(3), folder, sharded=True)  # keeps model.safetensors, which a loader would read


def more_labels_in_config(folder: Path) -> None:
    saved(tiny_tagger(2), folder, sharded=False)
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {str(i): f"TAG{i}" for i in range(5)}
    config["label2id"] = {f"TAG{i}": i for i in range(5)}
    (folder / "config.json").write_text(json.dumps(config))


def more_layers_in_config(folder: Path) -> None:
    saved(tiny_tagger(2), folder, sharded=False)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 2}))


BROKEN_FOLDERS = {
    "truncated": (truncated_file, "model.safetensors is not a readable safetensors file"),
    "missing-shard": (missing_shard, "names weight files that are missing: ['model-00002-of-00005.safetensors']"),
    "stale-index": (index_beside_a_later_single_file, "holds both model.safetensors and a model.safetensors.index"),
    "stale-single-file": (single_file_beside_later_shards, "holds both model.safetensors and a model.safetensors"),
    "label-mismatch": (
        more_labels_in_config,
        "config.json and the weights disagree: classifier.bias is [5] for config.json but [3] in model.safetensors; "
        "classifier.weight is [5, 16] for config.json but [3, 16] in model.safetensors",
    ),
    "layer-missing": (more_layers_in_config, "lacks weights that its config calls for: ['birnn.layers.1."),
}


@pytest.fixture(scope="module")
def published_tagger(hub_client, tmp_path_factory) -> str:
    """A repo holding a good tiny tagger, which refused pushes must leave as it is."""
    folder = saved(tiny_tagger(1), tmp_path_factory.mktemp("published"), sharded=False)
    assert push_to_hub.main([str(folder), f"{USER}/published-tagger"]) == 0
    return f"{USER}/published-tagger"


@pytest.mark.parametrize("dry_run", [False, True], ids=["push", "dry-run"])
@pytest.mark.parametrize("broken", list(BROKEN_FOLDERS))
def test_a_folder_that_would_not_load_is_refused_before_anything_is_sent(
    broken, dry_run, published_tagger, hub_client, tmp_path
):
    """A repo that does not load, or loads other weights than the folder's, is worse than no push: the check runs
    on the folder, before the repo is created or looked up."""
    make_broken, message = BROKEN_FOLDERS[broken]
    folder = tmp_path / "run"
    make_broken(folder)
    head, requests_before = hub_client.repo(published_tagger).branches["main"], len(hub_client.requests)
    for repo_id in (published_tagger, f"{USER}/never-created"):
        with pytest.raises((ValueError, OSError)) as refusal:
            push_to_hub.main([str(folder), repo_id, *(["--dry_run"] if dry_run else [])])
        assert message in str(refusal.value) and str(folder) in str(refusal.value)
    assert len(hub_client.requests) == requests_before
    assert hub_client.repo(published_tagger).branches["main"] == head
    assert ("model", f"{USER}/never-created") not in hub_client.repos


# ---- loading by repo id ----


@pytest.fixture(scope="module")
def loaded_by_repo_id(script_push, hub_env, tmp_path_factory) -> dict[bool, tuple[dict, torch.Tensor]]:
    """The pushed repo loaded by repo id in two fresh processes at once, each with an empty cache: with remote code
    where hf_birnn is not importable (key True), and with hf_birnn (key False). Their outputs and logits."""

    def load(remote_code: bool) -> tuple[dict, torch.Tensor]:
        home = tmp_path_factory.mktemp("remote_code" if remote_code else "hf_birnn")
        env = {**hub_env, "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"), "HF_MODULES_CACHE": str(home)}
        settings = {"repo_id": script_push, "sentence": SENTENCE, "remote_code": remote_code}
        settings["logits_path"] = str(home / "logits.pt")
        script = (WITHOUT_HF_BIRNN if remote_code else "import hf_birnn\n") + LOAD_BY_REPO_ID
        result = run_in_subprocess(script, env, json.dumps(settings))
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout.strip().splitlines()[-1]), torch.load(settings["logits_path"])

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip((True, False), pool.map(load, (True, False)), strict=True))


@pytest.mark.parametrize("remote_code", [True, False], ids=["remote-code-without-hf_birnn", "with-hf_birnn"])
def test_loads_by_repo_id_through_auto_classes_and_pipeline(remote_code, loaded_by_repo_id, reference_outputs, hub):
    loaded, logits = loaded_by_repo_id[remote_code]
    if remote_code:
        assert loaded["model_module"].startswith("transformers_modules"), loaded["model_module"]
    else:
        assert loaded["model_module"] == "hf_birnn.modeling_birnn"
    reference_logits, reference_entities = reference_outputs
    torch.testing.assert_close(logits, reference_logits, atol=1e-5, rtol=0)
    found = [(entity["entity_group"], entity["word"]) for entity in loaded["entities"]]
    assert found == [("PER", "Carla Jones"), ("LOC", "New York")]
    for entity, reference in zip(loaded["entities"], reference_entities, strict=True):
        assert entity == {**reference, "score": pytest.approx(reference["score"], abs=1e-5)}
    assert hub.unhandled == []
