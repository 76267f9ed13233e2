"""The linked viewer's HTML: escaping of hostile token text, curve encoding, book vs standalone, the live explorer."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import numpy as np
import polars as pl
import pytest

from helpers.atlas import HOSTILE_TEXT, synthetic_atlas
from helpers.recipes import RECIPES
from helpers.viewer import AtlasExplorer, decode_curves, encode_curves, export_html, json_for_script, viewer_html

STEPS = RECIPES["pico"].steps


@pytest.fixture(scope="module")
def hostile_atlas():
    return synthetic_atlas(STEPS, n=350, seed=3, hostile=True)


class _Parts(HTMLParser):
    """Collects tags and the text inside each <script> as a browser's tokenizer would split them."""

    def __init__(self):
        super().__init__()
        self.tags, self.scripts, self._in_script = [], [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


def test_json_for_script_escapes_everything_that_could_end_the_tag():
    obj = {"t": [HOSTILE_TEXT, "<!-- <script>", "a\u2028b\u2029c", "&lt;"]}
    text = json_for_script(obj)
    for bad in ("<", ">", "&", "\u2028", "\u2029"):
        assert bad not in text
    assert json.loads(text) == obj


def test_hostile_token_text_cannot_add_tags_or_scripts(hostile_atlas):
    page = viewer_html(hostile_atlas, plotly_js="global")
    assert HOSTILE_TEXT in hostile_atlas.samples["target_text"].to_list()
    parts = _Parts()
    parts.feed(page)
    tags = [t for t, _ in parts.tags]
    # exactly what the viewer writes: a style, a div, the JSON data and the page script; no <img>, no third script
    assert tags == ["style", "div", "script", "script"], tags
    data_attrs = parts.tags[2][1]
    assert data_attrs["type"] == "application/json"
    payload = json.loads(parts.scripts[0])
    assert HOSTILE_TEXT in payload["target_text"]
    assert any(HOSTILE_TEXT in c for c in payload["ctx_texts"] + payload["ctx_own"])
    # the page script never hands data to an HTML parser; plotly strings go through esc()
    script = parts.scripts[1]
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script


def test_standalone_export_inlines_plotly_and_the_book_fragment_does_not(hostile_atlas, tmp_path):
    fragment = viewer_html(hostile_atlas, plotly_js="global")
    path = export_html(hostile_atlas, tmp_path / "atlas.html")
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert len(page) - len(fragment) > 1_000_000  # plotly.min.js is ~3.5 MB
    assert "<script src" not in page and "<script src" not in fragment
    assert "plotly.js v" not in fragment.lower() and "window.Plotly" in fragment


@pytest.mark.parametrize("bits,tol", [(8, 0.5 / 255), (16, 0.5 / 65535)])
def test_curve_encoding_error_is_half_a_level(bits, tol):
    rng = np.random.default_rng(0)
    m = rng.uniform(0, 9, (50, len(STEPS))).astype(np.float32)
    m[3] = 2.5  # a constant curve
    back = decode_curves(encode_curves(m, bits), len(STEPS))
    span = (m.max(1) - m.min(1))[:, None]
    assert np.all(np.abs(back - m) <= tol * span + 1e-5)


def test_payload_rows_subset_keeps_curves_aligned(hostile_atlas):
    from helpers.viewer import viewer_payload

    rows = np.array([5, 17, 200])
    p = viewer_payload(hostile_atlas, rows=rows, bits=16)
    assert p["n"] == 3 and p["sample_id"] == hostile_atlas.samples["sample_id"].to_numpy()[rows].tolist()
    got = decode_curves(p["curves"][hostile_atlas.run], len(STEPS))
    np.testing.assert_allclose(got, hostile_atlas.curves[hostile_atlas.run][rows], atol=1e-3)
    assert p["runs"][0] == hostile_atlas.run and len(p["run_colors"]) == len(p["runs"])


def test_explorer_filters_by_token_domain_cluster_and_shape(hostile_atlas):
    ex = AtlasExplorer(hostile_atlas)
    s = hostile_atlas.samples
    n = s.height
    assert len(ex.rows) == n and ex.count.value.startswith(f"{n:,} of")
    ex.token.value = "⏎"  # the shown form of a newline target
    assert len(ex.rows) > 0 and all("\n" in s["target_text"][int(i)] for i in ex.rows)
    ex.token.value = "\n"  # the raw form finds the same rows
    rows_newline = ex.rows.copy()
    ex.token.value = "⏎"
    assert np.array_equal(rows_newline, ex.rows)
    ex.domain.value = "code"
    assert set(s["domain"].to_numpy()[ex.rows]) == {"code"}
    html_out = ex.output.outputs[-1]["data"]["text/html"]
    assert f'"n":{len(ex.rows)}' in html_out
    ex.token.value = ""
    ex.domain.value = "all"
    c = int(s["cluster"][0])
    ex.cluster.value = c
    assert set(s["cluster"].to_numpy()[ex.rows]) == {c}
    ex.shape.value = "flat"
    assert all(s["shape"][int(i)] == "flat" for i in ex.rows)
    ex.token.value = "no token has this text"
    assert len(ex.rows) == 0 and ex.count.value.startswith("0 of")
    assert "No sample matches" in ex.output.outputs[-1]["text"]


def test_contexts_are_stored_once_per_document_and_sliced_back():
    from helpers.viewer import pack_contexts

    doc = "Line one\nWORD ü𝄞 two </b>\nthree"
    cut = [5, 9, 14, 17, 22, len(doc) - 2]  # sample i: context doc[:cut], target the next character
    docs = [1] * len(cut) + [1]  # the last sample: same document, a context that is not a prefix of it
    contexts = [doc[:c] for c in cut] + ["a clipped window that is not a prefix"]
    targets = [doc[c] for c in cut] + ["x"]
    packed = pack_contexts(docs, cut + [3], contexts, targets, context_chars=10)
    assert len(packed["ctx_texts"]) == 1 and packed["ctx_text"][-1] == -1 and packed["ctx_own"][-1] == contexts[-1][-10:]
    units = [packed["ctx_texts"][0].encode("utf-16-le")]
    for i, c in enumerate(contexts[:-1]):
        got = units[0][2 * packed["ctx_start"][i] : 2 * packed["ctx_end"][i]].decode("utf-16-le")  # JS slice semantics
        assert got == c[-10:] and packed["ctx_clipped"][i] == (len(c) > 10)


def test_show_viewer_uses_the_books_plotly_in_the_build_and_inlines_it_elsewhere(hostile_atlas, monkeypatch):
    import IPython.display

    from helpers.viewer import show_viewer

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj.data))
    monkeypatch.setenv("BOOK_BUILD", "1")
    show_viewer(hostile_atlas)
    monkeypatch.setenv("BOOK_BUILD", "0")
    show_viewer(hostile_atlas)
    book, live = shown
    assert len(book) < 1_000_000 < len(live)  # no second plotly.js on a book page; a live notebook gets its own
    assert "window.__lcvDefine" not in book and "window.__lcvDefine" in live


