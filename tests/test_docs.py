"""The user's guide stays true: every README / docs snippet marked runnable runs as pasted (on a tiny main-job
output), every relative link resolves, the README stays short, and the pages speak about the package, not about
how it was made."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import run_ner  # noqa: E402

RUNNABLE = re.compile(r"<!-- runnable -->\s*\n```(python|bash)\n(.*?)\n```", re.DOTALL)
GUIDE_PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("**/*.md"))]
WRITTEN_PAGES = [page for page in GUIDE_PAGES if "benchmarks" not in page.relative_to(REPO_ROOT).parts]
# how a page would talk about the package's making rather than its use
DEVELOPMENT_TALK = re.compile(
    r"\bour (machine|machines|disk|tests showed)\b|\bsession\b|\bearlier machine\b|\bissue \d|\bprevious run\b"
    r"|\bwe (measured|found|tried)\b",
    re.IGNORECASE,
)
TINY_MAIN_JOB = "embedding_size=16,hidden_size=16,num_hidden_layers=1,use_crf=true,crf_constraints=iob2"


def runnable_snippets() -> list[tuple[str, str, str]]:
    """(id, language, code) of each snippet marked `<!-- runnable -->` in the README and the docs."""
    snippets = []
    for page in GUIDE_PAGES:
        for number, (language, code) in enumerate(RUNNABLE.findall(page.read_text()), start=1):
            snippets.append((f"{page.relative_to(REPO_ROOT)}#{number}", language, code))
    return snippets


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A folder laid out like a clone after the main job: the repo's scripts, data and examples, and a tiny
    `outputs/wnut17-birnn` (a few steps of the main job, so that snippets using it run in seconds)."""
    folder = tmp_path_factory.mktemp("clone")
    for name in ("scripts", "data", "examples", "docs", "tests", "model_cards"):
        (folder / name).symlink_to(REPO_ROOT / name)
    run_ner.main(
        [
            "--output_dir", str(folder / "outputs" / "wnut17-birnn"),
            "--word_vectors", "none",
            "--config_overrides", TINY_MAIN_JOB,
            "--tokenizer_vocab_size", "500",
            "--max_train_samples", "64",
            "--max_eval_samples", "16",
            "--max_predict_samples", "16",
            "--num_train_epochs", "1",
            "--run_demo", "false",
        ]
    )  # fmt: skip
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("snippet_id,language,code", runnable_snippets(), ids=[s[0] for s in runnable_snippets()])
def test_runnable_snippets_run_as_pasted(workspace, snippet_id, language, code):
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # `python` is the venv's
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    command = [sys.executable, "-c", code] if language == "python" else ["bash", "-euo", "pipefail", "-c", code]
    root_before = {path.name for path in REPO_ROOT.iterdir()}
    result = subprocess.run(command, cwd=workspace, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{snippet_id} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    assert not {path.name for path in REPO_ROOT.iterdir()} - root_before, "a snippet wrote into the repo root"


def test_the_guide_has_runnable_snippets():
    pages = {snippet_id.split("#")[0] for snippet_id, _, _ in runnable_snippets()}
    assert "README.md" in pages


@pytest.mark.parametrize("page", GUIDE_PAGES, ids=[str(p.relative_to(REPO_ROOT)) for p in GUIDE_PAGES])
def test_relative_links_resolve(page):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


def test_the_readme_is_a_short_guide():
    assert len((REPO_ROOT / "README.md").read_text().splitlines()) <= 250


@pytest.mark.parametrize("page", WRITTEN_PAGES, ids=[str(p.relative_to(REPO_ROOT)) for p in WRITTEN_PAGES])
def test_pages_speak_about_the_package_not_its_development(page):
    found = [match.group(0) for match in DEVELOPMENT_TALK.finditer(page.read_text())]
    assert not found, f"{page.name}: {found}"
