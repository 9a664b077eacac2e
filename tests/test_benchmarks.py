"""scripts/benchmarks: a `--quick` run goes through every section and writes its Markdown pages where a smoke test
belongs (never into docs/benchmarks), and the pages hold what makes their numbers reproducible. Nothing is timed."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_SCRIPT = REPO_ROOT / "scripts" / "benchmarks" / "run.py"
COMMITTED_DOCS = REPO_ROOT / "docs" / "benchmarks"
SECTION_PAGES = ("overhead", "trainer", "int8", "onnx", "scaling", "pipeline", "denormal")
ONNX_RUNTIME_PAGES = ("int8", "onnx", "pipeline")
IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
PAGE_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+\.md)\)")

sys.path.insert(0, str(REPO_ROOT / "scripts"))
from benchmarks import cli, pages  # noqa: E402
from benchmarks.common import Report  # noqa: E402
from benchmarks.environment import describe_run  # noqa: E402


def docs_snapshot() -> dict[str, int]:
    """Every file under docs/benchmarks with its modification time, to see that a run left them alone."""
    if not COMMITTED_DOCS.exists():
        return {}
    return {str(path): path.stat().st_mtime_ns for path in COMMITTED_DOCS.rglob("*")}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One `--quick` run of every section for the tests below: (output folder, completed process, docs before)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    output_dir = tmp_path_factory.mktemp("benchmark")
    docs_before = docs_snapshot()
    command = [sys.executable, str(RUN_SCRIPT), "--quick", "--output_dir", str(output_dir)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    return output_dir, completed, docs_before


@pytest.mark.slow
def test_benchmark_quick_runs_every_section(quick_run):
    output_dir, completed, _ = quick_run
    assert completed.returncode == 0, completed.stderr[-3000:]
    tables = json.loads((output_dir / "results.json").read_text())["tables"]
    assert set(tables) == {"overhead", "directions", "trainer", "int8", "onnx", "scaling", "pipeline", "denormal"}
    assert (output_dir / "length_scaling.png").stat().st_size > 0
    assert "| BiRNN / packed |" in completed.stdout


@pytest.mark.slow
def test_quick_run_writes_pages_with_command_machine_versions_tables_and_images(quick_run):
    output_dir, completed, docs_before = quick_run
    assert completed.returncode == 0, completed.stderr[-3000:]
    docs_dir = output_dir / cli.QUICK_DOCS_SUBDIR
    assert docs_snapshot() == docs_before, "a --quick run without --docs_dir must leave docs/benchmarks alone"
    for name in SECTION_PAGES:
        text = (docs_dir / f"{name}.md").read_text()
        # tuning variables set in the environment come first (scikit-learn sets KMP_* in this process on import)
        command = r"^- \*\*Command:\*\* `(\S+=\S* )*python scripts/benchmarks/run\.py --quick --output_dir "
        assert re.search(command, text, re.M)
        assert re.search(r"^- \*\*Machine:\*\* .+, \d+ cores", text, re.M)
        assert re.search(r"^- \*\*Threads:\*\* 1 ", text, re.M)
        versions = re.search(r"^- \*\*Versions:\*\* (.+)$", text, re.M).group(1)
        assert all(f"{package} " in versions for package in ("python", "torch", "transformers", "hf_birnn"))
        assert ("onnxruntime " in versions) == (name in ONNX_RUNTIME_PAGES)
        assert re.search(r"^- \*\*Clock:\*\* process CPU time .*`--repeats 1`", text, re.M)
        assert re.search(r"^- \*\*Date:\*\* \d{4}-\d\d-\d\d \d\d:\d\d UTC$", text, re.M)
        assert re.search(r"^\| .+ \|\n\|(---\|)+\n\| ", text, re.M), f"{name}.md has no table"
        assert "Smoke test" in text
        for link in IMAGE_LINK.findall(text):
            assert not Path(link).is_absolute() and (docs_dir / link).stat().st_size > 0
    assert IMAGE_LINK.findall((docs_dir / "scaling.md").read_text()) == ["length_scaling.png"]
    index = (docs_dir / "README.md").read_text()
    assert sorted(PAGE_LINK.findall(index)) == sorted(f"{name}.md" for name in SECTION_PAGES)


def test_docs_dir_defaults_to_the_repository_docs_except_for_quick_runs(tmp_path):
    assert cli.parse_args([]).docs_dir == COMMITTED_DOCS
    assert cli.parse_args(["--quick", "--output_dir", str(tmp_path)]).docs_dir == tmp_path / "docs"
    explicit = tmp_path / "pages"
    assert cli.parse_args(["--quick", "--docs_dir", str(explicit)]).docs_dir == explicit
    assert cli.parse_args(["--docs_dir", str(explicit)]).docs_dir == explicit


def test_a_run_rewrites_its_own_pages_and_the_index_keeps_the_others(tmp_path):
    figure = tmp_path / "plot.png"
    figure.write_bytes(b"not really a png")
    docs_dir = tmp_path / "docs"
    first, second = Report(), Report()
    with first.section("denormal"):
        first.table("denormal", "First table", ["a | b", "c"], [[1.23456, "x"]])
    with second.section("scaling"):
        second.table("scaling", "Second table", ["L"], [[16]])
        second.figure(figure, "a plot")
        second.note("A sentence of results.")
    run_info = describe_run(cli.parse_args(["--quick", "--output_dir", str(tmp_path)]), ["--quick"])
    pages.write_pages(docs_dir, first, run_info, cli.SECTIONS)
    written = pages.write_pages(docs_dir, second, run_info, cli.SECTIONS)

    assert written == [docs_dir / "scaling.md", docs_dir / "README.md"]
    scaling_page = (docs_dir / "scaling.md").read_text()
    assert "![a plot](plot.png)" in scaling_page and (docs_dir / "plot.png").read_bytes() == figure.read_bytes()
    assert "A sentence of results." in scaling_page
    assert "| a \\| b | c |\n|---|---|\n| 1.23 | x |" in (docs_dir / "denormal.md").read_text()
    assert pages.read_marker(docs_dir / "denormal.md")["command"].endswith("benchmarks/run.py --quick")
    assert PAGE_LINK.findall((docs_dir / "README.md").read_text()) == ["scaling.md", "denormal.md"]
