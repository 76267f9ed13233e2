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


# ---- the chapters on suites other than pico, run in-process on stand-ins ---------------------------------------------


def run_chapter(path: Path, suite: str, monkeypatch) -> list:
    """Run every code cell of a chapter but the setup cell in one namespace, as a kernel would (the value of a cell's
    last expression is displayed); return everything displayed. Figures go through the book-build path."""
    import ast

    import IPython.display

    monkeypatch.setenv("BOOK_BUILD", "1")
    shown: list = []
    monkeypatch.setattr(IPython.display, "display", lambda *objs, **kw: shown.extend(objs))
    ns = {"SUITE": suite, "display": lambda *objs, **kw: shown.extend(objs), "__name__": "__chapter__"}
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code" or cell.get("id") == SETUP_CELL_ID:
            continue
        tree = ast.parse(cell.source)
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, f"{path.name}:{cell.id}", "exec"), ns)
        if last is not None:
            value = eval(compile(ast.Expression(last.value), f"{path.name}:{cell.id}", "eval"), ns)
            if value is not None:
                shown.append(value)
    return shown


def _markdown(shown) -> str:
    from IPython.display import Markdown

    return "\n".join(o.data for o in shown if isinstance(o, Markdown))


class _Tokenizer:
    """Enough of a tokenizer for the chapters: a vocabulary size, encoding a prompt, decoding an id."""

    def __init__(self, size: int):
        self.size = size

    def __len__(self):
        return self.size

    def __call__(self, text, return_tensors=None, **kw):
        import torch

        return {"input_ids": torch.tensor([[1, 2, 3]])}

    def decode(self, ids):
        return " light"


def test_chapter_00_on_a_hub_suite(monkeypatch):
    """pythia-small: the seeds are those of 160m (not of the smallest size), a seed changes the data order, the
    corpus is text the runs never trained on, checkpoints are hub revisions."""
    import polars as pl
    import torch

    from helpers import corpus, suites

    class Model(torch.nn.Module):
        def forward(self, ids):
            from types import SimpleNamespace

            return SimpleNamespace(logits=torch.zeros(1, ids.shape[1], 8))

    monkeypatch.setattr(suites.HubSuite, "tokenizer", lambda self, run=None: _Tokenizer(50277))
    monkeypatch.setattr(suites.HubSuite, "load", lambda self, run, step, **kw: (Model(), _Tokenizer(50277)))
    monkeypatch.setattr(corpus, "corpus_summary", lambda name, tok: pl.DataFrame({"domain": ["bible"], "split": ["test"]}))
    text = _markdown(run_chapter(REPO / "notebooks" / "00_model_suite.ipynb", "pythia-small", monkeypatch))
    assert "**6 runs** of 3 sizes" in text
    assert "4 runs of size 160m differ in their seed (`pythia-160m`, `pythia-160m-seed1`" in text
    assert "70m" not in text.split("differ in their seed")[0].split("sizes")[-1]  # no seeds claimed for the smallest
    assert "order of the training batches" in text and "same batches in the same order" not in text
    assert "EleutherAI trained them on the Pile, not on `pico-pile`" in text and "never trained on" in text
    assert "Every run has the same 154 checkpoints, from step 0 to step 143,000" in text
    assert "training logs are not published" in text
    assert 'revision="step' in text and "<data>/suites" not in text


def _stand_in_table(monkeypatch, runs, steps, same_first_two: bool, kind: str):
    """A loss table of synthetic curves; with ``same_first_two`` the first two checkpoints have equal losses (as
    Pythia's step 0 and step 1)."""
    from types import SimpleNamespace

    import numpy as np
    import polars as pl

    from helpers.atlas import synthetic_atlas

    atlas = synthetic_atlas(steps, n=300, seed=5, runs=tuple(runs))
    curves = {}
    for r in runs:
        m = atlas.curves[r].copy()
        if same_first_two:
            m[:, 1] = m[:, 0]
        curves[r] = m
    suite = SimpleNamespace(
        name="stand-in", kind=kind, run_names=list(runs), tokenizer=lambda: _Tokenizer(4096),
        run=lambda name: SimpleNamespace(name=name, params=1_000_000 * (1 + runs.index(name)), data_seed=None if kind == "hub" else 0),
    )
    samples = atlas.samples.select("sample_id", "doc_id", "domain", "position", "target_id", "target_text", "context_text").with_columns(pl.lit(4).alias("k"))
    table = SimpleNamespace(
        suite=suite, samples=samples, runs=list(runs), settings={"split": "test", "context": 128},
        matrix=lambda r: (curves[r], np.asarray(steps)),
        validation=lambda: pl.DataFrame(schema={"run": pl.String, "step": pl.Int64, "loss": pl.Float64, "tokens": pl.Int64}),
    )
    return table, atlas


