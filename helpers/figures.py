"""Figures: show a plotly figure in the book and in live Jupyter, colours for runs, one look for every figure.

    fig = go.Figure(...)
    style(fig, title="Mean validation loss", x="step", y="loss (nats)", log_x=True)
    show(fig)

In the book build (``$BOOK_BUILD=1``, set by ``make book`` and by the book's Sphinx extension) :func:`show` emits the
figure as HTML that calls the one ``plotly.min.js`` the book ships in ``_static``: interactive, offline, no CDN.
Elsewhere (Jupyter, Colab, VS Code) it is ``fig.show()``.
"""

from __future__ import annotations

import colorsys
import os
import re

BOOK_BUILD_ENV = "BOOK_BUILD"
DEFAULT_HEIGHT = 460  # px, when a figure sets no height
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}

# Distinguishable base hues, one per model size (smallest size first); seeds of a size are shades of its hue.
SIZE_PALETTE = [
    "#1f77b4",  # blue
    "#d62728",  # red
    "#2ca02c",  # green
    "#9467bd",  # purple
    "#ff7f0e",  # orange
    "#17becf",  # cyan
    "#8c564b",  # brown
    "#e377c2",  # pink
    "#bcbd22",  # olive
    "#7f7f7f",  # grey
]

# <family>-<size>[-deduped][-seed<k>], e.g. pico-0.6m, pico-0.6m-seed2, nano-20k, pythia-160m-deduped, pythia-1.4b
RUN_NAME = re.compile(r"^(?P<group>[a-z][a-z0-9]*-(?P<size>[0-9.]+)(?P<unit>[kmb])(?:-deduped)?)(?:-seed(?P<seed>[0-9]+))?$")
_UNIT = {"k": 1e3, "m": 1e6, "b": 1e9}


def in_book_build() -> bool:
    """True while the book is being built (``$BOOK_BUILD`` is ``1``/``true``/``yes``)."""
    return os.environ.get(BOOK_BUILD_ENV, "").strip().lower() in {"1", "true", "yes"}


def figure_html(fig) -> str:
    """The figure as an HTML fragment (a div and a ``Plotly.newPlot`` call) that expects ``window.Plotly``."""
    height = fig.layout.height or DEFAULT_HEIGHT
    return fig.to_html(
        include_plotlyjs=False, full_html=False, config=PLOTLY_CONFIG, default_width="100%", default_height=f"{height}px"
    )


def show(fig) -> None:
    """Display a plotly figure: as static-book HTML during the book build, with ``fig.show()`` elsewhere."""
    if not hasattr(fig, "to_html") or not hasattr(fig, "show"):
        raise TypeError(f"show() needs a plotly figure, got {type(fig).__name__}")
    if in_book_build():
        from IPython.display import HTML, display

        display(HTML(figure_html(fig)))
    else:
        fig.show(config=PLOTLY_CONFIG)


# ---- colours --------------------------------------------------------------------------------------------------------


def parse_run(name: str) -> tuple[str, float, int]:
    """``(group, size in parameters, seed)`` of a run name; seed 0 is the default seed.

    >>> parse_run("pico-0.6m-seed2")
    ('pico-0.6m', 600000.0, 2)

    A name that does not follow ``<family>-<size>[-seed<k>]`` is its own group with size ``inf``.
    """
    m = RUN_NAME.match(name)
    if not m:
        return name, float("inf"), 0
    return m["group"], float(m["size"]) * _UNIT[m["unit"]], int(m["seed"] or 0)


def sort_runs(run_names) -> list[str]:
    """Run names ordered by size, then seed (default seed first) — the legend order of every figure."""
    return sorted(run_names, key=lambda n: (parse_run(n)[1], parse_run(n)[0], parse_run(n)[2], n))


def _shade(base: str, lightness: float) -> str:
    r, g, b = (int(base[i : i + 2], 16) / 255 for i in (1, 3, 5))
    h, _, s = colorsys.rgb_to_hls(r, g, b)
    r, g, b = colorsys.hls_to_rgb(h, lightness, s)
    return "#" + "".join(f"{round(c * 255):02x}" for c in (r, g, b))


def run_colors(run_names) -> dict[str, str]:
    """``{run: "#rrggbb"}``: one hue per size (in size order), the default seed in the base colour and the other
    seeds of that size in lighter and darker shades of it.

    >>> run_colors(["pico-0.6m", "pico-0.6m-seed1", "pico-1.1m"])["pico-1.1m"]
    '#d62728'
    """
    if isinstance(run_names, str):
        raise TypeError("run_colors() needs a list of run names, not one string")
    names = list(run_names)
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"run_colors(): duplicate run names {dupes}")
    groups: dict[str, list[str]] = {}
    for name in sort_runs(names):
        groups.setdefault(parse_run(name)[0], []).append(name)
    colors: dict[str, str] = {}
    for i, members in enumerate(groups.values()):
        base = SIZE_PALETTE[i % len(SIZE_PALETTE)]
        colors[members[0]] = base
        others = members[1:]
        if not others:
            continue
        r, g, b = (int(base[j : j + 2], 16) / 255 for j in (1, 3, 5))
        lightness = colorsys.rgb_to_hls(r, g, b)[1]
        lo, hi = max(0.2, lightness - 0.2), 0.8
        # evenly spaced lightness values over [lo, hi], skipping the one closest to the base colour
        n = len(others) + 1
        levels = [lo + (hi - lo) * k / (n - 1) for k in range(n)]
        levels.remove(min(levels, key=lambda v: abs(v - lightness)))
        # lighter shades first (seed 1 lighter than the base), then darker ones
        levels.sort(key=lambda v: (v < lightness, abs(v - lightness)))
        for name, level in zip(others, levels):
            colors[name] = _shade(base, level)
    return colors


