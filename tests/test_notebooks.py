"""The chapters' committed form (shared setup cell after the title, no outputs) and the setup cell's suite choice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from helpers import book, notebooks
from helpers.notebooks import SETUP_CELL_ID, SETUP_TAGS, normalise, process, repository, setup_source

REPO = Path(__file__).resolve().parent.parent
COMMITTED = sorted((REPO / "notebooks").glob("*.ipynb"))


# ---- every committed notebook --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", COMMITTED, ids=[p.name for p in COMMITTED])
def test_committed_notebook_has_the_setup_cell_under_its_title_and_no_outputs(path):
    url, branch = repository()
    nb = nbformat.read(path, as_version=4)
    title, setup = nb.cells[0], nb.cells[1]
    assert title.cell_type == "markdown" and title.source.startswith("# "), f"{path.name}: a chapter starts with its title"
    assert setup.cell_type == "code" and setup.id == SETUP_CELL_ID, f"{path.name}: run `python -m helpers.notebooks`"
    assert setup.source == setup_source(url, branch), f"{path.name}: stale setup cell; run `python -m helpers.notebooks`"
    # the book folds its source and shows its output ("suite: <name>"): the page says which suite it was computed on
    assert setup.metadata["tags"] == SETUP_TAGS and "hide-input" in SETUP_TAGS and "remove-cell" not in SETUP_TAGS
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: outputs are committed"
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", COMMITTED, ids=[p.name for p in COMMITTED])
def test_only_the_setup_cell_sets_the_suite(path):
    """The suite is one setting ($BOOK_SUITE via the first cell); a chapter that sets SUITE itself breaks nano builds."""
    import re

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.get("id") != SETUP_CELL_ID:
            assert not re.search(r"^\s*SUITE\s*=", cell.source, re.M), f"{path.name}: a cell sets SUITE: {cell.source[:60]!r}"


def test_committed_notebooks_are_exactly_what_the_tool_writes():
    changed = process(COMMITTED, check=True)
    assert not changed, f"run `python -m helpers.notebooks`: {[p.name for p in changed]}"


def test_notebooks_are_numbered():
    for path in COMMITTED:
        assert path.name[:2].isdigit() and path.name[2] == "_", f"{path.name}: chapters are named NN_title.ipynb"


# ---- the tool ------------------------------------------------------------------------------------------------------


def _config(tmp_path: Path, url="https://github.com/example/book", branch="main") -> Path:
    path = tmp_path / "_config.yml"
    path.write_text(f"title: t\nrepository:\n  url: {url}\n  branch: {branch}\n")
    return path


def _dirty_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("x = 1\nx")
    code.outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "1"}, execution_count=3)]
    code.execution_count = 3
    code.metadata["execution"] = {"iopub.status.busy": "2026-01-01"}
    old_setup = nbformat.v4.new_code_cell("import helpers  # an old setup cell")
    old_setup.id = SETUP_CELL_ID
    nb.cells = [old_setup, nbformat.v4.new_markdown_cell("# Title"), code]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nbformat.write(nb, path)
    return path


def test_tool_writes_setup_cell_and_strips_outputs(tmp_path):
    config = _config(tmp_path, url="https://github.com/example/book/", branch="dev")
    path = _dirty_notebook(tmp_path / "01_x.ipynb")
    assert process([path], check=True, config=config) == [path]
    assert process([path], check=False, config=config) == [path]
    nb = nbformat.read(path, as_version=4)
    assert [c.cell_type for c in nb.cells] == ["markdown", "code", "code"]  # old setup cell replaced, not doubled
    setup = nb.cells[1]  # right under the title
    assert setup.id == SETUP_CELL_ID and setup.metadata["tags"] == ["setup", "hide-input"]
    assert '"helpers @ git+https://github.com/example/book@dev"' in setup.source
    assert "setup_notebook()" in setup.source
    assert nb.cells[2].outputs == [] and nb.cells[2].execution_count is None
    assert "execution" not in nb.cells[2].metadata
    assert "widgets" not in nb.metadata
    assert process([path], check=True, config=config) == []  # idempotent


def test_setup_cell_goes_first_when_there_is_no_title(tmp_path):
    config = _config(tmp_path)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("Some text, no title"), nbformat.v4.new_code_cell("x = 1")]
    path = tmp_path / "04_untitled.ipynb"
    nbformat.write(nb, path)
    process([path], check=False, config=config)
    assert nbformat.read(path, as_version=4).cells[0].id == SETUP_CELL_ID


def test_setup_cell_is_valid_python_and_installs_only_on_colab():
    source = setup_source("https://github.com/example/book", "main")
    compile(source, "setup", "exec")
    assert source.index('if "google.colab" in sys.modules') < source.index('"pip", "install"')


def test_tool_cli_check_exit_codes(tmp_path, monkeypatch):
    config = _config(tmp_path)
    monkeypatch.setattr(notebooks, "CONFIG", config)
    path = _dirty_notebook(tmp_path / "02_y.ipynb")
    assert notebooks.main(["--check", str(path)]) == 1
    assert notebooks.main([str(path)]) == 0
    assert notebooks.main(["--check", str(path)]) == 0


def test_tool_bad_input_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(notebooks, "CONFIG", _config(tmp_path, url="http://insecure.example"))
    bad = tmp_path / "03_z.ipynb"
    bad.write_text("{not json")
    assert notebooks.main([str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    monkeypatch.setattr(notebooks, "CONFIG", _config(tmp_path))
    assert notebooks.main([str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a readable notebook" in err and "\n" not in err


def test_repository_url_is_the_one_in_config():
    url, branch = repository()
    assert url.startswith("https://github.com/") and branch
    cfg = (REPO / "_config.yml").read_text()
    assert cfg.count(url) == 1  # one setting, nowhere else in the config


# ---- the first cell's logic ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env, colab, gpu, expected",
    [
        ({}, False, False, "pico"),
        ({}, False, True, "pico"),  # locally the default stays pico; BOOK_SUITE picks another
        ({}, True, False, "pico"),
        ({}, True, True, book.GPU_SUITE),
        ({"BOOK_SUITE": "nano"}, True, True, "nano"),
        ({"BOOK_SUITE": " "}, True, True, book.GPU_SUITE),
    ],
)
def test_choose_suite(env, colab, gpu, expected):
    assert book.choose_suite(env, colab, gpu) == expected


def test_gpu_suite_is_a_hub_suite():
    from helpers.suites import HUB_SUITES

    assert book.GPU_SUITE in HUB_SUITES


def test_setup_notebook_exports_the_suite(monkeypatch, capsys):
    monkeypatch.delenv("BOOK_SUITE", raising=False)
    monkeypatch.setattr(book, "on_colab", lambda: False)
    assert book.setup_notebook() == "pico"
    import os

    assert os.environ["BOOK_SUITE"] == "pico"
    assert capsys.readouterr().out.strip() == "suite: pico"


def test_setup_notebook_on_colab_with_gpu(monkeypatch, tmp_path):
    monkeypatch.delenv("BOOK_SUITE", raising=False)
    monkeypatch.delenv("BOOK_DATA", raising=False)
    monkeypatch.setattr(book, "on_colab", lambda: True)
    monkeypatch.setattr(book, "has_gpu", lambda: True)
    assert book.setup_notebook(verbose=False) == book.GPU_SUITE
    import os

    assert os.environ["BOOK_DATA"] == book.COLAB_DATA


def test_setup_notebook_rejects_unknown_suite(monkeypatch):
    from helpers.suites import SuiteError

    monkeypatch.setenv("BOOK_SUITE", "picoo")
    with pytest.raises(SuiteError, match="unknown suite 'picoo'"):
        book.setup_notebook(verbose=False)


def test_setup_cell_runs_locally(tmp_path):
    """The cell as written into the notebooks, run by a fresh interpreter outside Colab: imports and picks the suite."""
    source = setup_source(*repository()) + "\nprint(repr(SUITE))"
    env = {"PATH": "/usr/bin:/bin", "BOOK_SUITE": "nano", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", source], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "'nano'"
    assert "pip" not in out.stderr