def test_chapter_01_leaves_out_pairs_where_nothing_changed(monkeypatch):
    from helpers import losses
    from helpers.schedule import PYTHIA_CHECKPOINTS

    steps = PYTHIA_CHECKPOINTS[:30]
    table, _ = _stand_in_table(monkeypatch, ["syn-1m", "syn-2m"], steps, same_first_two=True, kind="hub")
    monkeypatch.setattr(losses, "load_losses", lambda suite, **kw: table)
    text = _markdown(run_chapter(REPO / "notebooks" / "01_per_token_losses.ipynb", "stand-in", monkeypatch))
    assert "Left out: the pairs 0→1, where no sampled loss changed" in text
    assert "No validation losses are recorded" in text


def test_chapter_02_on_a_one_run_hub_suite(monkeypatch):
    """One run (as BOOK_SUITE=pythia-410m) and one blob on the map: no pairs, no silhouette, no island; hub
    corpus shares are not set beside the Pile's."""
    import numpy as np
    import polars as pl

    from helpers import atlas as atlas_module
    from helpers import losses, probes
    from helpers.atlas import atlas_from_arrays
    from helpers.recipes import RECIPES

    steps = RECIPES["pico"].steps
    table, base = _stand_in_table(monkeypatch, ["pythia-410m"], steps, same_first_two=False, kind="hub")
    xy = np.random.default_rng(1).normal(0, 1, (300, 2))
    one = atlas_from_arrays(base.samples.drop("x", "y", "cluster", "shape", "final_loss"), {"pythia-410m": base.curves[base.run]},
                            steps, "pythia-410m", suite="stand-in", embedding=xy, min_cluster_size=200)
    monkeypatch.setattr(losses, "load_losses", lambda suite, **kw: table)
    monkeypatch.setattr(atlas_module, "build_atlas", lambda suite, table=None, **kw: one)
    monkeypatch.setattr(atlas_module, "frequent_bigrams", lambda suite, top=3: [("⏎→⏎", 0.012), (".→⏎", 0.007)])
    probe = pl.DataFrame({"run": ["pythia-410m"] * 3, "step": [0, 64, 600], "first_copy": [10.8, 11.0, 11.2],
                          "second_copy": [10.8, 10.9, 11.1], "gap": [0.0, -0.1, -0.1]})
    monkeypatch.setattr(probes, "induction_probe", lambda suite, runs=None, steps=None, **kw: probe)
    shown = run_chapter(REPO / "notebooks" / "02_learning_curve_atlas.ipynb", "stand-in", monkeypatch)
    text = _markdown(shown)
    assert (one.clusters["cluster"] >= 0).sum() <= 1
    assert "fewer than two clusters: no silhouette is defined" in text
    assert "has no two runs of one size with different seeds" in text
    assert "has one run: there is no pair of runs to compare" in text
    assert "never trained on it" in text and "not comparable with Michaud's numbers" in text
    assert "No newline island" in text and "No probed run gets within 1 nat of copying" in text
    assert "Seeds and sizes" not in text


@pytest.mark.parametrize("path", COMMITTED, ids=[p.name for p in COMMITTED])
def test_cells_that_show_markdown_tables_render_them(path):
    """myst-nb renders a cell's Markdown output as CommonMark, which has no tables: a cell that shows a Markdown table
    asks for GFM in its metadata."""
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "code" and ("markdown_table(" in cell.source or "_markdown(atlas)" in cell.source):
            assert cell.metadata.get("mystnb", {}).get("markdown_format") == "gfm", f"{path.name}: {cell.source[:60]!r}"