# ---- layout ---------------------------------------------------------------------------------------------------------


def style(fig, title: str, x: str, y: str, log_x: bool = False, log_y: bool = False, legend: str | None = None, height: int | None = None):
    """Give ``fig`` the book's look: a title, axis labels (with units, e.g. ``"step"``, ``"loss (nats)"``), log axes
    where asked, a white template, and a legend title. Returns ``fig``.
    """
    for label, value in (("title", title), ("x", x), ("y", y)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"style(): {label} must be a non-empty string, got {value!r}")
    fig.update_layout(
        title=dict(text=title, x=0.0, xanchor="left"),
        template="plotly_white",
        height=height or fig.layout.height or DEFAULT_HEIGHT,
        margin=dict(l=60, r=20, t=60, b=55),
        legend_title_text=legend,
        hovermode="closest",
    )
    fig.update_xaxes(title_text=x, showline=True, linecolor="#999")
    fig.update_yaxes(title_text=y, showline=True, linecolor="#999")
    if log_x:
        fig.update_xaxes(type="log")
    if log_y:
        fig.update_yaxes(type="log")
    return fig


# ---- log step axes ----------------------------------------------------------------------------------------------------

STEP0_X = 0.5  # where step 0 is drawn on a log step axis: half a step before step 1
STEP_AXIS_TITLE = "step (log scale; step 0 drawn at 0.5)"  # the title of every log step axis, the viewer's too


def step_x(steps) -> list[float]:
    """x positions of ``steps`` on a log step axis: step 0 at :data:`STEP0_X`, every other step where it is."""
    return [STEP0_X if s == 0 else float(s) for s in steps]


def log_step_ticks(last_step: int) -> tuple[list[float], list[str]]:
    """``(tickvals, ticktext)`` of a log step axis up to ``last_step``: step 0 (drawn at 0.5, labelled "0"), then
    every power of ten up to ``last_step`` ("1", "10", "100", "1,000", ...). The viewer's curve pane uses the same.

    >>> log_step_ticks(600)
    ([0.5, 1, 10, 100], ['0', '1', '10', '100'])
    """
    if last_step < 0:
        raise ValueError(f"last_step must be >= 0, got {last_step}")
    vals, text = [STEP0_X], ["0"]
    power = 1
    while power <= last_step:
        vals.append(power)
        text.append(f"{power:,}")
        power *= 10
    return vals, text


def log_step_axis(fig, steps, axis: str = "x", title: str | None = STEP_AXIS_TITLE):
    """Make the ``axis`` ("x" or "y") of every subplot of ``fig`` a log step axis: log scale, ticks from
    :func:`log_step_ticks` (so the tick at 0.5 reads "0", where :func:`step_x` draws step 0, not plotly's "5"),
    and ``title`` (default :data:`STEP_AXIS_TITLE`; None keeps the axis title). ``steps``: the checkpoint steps
    shown, or the last step. Returns ``fig``."""
    if axis not in ("x", "y"):
        raise ValueError(f"axis must be 'x' or 'y', got {axis!r}")
    last = int(steps) if isinstance(steps, (int, float)) else int(max(steps))
    vals, text = log_step_ticks(last)
    update = fig.update_xaxes if axis == "x" else fig.update_yaxes
    update(type="log", tickmode="array", tickvals=vals, ticktext=text, minor=dict(showgrid=False, ticks=""))
    if title is not None:
        update(title_text=title)
    return fig


def centred_mean(values, window: int):
    """Centred moving average of a 1-D sequence (float64 array of the same length). Each point is the mean of the
    ``window`` points around it (``window // 2`` on each side); near the ends the window shrinks symmetrically, so
    the average never lags or leads the curve (a trailing mean does, and on a log step axis it shows).
    """
    import numpy as np

    y = np.asarray(values, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"centred_mean() needs a 1-D sequence, got shape {y.shape}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    n = len(y)
    i = np.arange(n)
    half = np.minimum(np.minimum(i, n - 1 - i), window // 2)
    c = np.concatenate([[0.0], np.cumsum(y)])
    return (c[i + half + 1] - c[i - half]) / (2 * half + 1)


def seed_groups(run_names) -> dict[str, list[str]]:
    """``{group: runs}`` for every size that has more than one run (its weight seeds), runs in legend order.

    >>> seed_groups(["pythia-70m", "pythia-160m", "pythia-160m-seed1"])
    {'pythia-160m': ['pythia-160m', 'pythia-160m-seed1']}
    """
    groups: dict[str, list[str]] = {}
    for name in sort_runs(run_names):
        groups.setdefault(parse_run(name)[0], []).append(name)
    return {g: members for g, members in groups.items() if len(members) > 1}


# ---- tables -------------------------------------------------------------------------------------------------------


def markdown_table(df, formats: dict[str, str] | None = None) -> str:
    """A polars DataFrame as a Markdown table (it wraps on a narrow page, and Markdown in its cells, such as code
    spans for token text, renders). ``formats``: a format per column (default ``"{:,}"`` for integers, ``"{:.2f}"``
    for floats, e.g. ``"{}"`` for a seed); nulls show as "–"; ``|`` in a cell is escaped so it cannot split the cell."""
    formats = formats or {}

    def cell(name, value):
        if value is None:
            return "–"
        if name in formats:
            text = formats[name].format(value)
        elif isinstance(value, float):
            text = f"{value:.2f}"
        elif isinstance(value, int) and not isinstance(value, bool):
            text = f"{value:,}"
        else:
            text = str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "|".join("---" for _ in df.columns) + "|"]
    for row in df.iter_rows():
        lines.append("| " + " | ".join(cell(n, v) for n, v in zip(df.columns, row)) + " |")
    return "\n".join(lines)