def test_payload_names_clusters_and_colours_them_apart_from_the_runs(hostile_atlas):
    from helpers.atlas import MIN_COLOUR_DISTANCE, NOISE_COLOR, colour_distance
    from helpers.viewer import VIEWER_JS, viewer_payload

    p = viewer_payload(hostile_atlas)
    cat = p["categories"]["cluster"]
    ids = sorted(set(hostile_atlas.samples["cluster"].to_list()), key=lambda c: (c < 0, c))
    colours = hostile_atlas.cluster_colors()
    assert cat["colors"] == [colours[c] for c in ids]  # the same colours as the chapter's figures
    for c, name, colour in zip(ids, cat["names"], cat["colors"]):
        assert name.startswith("unclustered: " if c < 0 else f"cluster {c}: ") and "noise" not in name
        if c >= 0:
            assert min(colour_distance(colour, r) for r in p["run_colors"]) >= MIN_COLOUR_DISTANCE
        else:
            assert colour == NOISE_COLOR
    # hover and info lines name -1 "unclustered" too
    assert 'c < 0 ? "unclustered"' in VIEWER_JS and '" · cluster " + D.cluster[i]' not in VIEWER_JS


def test_legend_calls_a_cluster_mixed_when_its_shape_is_a_minority():
    from helpers.atlas import atlas_from_arrays
    from helpers.viewer import viewer_payload

    base = synthetic_atlas(STEPS, n=300, seed=4)  # six shapes in equal shares, shuffled
    rng = np.random.default_rng(0)
    xy = np.vstack([rng.normal(0, 1, (150, 2)), rng.normal(20, 1, (150, 2))])  # two islands, by row, not by shape
    samples = base.samples.drop("x", "y", "cluster", "shape", "final_loss")
    atlas = atlas_from_arrays(samples, base.curves, STEPS, base.run, embedding=xy)
    t = atlas.clusters
    assert (t.filter(pl.col("cluster") >= 0)["shape_share"] < 0.5).all()
    names = dict(zip(sorted(set(atlas.samples["cluster"].to_list()), key=lambda c: (c < 0, c)),
                     viewer_payload(atlas)["categories"]["cluster"]["names"]))
    for row in t.iter_rows(named=True):
        name = names[row["cluster"]]
        if row["shape_share"] < 0.5:
            assert f"mixed, most often {row['shape']} ({row['shape_share']:.0%})" in name
        else:
            assert name.split(": ", 1)[1].startswith(f"{row['shape']} (")


def test_median_curve_figures_use_the_viewers_colours(hostile_atlas):
    from helpers.atlas import SHAPE_COLORS
    from helpers.viewer import median_curves_figure, viewer_payload

    payload = viewer_payload(hostile_atlas)
    fig = json.loads(median_curves_figure(hostile_atlas, "cluster").to_json())
    clusters = [tr for tr in fig["data"] if tr["name"].startswith(("cluster", "unclustered"))]
    assert [tr["line"]["color"] for tr in clusters] == payload["categories"]["cluster"]["colors"]
    assert any(tr["name"].startswith("unclustered") for tr in clusters) == (-1 in hostile_atlas.clusters["cluster"].to_list())
    assert fig["layout"]["xaxis"]["ticktext"][0] == "0"
    shapes = json.loads(median_curves_figure(hostile_atlas, "shape").to_json())["data"][1:]
    assert all(tr["line"]["color"] == SHAPE_COLORS[tr["name"].rsplit(" (", 1)[0]] for tr in shapes)
    with pytest.raises(ValueError):
        median_curves_figure(hostile_atlas, "domain")


def test_plotly_text_escapes_like_the_page_script():
    from helpers.viewer import plotly_text

    assert plotly_text('<b>"x" & y') == "&lt;b&gt;&#34;x&#34; &amp; y"
