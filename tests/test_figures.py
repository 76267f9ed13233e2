"""helpers.figures: book-build HTML output, run colours, figure style."""

from __future__ import annotations

import colorsys
import json
import re

import plotly.graph_objects as go
import pytest

from helpers import figures
from helpers.figures import parse_run, run_colors, show, sort_runs, style

PICO = ["pico-0.6m", "pico-0.6m-seed1", "pico-0.6m-seed2", "pico-0.6m-seed3", "pico-1.1m", "pico-2.2m"]


def _hls(color: str) -> tuple[float, float, float]:
    return colorsys.rgb_to_hls(*(int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)))


def _hue_distance(a: str, b: str) -> float:
    d = abs(_hls(a)[0] - _hls(b)[0])
    return min(d, 1 - d)


def _figure():
    return go.Figure(go.Scatter(x=[1, 2, 4], y=[3.0, 2.0, 1.5], name="pico-0.6m"))


def test_show_in_book_build_emits_html_without_plotlyjs(monkeypatch):
    monkeypatch.setenv("BOOK_BUILD", "1")
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    fig = _figure()
    fig.show = lambda *a, **k: pytest.fail("fig.show() must not run in the book build")
    show(fig)
    assert len(shown) == 1
    html = shown[0]._repr_html_()
    assert 'class="plotly-graph-div"' in html
    assert "Plotly.newPlot(" in html
    assert "<script src=" not in html and "cdn.plot.ly" not in html  # plotly.js comes from the book's _static
    assert len(html) < 50_000  # the 4.8 MB library is not inlined
    assert f"height:{figures.DEFAULT_HEIGHT}px" in html.replace(" ", "")
    assert '"displaylogo": false' in html or '"displaylogo":false' in html


def test_show_outside_book_calls_fig_show(monkeypatch):
    monkeypatch.delenv("BOOK_BUILD", raising=False)
    calls = []
    fig = _figure()
    fig.show = lambda *a, **k: calls.append(k)
    show(fig)
    assert calls and calls[0]["config"]["displaylogo"] is False


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("0", False), ("", False)])
def test_in_book_build(monkeypatch, value, expected):
    monkeypatch.setenv("BOOK_BUILD", value)
    assert figures.in_book_build() is expected


def test_show_rejects_non_figures():
    with pytest.raises(TypeError, match="plotly figure"):
        show({"data": []})


def test_figure_html_uses_layout_height():
    fig = _figure()
    fig.update_layout(height=321)
    assert "321px" in figures.figure_html(fig)


def test_parse_and_sort_runs():
    assert parse_run("pico-0.6m-seed2") == ("pico-0.6m", 600_000.0, 2)
    assert parse_run("nano-20k") == ("nano-20k", 20_000.0, 0)
    assert parse_run("pythia-1.4b-deduped") == ("pythia-1.4b-deduped", 1.4e9, 0)
    assert parse_run("alias-gpt2-small-x21")[1] == float("inf")
    names = ["pythia-1b", "pythia-160m-seed1", "pythia-160m", "pythia-70m", "pythia-160m-seed10", "pythia-160m-seed2"]
    assert sort_runs(names) == [
        "pythia-70m", "pythia-160m", "pythia-160m-seed1", "pythia-160m-seed2", "pythia-160m-seed10", "pythia-1b"
    ]


def test_run_colors_sizes_get_distinct_hues_and_seeds_share_one():
    colors = run_colors(PICO)
    assert set(colors) == set(PICO)
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in colors.values())
    assert len(set(colors.values())) == len(PICO)
    bases = [colors["pico-0.6m"], colors["pico-1.1m"], colors["pico-2.2m"]]
    for i in range(3):
        for j in range(i + 1, 3):
            assert _hue_distance(bases[i], bases[j]) > 0.08
    for seed in ("pico-0.6m-seed1", "pico-0.6m-seed2", "pico-0.6m-seed3"):
        assert _hue_distance(colors[seed], colors["pico-0.6m"]) < 0.02
        assert abs(_hls(colors[seed])[1] - _hls(colors["pico-0.6m"])[1]) > 0.05  # a visibly different shade


def test_run_colors_do_not_depend_on_input_order():
    assert run_colors(PICO) == run_colors(list(reversed(PICO)))
    nano = run_colors(["nano-60k-seed1", "nano-20k", "nano-60k", "nano-20k-seed1"])
    assert nano["nano-20k"] == figures.SIZE_PALETTE[0] and nano["nano-60k"] == figures.SIZE_PALETTE[1]


def test_run_colors_many_seeds_stay_distinct():
    names = ["pythia-160m"] + [f"pythia-160m-seed{k}" for k in range(1, 10)]
    colors = run_colors(names)
    assert len(set(colors.values())) == 10


def test_run_colors_bad_input():
    with pytest.raises(ValueError, match="duplicate"):
        run_colors(["pico-0.6m", "pico-0.6m"])
    with pytest.raises(TypeError, match="list of run names"):
        run_colors("pico-0.6m")


def test_style_sets_titles_and_log_axes():
    fig = style(_figure(), title="Loss", x="step", y="loss (nats)", log_x=True)
    layout = json.loads(fig.to_json())["layout"]
    assert layout["title"]["text"] == "Loss"
    assert layout["xaxis"]["title"]["text"] == "step" and layout["xaxis"]["type"] == "log"
    assert layout["yaxis"]["title"]["text"] == "loss (nats)" and "type" not in layout["yaxis"]
    assert layout["height"] == figures.DEFAULT_HEIGHT


