"""The linked viewer of an :class:`~helpers.atlas.Atlas`: map, curve and context panes, serverless.

Three panes, as in Michaud's viewer, but as one HTML fragment that needs no kernel and no server:

- the **map** (plotly ``scattergl``; SVG ``scatter`` if the browser has no WebGL), coloured by cluster, shape,
  domain, induction candidate or final loss; hovering or clicking a point selects it;
- the **curve** of the selected sample over checkpoints (log step axis, step 0 drawn at 0.5) beside the run's mean
  curve, with the same sample's curves in the other runs (seeds, sizes) as optional overlays;
- the **context**: the text before the target, newlines shown as ``⏎`` and a line break, the target highlighted.

All data travel as one JSON document in a ``<script type="application/json">`` tag, with ``<``, ``>``, ``&`` and
U+2028/U+2029 written as ``\\uXXXX`` escapes so no token text can close the tag; the page script puts text into the
DOM with ``textContent`` only, and HTML-escapes what plotly renders (hover labels, legend, titles).

    show_viewer(atlas)                       # in the book build: a fragment using the book's one plotly.min.js
    export_html(atlas, "atlas.html")         # one standalone file with plotly.js inlined
    AtlasExplorer(atlas).widget              # live Jupyter/Colab: filters by token text, domain, cluster
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from pathlib import Path

import numpy as np

from .atlas import CLUSTER_PALETTE, NOISE_COLOR, SHAPE_COLORS, SHAPES, Atlas, cluster_name, display_token  # noqa: F401

CONTEXT_CHARS = 300  # characters of context kept per sample (Michaud: the last 150 tokens)
LEGEND_CHARS = 80  # a cluster's legend entry is clipped to this many characters
DOMAIN_PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2"]


# ---- safe embedding ----------------------------------------------------------------------------------------------


def json_for_script(obj) -> str:
    """JSON that is safe inside ``<script>`` (and HTML attributes): ``<``, ``>``, ``&``, U+2028, U+2029 escaped.

    ``JSON.parse`` of the result gives ``obj`` back; no substring like ``</script>`` or ``<!--`` survives.
    """
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for ch, rep in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, rep)
    return text


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def encode_curves(matrix: np.ndarray, bits: int = 8) -> dict:
    """Curves [n, n_steps] as base64: per-row float32 ``lo``/``hi`` and ``bits``-bit levels between them.

    Decoded value ``lo + q * (hi - lo) / (2**bits - 1)``; the error is at most half a level: with 8 bits and a curve
    spanning 8 nats, 0.016 nats (well under a pixel of the curve pane).
    """
    if bits not in (8, 16):
        raise ValueError("bits must be 8 or 16")
    m = np.asarray(matrix, dtype=np.float32)
    lo, hi = m.min(axis=1), m.max(axis=1)
    top = 2**bits - 1
    span = np.where(hi > lo, hi - lo, 1.0)
    q = np.rint((m - lo[:, None]) / span[:, None] * top).astype(np.uint8 if bits == 8 else np.uint16)
    return {"lo": _b64(lo.astype("<f4")), "hi": _b64(hi.astype("<f4")), "q": _b64(q.astype(q.dtype.newbyteorder("<"))), "bits": bits}


def decode_curves(enc: dict, n_steps: int) -> np.ndarray:
    """Inverse of :func:`encode_curves` (for tests): float32 [n, n_steps]."""
    lo = np.frombuffer(base64.b64decode(enc["lo"]), "<f4")
    hi = np.frombuffer(base64.b64decode(enc["hi"]), "<f4")
    q = np.frombuffer(base64.b64decode(enc["q"]), "<u1" if enc["bits"] == 8 else "<u2").reshape(len(lo), n_steps)
    return (lo[:, None] + q * ((hi - lo) / (2 ** enc["bits"] - 1))[:, None]).astype(np.float32)


# ---- contexts: one text per document, each sample a slice of it ------------------------------------------------------


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def pack_contexts(doc_ids, positions, contexts, targets, context_chars: int = CONTEXT_CHARS) -> dict:
    """The last ``context_chars`` characters of each context, stored once per document where possible.

    Samples of one document have contexts that are prefixes of one text (the longest context plus its target), so the
    page gets that text once (``ctx_texts``) and per sample its index (``ctx_text``) and the slice ``[ctx_start,
    ctx_end)`` in UTF-16 code units (JavaScript's string indices). A sample whose context is not such a prefix (e.g.
    contexts clipped to their last tokens) keeps its own text (``ctx_text`` −1, text in ``ctx_own``).
    ``ctx_clipped`` marks contexts shown without their beginning.
    """
    n = len(contexts)
    last: dict = {}
    for i in range(n):
        d = doc_ids[i]
        if d not in last or positions[i] > positions[last[d]]:
            last[d] = i
    texts, index = [], {}
    for d, i in last.items():
        index[d] = len(texts)
        texts.append(contexts[i] + targets[i])
    ctx_text, start, end, own, clipped = [], [], [], [], []
    for i in range(n):
        c = contexts[i]
        k = index[doc_ids[i]]
        cut = max(0, len(c) - context_chars)
        clipped.append(cut > 0)
        if texts[k].startswith(c):
            ctx_text.append(k)
            start.append(_utf16_len(c[:cut]))
            end.append(_utf16_len(c))
            own.append("")
        else:
            ctx_text.append(-1)
            start.append(0)
            end.append(0)
            own.append(c[cut:])
    return {"ctx_texts": texts, "ctx_text": ctx_text, "ctx_start": start, "ctx_end": end, "ctx_own": own, "ctx_clipped": clipped}


# ---- the payload ---------------------------------------------------------------------------------------------------


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _categories(values: list, names: list[str], colors: list[str]) -> dict:
    index = {v: i for i, v in enumerate(names)}
    return {"names": names, "colors": colors, "codes": [index[v] for v in values]}


def viewer_payload(
    atlas: Atlas,
    runs: list[str] | None = None,
    rows: np.ndarray | None = None,
    context_chars: int = CONTEXT_CHARS,
    bits: int = 8,
    selected: int | None = None,
    title: str | None = None,
    colour_by: str = "cluster",
) -> dict:
    """Everything the page script needs, as JSON-able values (rows of ``atlas.samples``, or the subset ``rows``)."""
    from .figures import STEP_AXIS_TITLE, log_step_ticks, run_colors

    s = atlas.samples if rows is None else atlas.samples[np.asarray(rows)]
    idx = np.arange(len(atlas.samples)) if rows is None else np.asarray(rows)
    runs = [atlas.run] + [r for r in (runs or atlas.runs) if r != atlas.run and r in atlas.curves]
    colors = run_colors(runs)
    clusters = s["cluster"].to_list()
    cl_ids = sorted(set(clusters), key=lambda c: (c < 0, c))
    cl_table = {r["cluster"]: r for r in atlas.clusters.iter_rows(named=True)}
    cl_names = [_clip(cluster_name(c) + (f": {cl_table[c]['label']}" if c in cl_table else ""), LEGEND_CHARS) for c in cl_ids]
    palette = atlas.cluster_colors()
    cl_colors = [palette.get(c, NOISE_COLOR) for c in cl_ids]
    tick_vals, tick_text = log_step_ticks(int(atlas.steps[-1]))
    domains = sorted(set(s["domain"].to_list()))
    ctx = pack_contexts(s["doc_id"].to_list(), s["position"].to_list(), s["context_text"].to_list(), s["target_text"].to_list(), context_chars)
    categories = {
        "cluster": {"label": "cluster", **_categories([cl_ids.index(c) for c in clusters], list(range(len(cl_ids))), cl_colors)},
        "shape": {"label": "shape", **_categories(s["shape"].to_list(), list(SHAPES), [SHAPE_COLORS[k] for k in SHAPES])},
        "domain": {"label": "domain", **_categories(s["domain"].to_list(), domains, DOMAIN_PALETTE[: len(domains)] or ["#888"])},
        "induction": {
            "label": "induction candidate",
            **_categories([bool(v) for v in s["induction"].to_list()], [False, True], ["#c7c7c7", "#d62728"]),
        },
    }
    categories["cluster"]["names"] = cl_names
    categories["induction"]["names"] = ["bigram new in context", "bigram seen earlier in context"]
    if selected is None or not (0 <= selected < len(s)):
        selected = 0
    return {
        "title": title or f"{atlas.run}: {len(s):,} per-token loss curves",
        "suite": atlas.suite,
        "run": atlas.run,
        "runs": runs,
        "run_colors": [colors[r] for r in runs],
        "steps": [int(v) for v in atlas.steps],
        "step_ticks": {"vals": tick_vals, "text": tick_text, "title": STEP_AXIS_TITLE},  # as on every figure
        "n": len(s),
        "x": np.round(s["x"].to_numpy().astype(np.float64), 3).tolist(),
        "y": np.round(s["y"].to_numpy().astype(np.float64), 3).tolist(),
        "sample_id": s["sample_id"].to_list(),
        "doc_id": s["doc_id"].to_list(),
        "position": s["position"].to_list(),
        "token": [display_token(t) for t in s["target_text"].to_list()],
        "target_text": s["target_text"].to_list(),
        "prev": [display_token(t) for t in s["prev_text"].to_list()],
        "domain": s["domain"].to_list(),
        "cluster": clusters,
        "shape": s["shape"].to_list(),
        "induction": [bool(v) for v in s["induction"].to_list()],
        "final": np.round(s["final_loss"].to_numpy().astype(np.float64), 3).tolist(),
        **ctx,
        "curves": {r: encode_curves(atlas.curves[r][idx], bits) for r in runs},
        "mean": {r: np.round(atlas.curves[r].mean(axis=0).astype(np.float64), 4).tolist() for r in runs},
        "categories": categories,
        "colour_by": colour_by,
        "selected": int(selected),
    }


# ---- the page script -----------------------------------------------------------------------------------------------

VIEWER_CSS = """
.lcv{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;font-size:13px;color:#222;margin:0.5em 0 1em}
.lcv-controls{display:flex;flex-wrap:wrap;gap:0.4em 1.2em;align-items:center;margin-bottom:0.3em}
.lcv-controls label{white-space:nowrap;cursor:pointer}
.lcv-swatch{display:inline-block;width:0.8em;height:0.8em;border-radius:2px;margin:0 0.25em -0.05em 0.1em}
.lcv-panes{display:flex;flex-wrap:wrap;gap:0.5em}
.lcv-map{flex:1 1 380px;min-width:300px;height:440px}
.lcv-curve{flex:1 1 320px;min-width:280px;height:440px}
.lcv-info{margin:0.3em 0;color:#444}
.lcv-context{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px;line-height:1.45;
 white-space:pre-wrap;word-break:break-word;border:1px solid #ddd;border-radius:4px;padding:0.5em 0.7em;
 max-height:16em;overflow-y:auto;background:#fafafa}
.lcv-nl{color:#999}
.lcv-target{background:#FF9999;border-radius:2px}
"""

# The page script. It reads only the JSON payload; every piece of token text reaches the DOM through textContent
# (context, info line) or through esc() (strings plotly renders as pseudo-HTML: hover labels, legend, titles).
VIEWER_JS = r"""
(function () {
  "use strict";
  var ROOT = "__ROOT__";
  function esc(s) {  // plotly's pseudo-HTML knows &amp; &lt; &gt; and numeric entities, not &quot;
    return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&#34;");
  }
  function clusterName(c) { return c < 0 ? "unclustered" : "cluster " + c; }  // as helpers.atlas.cluster_name
  function clip(s, n) { s = String(s); return s.length <= n ? s : s.slice(0, n - 1) + "…"; }
  function bytes(b64) {
    var bin = atob(b64), u = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) u[i] = bin.charCodeAt(i);
    return u;
  }
  function node(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function hasWebGL() {
    try {
      var c = document.createElement("canvas");
      return !!(window.WebGLRenderingContext && (c.getContext("webgl") || c.getContext("experimental-webgl")));
    } catch (e) { return false; }
  }
  function start() {
    var root = document.getElementById(ROOT);
    if (!root || root.getAttribute("data-ready")) return;
    if (!window.Plotly) {
      start.tries = (start.tries || 0) + 1;
      if (start.tries < 600) { setTimeout(start, 50); return; }
      root.textContent = "The viewer needs plotly.js, which did not load on this page.";
      return;
    }
    root.setAttribute("data-ready", "loading");
    var D = JSON.parse(document.getElementById(ROOT + "-data").textContent);
    var N = D.n, S = D.steps.length;
    var xs = D.steps.map(function (s) { return s === 0 ? 0.5 : s; });
    var curves = {};
    D.runs.forEach(function (r) {
      var e = D.curves[r], qb = bytes(e.q);
      curves[r] = {
        lo: new Float32Array(bytes(e.lo).buffer), hi: new Float32Array(bytes(e.hi).buffer),
        q: e.bits === 8 ? qb : new Uint16Array(qb.buffer), top: Math.pow(2, e.bits) - 1
      };
    });
    function curve(r, i) {
      var c = curves[r], out = new Array(S), k = (c.hi[i] - c.lo[i]) / c.top;
      for (var j = 0; j < S; j++) out[j] = c.lo[i] + c.q[i * S + j] * k;
      return out;
    }
    var hover = new Array(N);
    for (var i = 0; i < N; i++) {
      hover[i] = "<b>" + esc(clip(D.token[i], 40)) + "</b> after " + esc(clip(D.prev[i], 40)) + "<br>" + esc(D.domain[i]) +
        " · " + esc(clusterName(D.cluster[i])) + " · " + esc(D.shape[i]) + (D.induction[i] ? " · bigram seen earlier" : "") +
        "<br>final loss " + D.final[i].toFixed(2) + " nats";
    }
    var gl = hasWebGL(), kind = gl ? "scattergl" : "scatter";
    root.setAttribute("data-trace-type", kind);

    // ---- layout ----
    root.textContent = "";
    var controls = node("div", "lcv-controls");
    var colourLabel = node("label", null, "colour by ");
    var colourSel = node("select");
    var opts = Object.keys(D.categories).concat(["final loss"]);
    opts.forEach(function (k) {
      var o = node("option", null, k === "final loss" ? k : D.categories[k].label);
      o.value = k; if (k === D.colour_by) o.selected = true; colourSel.appendChild(o);
    });
    colourLabel.appendChild(colourSel); controls.appendChild(colourLabel);
    var hoverLabel = node("label"), hoverBox = node("input");
    hoverBox.type = "checkbox"; hoverBox.checked = true;
    hoverLabel.appendChild(hoverBox); hoverLabel.appendChild(document.createTextNode(" select on hover (click always selects)"));
    controls.appendChild(hoverLabel);
    var overlay = {};
    if (D.runs.length > 1) {
      controls.appendChild(node("span", null, "overlay:"));
      D.runs.slice(1).forEach(function (r, k) {
        var lab = node("label"), box = node("input"), sw = node("span", "lcv-swatch");
        box.type = "checkbox"; box.checked = true; box.value = r; overlay[r] = box;
        sw.style.background = D.run_colors[k + 1];
        lab.appendChild(box); lab.appendChild(sw); lab.appendChild(document.createTextNode(r));
        box.addEventListener("change", function () { drawCurve(); });
        controls.appendChild(lab);
      });
    }
    // "plotly-graph-div" as on every plotly figure of the book, so page checks that look for figures find these too
    var panes = node("div", "lcv-panes"), mapDiv = node("div", "lcv-map plotly-graph-div"), curveDiv = node("div", "lcv-curve plotly-graph-div");
    mapDiv.id = ROOT + "-map"; curveDiv.id = ROOT + "-curve";
    panes.appendChild(mapDiv); panes.appendChild(curveDiv);
    var info = node("div", "lcv-info"), ctx = node("div", "lcv-context");
    info.id = ROOT + "-info"; ctx.id = ROOT + "-context";
    root.appendChild(controls); root.appendChild(panes); root.appendChild(info); root.appendChild(ctx);

    // ---- the map ----
    var selected = D.selected;
    function mapTraces(by) {
      var traces = [];
      if (by === "final loss") {
        var idx = []; for (var i = 0; i < N; i++) idx.push(i);
        traces.push({
          type: kind, mode: "markers", x: D.x, y: D.y, customdata: idx, hovertext: hover, hovertemplate: "%{hovertext}<extra></extra>",
          marker: { size: 4, color: D.final, colorscale: "Viridis", colorbar: { title: { text: "final loss (nats)" }, thickness: 12 }, opacity: 0.8 },
          name: "final loss", showlegend: false
        });
      } else {
        var cat = D.categories[by], groups = cat.names.map(function () { return []; });
        for (var i = 0; i < N; i++) groups[cat.codes[i]].push(i);
        groups.forEach(function (g, k) {
          if (!g.length) return;
          traces.push({
            type: kind, mode: "markers", name: esc(String(cat.names[k])) + " (" + g.length + ")",
            x: g.map(function (i) { return D.x[i]; }), y: g.map(function (i) { return D.y[i]; }), customdata: g,
            hovertext: g.map(function (i) { return hover[i]; }), hovertemplate: "%{hovertext}<extra></extra>",
            marker: { size: 4, color: cat.colors[k], opacity: 0.75 }
          });
        });
      }
      return traces;
    }
    var mapLayout = {
      title: { text: esc(D.title), x: 0, font: { size: 14 } }, margin: { l: 10, r: 10, t: 36, b: 10 },
      xaxis: { visible: false }, yaxis: { visible: false }, hovermode: "closest", dragmode: "zoom",
      legend: { orientation: "h", y: -0.02, yanchor: "top", font: { size: 11 } }, plot_bgcolor: "#fff"
    };
    var config = { displaylogo: false, responsive: true, scrollZoom: false };
    // the selected point is a layout shape (a ring of fixed pixel size), so moving it redraws no trace
    function ring(i) {
      return { type: "circle", xref: "x", yref: "y", xsizemode: "pixel", ysizemode: "pixel", xanchor: D.x[i], yanchor: D.y[i],
        x0: -7, x1: 7, y0: -7, y1: 7, line: { color: "#000", width: 2.5 }, layer: "above" };
    }
    function drawMap() {
      mapLayout.shapes = [ring(selected)];
      return Plotly.react(mapDiv, mapTraces(colourSel.value), mapLayout, config);
    }
    colourSel.addEventListener("change", drawMap);

    // ---- the curve pane ----
    var ticks = D.step_ticks.vals, labels = D.step_ticks.text;
    function drawCurve() {
      var i = selected, traces = [];
      traces.push({ type: "scatter", mode: "lines", x: xs, y: D.mean[D.run], name: esc("mean of " + D.run),
        line: { color: "#888", dash: "dash", width: 2 }, hovertemplate: "step %{text}: %{y:.2f} nats<extra>mean</extra>", text: D.steps });
      D.runs.slice(1).forEach(function (r, k) {
        if (!overlay[r] || !overlay[r].checked) return;
        traces.push({ type: "scatter", mode: "lines", x: xs, y: curve(r, i), name: esc(r),
          line: { color: D.run_colors[k + 1], width: 1.3 }, opacity: 0.85, text: D.steps,
          hovertemplate: "step %{text}: %{y:.2f} nats<extra>" + esc(r) + "</extra>" });
      });
      traces.push({ type: "scatter", mode: "lines+markers", x: xs, y: curve(D.run, i), name: esc(D.run + " (this sample)"),
        line: { color: D.run_colors[0], width: 2.6 }, marker: { size: 4 }, text: D.steps,
        hovertemplate: "step %{text}: %{y:.2f} nats<extra>" + esc(D.run) + "</extra>" });
      var layout = {
        title: { text: "loss on <b>" + esc(clip(D.token[i], 24)) + "</b> after " + esc(clip(D.prev[i], 24)) + " (sample " + D.sample_id[i] + ")", x: 0, font: { size: 14 } },
        margin: { l: 55, r: 10, t: 36, b: 45 }, hovermode: "closest", plot_bgcolor: "#fff",
        xaxis: { type: "log", title: { text: esc(D.step_ticks.title) }, tickvals: ticks, ticktext: labels, gridcolor: "#eee", showline: true, linecolor: "#999" },
        yaxis: { title: { text: "loss (nats)" }, rangemode: "tozero", gridcolor: "#eee", showline: true, linecolor: "#999" },
        legend: { orientation: "h", y: -0.2, yanchor: "top", font: { size: 11 } }
      };
      return Plotly.react(curveDiv, traces, layout, config);
    }

    // ---- the context pane (textContent only) ----
    function appendText(parent, text) {
      var parts = String(text).split("\n");
      parts.forEach(function (part, k) {
        if (k > 0) { parent.appendChild(node("span", "lcv-nl", "⏎")); parent.appendChild(document.createElement("br")); }
        if (part) parent.appendChild(document.createTextNode(part));
      });
    }
    function contextOf(i) {
      var k = D.ctx_text[i];
      return k >= 0 ? D.ctx_texts[k].slice(D.ctx_start[i], D.ctx_end[i]) : D.ctx_own[i];
    }
    root.lcvContext = contextOf;
    function drawContext() {
      var i = selected;
      info.textContent = "sample " + D.sample_id[i] + " · document " + D.doc_id[i] + ", token " + D.position[i] +
        " · " + D.domain[i] + " · target " + D.token[i] + " after " + D.prev[i] + " · " + clusterName(D.cluster[i]) +
        " · " + D.shape[i] + (D.induction[i] ? " · the bigram occurred earlier in this context" : "") +
        " · final loss " + D.final[i].toFixed(2) + " nats";
      ctx.textContent = "";
      if (D.ctx_clipped[i]) ctx.appendChild(node("span", "lcv-nl", "…"));
      appendText(ctx, contextOf(i));
      var t = node("span", "lcv-target");
      appendText(t, D.target_text[i]);
      ctx.appendChild(t);
      ctx.scrollTop = ctx.scrollHeight;
    }
    function select(i) {
      if (!(i >= 0 && i < N)) return;
      selected = i;
      root.setAttribute("data-selected", String(D.sample_id[i]));
      if (mapDiv.layout) Plotly.relayout(mapDiv, { "shapes[0].xanchor": D.x[i], "shapes[0].yanchor": D.y[i] });
      drawCurve(); drawContext();
    }
    root.lcvSelect = select;  // for scripted use: root.lcvSelect(row)
    root.lcvSelected = function () { return selected; };
    drawMap().then(function () {
      mapDiv.on("plotly_click", function (ev) { if (ev && ev.points && ev.points.length) select(ev.points[0].customdata); });
      // hover events can outpace drawing: keep the latest and draw once per animation frame
      var pending = null;
      mapDiv.on("plotly_hover", function (ev) {
        if (!(hoverBox.checked && ev && ev.points && ev.points.length && ev.points[0].customdata !== undefined)) return;
        if (pending === null) requestAnimationFrame(function () { var i = pending; pending = null; if (i !== selected) select(i); });
        pending = ev.points[0].customdata;
      });
      select(selected);
      root.setAttribute("data-ready", "1");
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
"""


def _plotly_js_inline() -> str:
    """plotly.min.js as a script body that defines ``window.Plotly`` even where RequireJS defines ``define``."""
    from plotly.offline import get_plotlyjs

    return "window.__lcvDefine=window.define;window.define=undefined;\n" + get_plotlyjs() + "\nwindow.define=window.__lcvDefine;"


def viewer_html(
    atlas: Atlas,
    plotly_js: str = "global",
    full_html: bool = False,
    element_id: str | None = None,
    **payload_options,
) -> str:
    """The viewer as HTML.

    ``plotly_js``: ``"global"`` uses the page's ``window.Plotly`` (the book loads one ``plotly.min.js`` on every page);
    ``"inline"`` embeds plotly.js (a standalone file, or a live notebook). ``full_html`` wraps it in a whole document.
    ``payload_options`` go to :func:`viewer_payload` (runs, rows, context_chars, bits, selected, title, colour_by).
    """
    if plotly_js not in ("global", "inline"):
        raise ValueError("plotly_js must be 'global' or 'inline'")
    data = json_for_script(viewer_payload(atlas, **payload_options))
    root = element_id or "lcv-" + hashlib.sha256(data.encode()).hexdigest()[:12]
    if not root.replace("-", "").replace("_", "").isalnum():
        raise ValueError("element_id may contain letters, digits, '-' and '_' only")
    parts = [
        f"<style>{VIEWER_CSS}</style>",
        f'<div class="lcv" id="{root}">Loading the viewer (needs JavaScript)…</div>',
        f'<script type="application/json" id="{root}-data">{data}</script>',
    ]
    if plotly_js == "inline":
        parts.append(f"<script>{_plotly_js_inline()}</script>")
    parts.append("<script>" + VIEWER_JS.replace("__ROOT__", root) + "</script>")
    body = "\n".join(parts)
    if not full_html:
        return body
    title = html.escape(f"Learning-curve atlas: {atlas.suite} {atlas.run}".strip())
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title></head>\n'
        f'<body style="max-width:1200px;margin:1em auto;padding:0 1em">\n{body}\n</body></html>\n'
    )


def export_html(atlas: Atlas, path: str | Path, **payload_options) -> Path:
    """Write the viewer as one standalone HTML file (plotly.js inlined; opens offline from disk). Returns the path."""
    path = Path(path)
    path.write_text(viewer_html(atlas, plotly_js="inline", full_html=True, **payload_options), encoding="utf-8")
    return path


def show_viewer(atlas: Atlas, **payload_options) -> None:
    """Display the viewer: in the book build as a fragment using the book's shared plotly.js, elsewhere with plotly.js
    inlined (live Jupyter, Colab, VS Code)."""
    from IPython.display import HTML, display

    from .figures import in_book_build

    display(HTML(viewer_html(atlas, plotly_js="global" if in_book_build() else "inline", **payload_options)))


# ---- the chapter's figures, in the viewer's colours -----------------------------------------------------------------


def plotly_text(text: str) -> str:
    """``text`` escaped for plotly's pseudo-HTML (hover labels): ``&``, ``<``, ``>`` and ``"`` (as ``&#34;``: plotly
    knows no ``&quot;``), as the page script's ``esc``."""
    return html.escape(str(text), quote=False).replace('"', "&#34;")


def median_curves_figure(atlas: Atlas, by: str = "cluster"):
    """The median loss curve of each cluster (``by="cluster"``, in :meth:`Atlas.cluster_colors`) or of each shape
    label (``by="shape"``, in :data:`SHAPE_COLORS`) of the mapped run, with the mean of all samples dashed, on a log
    step axis: a colour means what it means on the map."""
    import plotly.graph_objects as go

    from .figures import log_step_axis, step_x, style

    x = step_x(atlas.steps)
    fig = go.Figure()
    fig.add_scatter(x=x, y=atlas.mean_curve(), name="mean of all samples", line=dict(color="#333", width=3, dash="dash"))
    if by == "cluster":
        colours = atlas.cluster_colors()
        for row in atlas.clusters.iter_rows(named=True):
            name = cluster_name(row["cluster"])
            fig.add_scatter(
                x=x, y=row["median_curve"], mode="lines", name=f"{name} ({row['size']:,})", line=dict(color=colours[row["cluster"]], width=2.5),
                text=[plotly_text(row["label"])] * len(x), hovertemplate="%{text}<br>%{y:.2f} nats<extra>" + name + "</extra>",
            )
    elif by == "shape":
        shapes = atlas.samples["shape"].to_numpy()
        for label in SHAPES:
            rows = shapes == label
            if rows.any():
                fig.add_scatter(x=x, y=np.median(atlas.curves[atlas.run][rows], axis=0), mode="lines", name=f"{label} ({rows.sum():,})",
                                line=dict(color=SHAPE_COLORS[label], width=2.5))
    else:
        raise ValueError(f"by must be 'cluster' or 'shape', got {by!r}")
    style(fig, title=f"Median loss curve of each {'cluster' if by == 'cluster' else 'shape label'}, {atlas.run}", x="step",
          y="loss (nats)", legend=f"{by} (samples)")
    return log_step_axis(fig, atlas.steps)


# ---- live Jupyter / Colab ------------------------------------------------------------------------------------------


class AtlasExplorer:
    """The viewer with filters for live Jupyter/Colab: token text, domain, cluster and shape (ipywidgets).

    Changing a filter recomputes :attr:`rows` (the matching rows of ``atlas.samples``) and redraws the viewer with
    only those points. ``explorer.widget`` is the box to display. Filters also work without a browser (tests set
    ``explorer.token.value = "⏎"`` and read :attr:`rows`, :attr:`count` and the viewer HTML in :attr:`output`).
    """

    def __init__(self, atlas: Atlas, runs: list[str] | None = None, bits: int = 8, context_chars: int = CONTEXT_CHARS):
        import ipywidgets as W

        self.atlas = atlas
        self.options = dict(runs=runs, bits=bits, context_chars=context_chars)
        s = atlas.samples
        self._token = s["target_text"].to_list()
        self._shown = [display_token(t) for t in self._token]
        self._domain = s["domain"].to_numpy()
        self._cluster = s["cluster"].to_numpy()
        self._shape = s["shape"].to_numpy()
        labels = {r["cluster"]: r["label"] for r in atlas.clusters.iter_rows(named=True)}
        cluster_options = [("all", None)] + [
            (_clip(f"{cluster_name(c)}: " + labels.get(c, ""), LEGEND_CHARS), int(c))
            for c in sorted(set(self._cluster.tolist()), key=lambda c: (c < 0, c))
        ]
        self.token = W.Text(description="token", placeholder="e.g. ⏎ or ␣the", continuous_update=False)
        self.domain = W.Dropdown(options=["all"] + sorted(set(self._domain.tolist())), value="all", description="domain")
        self.cluster = W.Dropdown(options=cluster_options, value=None, description="cluster")
        self.shape = W.Dropdown(options=["all", *SHAPES], value="all", description="shape")
        self.count = W.Label()
        self.output = W.Output()
        for w in (self.token, self.domain, self.cluster, self.shape):
            w.observe(self._update, names="value")
        self.widget = W.VBox([W.HBox([self.token, self.domain]), W.HBox([self.cluster, self.shape]), self.count, self.output])
        self.rows = np.arange(len(s))
        self._update()

    def matching_rows(self) -> np.ndarray:
        """Rows of ``atlas.samples`` that pass every filter (token text matches the raw or the shown token)."""
        keep = np.ones(len(self._token), dtype=bool)
        q = self.token.value
        if q:
            keep &= np.array([q in raw or q in shown for raw, shown in zip(self._token, self._shown)])
        if self.domain.value != "all":
            keep &= self._domain == self.domain.value
        if self.cluster.value is not None:
            keep &= self._cluster == self.cluster.value
        if self.shape.value != "all":
            keep &= self._shape == self.shape.value
        return np.flatnonzero(keep)

    def _update(self, change=None) -> None:
        from IPython.display import HTML

        self.rows = self.matching_rows()
        n, total = len(self.rows), len(self._token)
        self.count.value = f"{n:,} of {total:,} samples match"
        self.output.clear_output()
        if n:
            html_text = viewer_html(self.atlas, plotly_js="inline", rows=self.rows, **self.options)
            self.output.append_display_data(HTML(html_text))
        else:
            self.output.append_stdout("No sample matches these filters.\n")

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