def test_style_rejects_missing_labels():
    with pytest.raises(ValueError, match="y must be a non-empty string"):
        style(_figure(), title="Loss", x="step", y="")


# ---- log step axes, smoothing, seed groups ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "last, vals, text",
    [
        (600, [0.5, 1, 10, 100], ["0", "1", "10", "100"]),
        (1000, [0.5, 1, 10, 100, 1000], ["0", "1", "10", "100", "1,000"]),
        (143000, [0.5, 1, 10, 100, 1000, 10000, 100000], ["0", "1", "10", "100", "1,000", "10,000", "100,000"]),
        (0, [0.5], ["0"]),
    ],
)
def test_log_step_ticks_label_step_zero_at_half(last, vals, text):
    assert figures.log_step_ticks(last) == (vals, text)


def test_step_x_draws_step_zero_where_its_tick_is():
    assert figures.step_x([0, 1, 2, 600]) == [0.5, 1.0, 2.0, 600.0]
    assert figures.step_x([0])[0] == figures.log_step_ticks(10)[0][0]


def test_log_step_axis_sets_ticks_on_every_subplot():
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2)
    fig.add_scatter(x=figures.step_x([0, 1, 8, 600]), y=[1, 2, 3, 4], row=1, col=1)
    fig.add_scatter(x=figures.step_x([0, 1, 8, 600]), y=[1, 2, 3, 4], row=1, col=2)
    style(fig, title="t", x="step", y="loss (nats)")
    figures.log_step_axis(fig, [0, 1, 8, 600], title="step (log)")
    layout = json.loads(fig.to_json())["layout"]
    for axis in ("xaxis", "xaxis2"):
        assert layout[axis]["type"] == "log"
        assert layout[axis]["tickvals"] == [0.5, 1, 10, 100]
        assert layout[axis]["ticktext"][0] == "0" and "5" not in layout[axis]["ticktext"]
    assert layout["xaxis"]["title"]["text"] == "step (log)"
    assert "tickvals" not in layout["yaxis"] and layout["yaxis"]["title"]["text"] == "loss (nats)"
    figures.log_step_axis(fig, [0, 1, 8, 600])
    assert json.loads(fig.to_json())["layout"]["xaxis"]["title"]["text"] == figures.STEP_AXIS_TITLE
    figures.log_step_axis(fig, 143000, axis="y", title=None)
    assert json.loads(fig.to_json())["layout"]["yaxis"]["ticktext"][-1] == "100,000"
    with pytest.raises(ValueError, match="axis"):
        figures.log_step_axis(fig, 10, axis="z")


def test_viewer_curve_pane_uses_the_same_ticks():
    from helpers.atlas import synthetic_atlas
    from helpers.recipes import RECIPES
    from helpers.viewer import viewer_payload

    steps = RECIPES["pico"].steps
    payload = viewer_payload(synthetic_atlas(steps, n=60, seed=1))
    vals, text = figures.log_step_ticks(steps[-1])
    assert payload["step_ticks"] == {"vals": vals, "text": text, "title": figures.STEP_AXIS_TITLE}


def test_centred_mean_does_not_lag():
    import numpy as np

    y = np.arange(20, dtype=float)  # a straight line: a centred mean reproduces it exactly, a trailing one lags
    np.testing.assert_allclose(figures.centred_mean(y, 11), y)
    trailing = np.array([y[max(0, i - 9) : i + 1].mean() for i in range(20)])
    assert (trailing[10:] < y[10:] - 4).all()
    step = np.r_[np.zeros(10), np.ones(10)]
    smooth = figures.centred_mean(step, 5)
    assert smooth[9] == pytest.approx(0.4) and smooth[10] == pytest.approx(0.6)  # symmetric around the jump
    assert smooth[0] == 0 and smooth[-1] == 1  # the window shrinks at the ends instead of reaching across
    np.testing.assert_allclose(figures.centred_mean([3.0, 1.0, 2.0], 1), [3.0, 1.0, 2.0])
    with pytest.raises(ValueError):
        figures.centred_mean(y, 0)


def test_seed_groups_find_the_size_with_seeds():
    assert figures.seed_groups(PICO) == {"pico-0.6m": ["pico-0.6m", "pico-0.6m-seed1", "pico-0.6m-seed2", "pico-0.6m-seed3"]}
    small = ["pythia-70m", "pythia-160m", "pythia-410m", "pythia-160m-seed1", "pythia-160m-seed2", "pythia-160m-seed3"]
    assert figures.seed_groups(small) == {"pythia-160m": ["pythia-160m", "pythia-160m-seed1", "pythia-160m-seed2", "pythia-160m-seed3"]}
    assert list(figures.seed_groups(["nano-20k", "nano-20k-seed1", "nano-60k", "nano-60k-seed1"])) == ["nano-20k", "nano-60k"]
    assert figures.seed_groups(["pythia-410m"]) == {}


def test_markdown_table_formats_and_escapes():
    import polars as pl

    df = pl.DataFrame({"name": ["a|b", "c"], "n": [1234, 5], "x": [0.123, None], "share": [0.5, 0.25]})
    md = figures.markdown_table(df, formats={"share": "{:.0%}"}).splitlines()
    assert md[0] == "| name | n | x | share |" and md[1] == "|---|---|---|---|"
    assert md[2] == "| a\\|b | 1,234 | 0.12 | 50% |"
    assert md[3] == "| c | 5 | – | 25% |"
