"""The atlas of learning curves: a UMAP map of per-token loss curves, density clusters, and computed labels.

Michaud ("The space of LLM learning curves") embeds ~10k per-token loss curves of one run with UMAP under a weighted
mean squared difference whose weights are the checkpoints' spacing in log10(step)::

    d(x, y) = sum_i w_i (x_i - y_i)^2          w = helpers.schedule.log_step_weights(steps), sum(w) = 1

Scaling column ``i`` by ``sqrt(w_i)`` turns this into the squared Euclidean distance, so UMAP's built-in Euclidean
metric finds the same neighbours (no numba-compiled custom metric)::

    atlas = build_atlas("pico")            # loads the loss table, embeds, clusters, labels
    atlas.samples                          # one row per sample: x, y, cluster, shape, induction, bigram share, ...
    atlas.clusters                         # one row per cluster: size, shape, top targets/bigrams, domains, ...

Shapes (:func:`shape_labels`) are computed from each curve; the thresholds are arguments with documented defaults.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from .schedule import log_step_weights

# Michaud's settings (ejmichaud/llm-curve-visualization, notebooks/visualize5.ipynb)
DEFAULT_NEIGHBORS = 50
DEFAULT_MIN_DIST = 0.1
DEFAULT_SEED = 3
# UMAP runs 500 epochs up to 10,000 points and 200 above; we fix 200 so 10,000 curves cost what 10,001 would.
DEFAULT_EPOCHS = 200
EXACT_KNN_MAX = 60_000  # up to this many curves, neighbours are found exactly (brute force) before UMAP

SHAPES = ("early drop", "steady decline", "late drop", "rising", "U-shaped", "flat")
SHAPE_COLORS = {
    "early drop": "#1f77b4",
    "steady decline": "#7f7f7f",
    "late drop": "#9467bd",
    "rising": "#d62728",
    "U-shaped": "#ff7f0e",
    "flat": "#bcbd22",
}
# Cluster colours, in order of cluster id (0 is the largest cluster). None of them is near a run colour of the book's
# suites (helpers.figures.run_colors: blue, red and green families), so a colour on the map never reads as a run in
# the curve pane beside it; :func:`cluster_colors` also skips any that is near a run colour of a larger suite.
CLUSTER_PALETTE = [
    "#9467bd", "#ff7f0e", "#e377c2", "#00a08b", "#b68e00", "#8c564b", "#511cfb", "#bcbd22", "#750d86", "#6c7c32",
    "#fe00fa", "#17becf", "#fc0080", "#1616a7", "#86ce00", "#620042",
]  # fmt: skip
NOISE_COLOR = "#c7c7c7"  # points HDBSCAN leaves unclustered
MIN_COLOUR_DISTANCE = 25.0  # CIE76 ΔE: closer than this, two colours read as the same on a scatter plot
DOMINANT_SHARE = 0.5  # a shape or target held by at least this share of a cluster names it


# ---- the metric ---------------------------------------------------------------------------------------------------


def scale_curves(matrix: np.ndarray, steps) -> np.ndarray:
    """``matrix * sqrt(w)`` column-wise (float32 [n_samples, n_steps]): Euclidean distance between rows of the result,
    squared, is Michaud's weighted mean squared difference between the curves."""
    m = np.asarray(matrix, dtype=np.float32)
    if m.ndim != 2 or m.shape[1] != len(steps):
        raise ValueError(f"matrix must be [n_samples, {len(steps)} steps], got shape {m.shape}")
    return m * np.sqrt(log_step_weights(list(steps))).astype(np.float32)


def weighted_distance(a: np.ndarray, b: np.ndarray, steps) -> np.ndarray:
    """Michaud's distance between curves ``a`` and ``b`` ([..., n_steps]): ``average((a-b)**2, weights=w)`` (nats²)."""
    w = log_step_weights(list(steps))
    return np.average((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2, weights=w, axis=-1)


def embed(
    matrix: np.ndarray,
    steps,
    n_neighbors: int = DEFAULT_NEIGHBORS,
    min_dist: float = DEFAULT_MIN_DIST,
    seed: int = DEFAULT_SEED,
    n_epochs: int | None = DEFAULT_EPOCHS,
) -> np.ndarray:
    """UMAP of the curves (rows of ``matrix``, nats, [n_samples, n_steps]) under the log-step weighted metric.

    Returns float32 [n_samples, 2]. Deterministic for a ``seed`` (UMAP then runs its optimisation on one thread).
    Up to :data:`EXACT_KNN_MAX` curves the ``n_neighbors`` nearest neighbours are exact (:func:`exact_neighbours`);
    UMAP's own approximate search is used above that. Non-finite losses are an error.
    """
    import umap

    x = scale_curves(matrix, steps)
    if not np.isfinite(x).all():
        raise ValueError("curves contain NaN or inf losses")
    n = len(x)
    if n < 4:
        raise ValueError(f"need at least 4 curves to embed, got {n}")
    k = min(n_neighbors, n - 1)
    knn = exact_neighbours(x, k) if n <= EXACT_KNN_MAX else None
    reducer = umap.UMAP(
        n_neighbors=k,
        min_dist=min_dist,
        metric="euclidean",
        random_state=seed,
        n_epochs=n_epochs,
        init="spectral" if n > k + 2 else "random",
        precomputed_knn=(knn[0], knn[1], None) if knn is not None else (None, None, None),
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value 1 overridden.*")
        warnings.filterwarnings("ignore", message=".*random_state.*parallelism.*")
        warnings.filterwarnings("ignore", message=".*knn_search_index.*")  # we never transform new data
        out = reducer.fit_transform(x)
    return np.asarray(out, dtype=np.float32)


def exact_neighbours(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(indices int32 [n, k], distances float32 [n, k])`` of each row's ``k`` nearest rows (itself first), exact,
    by brute force (BLAS; ~1 s for 10,000 curves). Exact neighbours are the weighted metric's own, and computing them
    here spares UMAP its approximate search (and the JIT compilation of it)."""
    from sklearn.neighbors import NearestNeighbors

    dist, idx = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="euclidean").fit(x).kneighbors(x)
    # put each point first in its own list even when it has exact duplicates
    own = np.arange(len(x))
    first_is_self = idx[:, 0] == own
    if not first_is_self.all():
        for r in np.flatnonzero(~first_is_self):
            pos = np.flatnonzero(idx[r] == own[r])
            j = pos[0] if len(pos) else k - 1
            idx[r, 1 : j + 1], dist[r, 1 : j + 1] = idx[r, :j].copy(), dist[r, :j].copy()
            idx[r, 0] = own[r]
    dist[:, 0] = 0.0  # the BLAS expansion leaves ~1e-7 on the diagonal
    return idx.astype(np.int32), dist.astype(np.float32)


def find_clusters(embedding: np.ndarray, min_cluster_size: int | None = None, min_samples: int | None = None) -> np.ndarray:
    """HDBSCAN (scikit-learn) on the 2-D map: int labels 0, 1, ... by decreasing size, ``-1`` for noise.

    ``min_cluster_size`` defaults to 1% of the points (at least 10): Michaud's islands are ~0.5-5% of the samples.
    """
    from sklearn.cluster import HDBSCAN

    n = len(embedding)
    mcs = min_cluster_size or max(10, round(0.01 * n))
    labels = HDBSCAN(min_cluster_size=min(mcs, max(2, n)), min_samples=min_samples, copy=True).fit_predict(
        np.asarray(embedding, dtype=np.float64)
    )
    # relabel by decreasing size so cluster 0 is the largest (stable across runs of the same data)
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    order = ids[np.argsort(-counts, kind="stable")]
    remap = np.full(labels.max() + 2 if len(ids) else 1, -1)
    remap[order] = np.arange(len(order))
    return np.where(labels >= 0, remap[labels], -1).astype(np.int64)


# ---- shapes --------------------------------------------------------------------------------------------------------


def _log_x(steps) -> np.ndarray:
    """log10 of the steps, step 0 placed at 0.5 (half a step before step 1), as on the book's log axes."""
    return np.log10(np.maximum(np.asarray(steps, dtype=np.float64), 0.5))


def smooth_curves(matrix: np.ndarray) -> np.ndarray:
    """Running median over 3 consecutive checkpoints (the first and last checkpoint use their 2-point window's mean).

    Per-token losses jump by tenths of a nat between neighbouring checkpoints; shapes are read off the smoothed curve.
    Step 0 is kept as is (the initial loss is not noisy across checkpoints; there is no earlier one).
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape[1] < 3:
        return m.copy()
    out = np.empty_like(m)
    out[:, 1:-1] = np.median(np.stack([m[:, :-2], m[:, 1:-1], m[:, 2:]]), axis=0)
    out[:, 0] = m[:, 0]
    out[:, -1] = 0.5 * (m[:, -1] + m[:, -2])
    return out


def half_drop_step(matrix: np.ndarray, steps) -> np.ndarray:
    """The step (interpolated on a log axis) at which a curve has made half of its net drop from step 0 to the end.

    Uses the smoothed curve; NaN for curves that do not drop (end ≥ start). float64 [n_samples], in steps.
    """
    s = smooth_curves(np.atleast_2d(matrix))
    x = _log_x(steps)
    start, end = s[:, 0], s[:, -1]
    target = start - 0.5 * (start - end)
    below = s <= target[:, None]
    below[:, 0] = False
    below[:, -1] |= True
    k = below.argmax(axis=1)
    rows = np.arange(len(s))
    hi, lo = s[rows, k - 1], s[rows, k]
    frac = np.clip(np.divide(hi - target, hi - lo, out=np.ones_like(hi), where=(hi - lo) > 0), 0, 1)
    xh = x[k - 1] + frac * (x[k] - x[k - 1])
    return np.where(end < start, 10**xh, np.nan)


def shape_labels(
    matrix: np.ndarray,
    steps,
    reference: np.ndarray | None = None,
    min_change: float = 0.5,
    timing_factor: float = 2.0,
    window_start: float = 0.1,
) -> np.ndarray:
    """One shape label per curve (object array of strings from :data:`SHAPES`), computed on the smoothed curve.

    With ``s10`` the first checkpoint at ≥ ``window_start`` (10%) of training, ``L0`` the loss at step 0, ``L10`` at
    ``s10``, ``Lend`` at the end and ``Lmin`` the minimum from ``s10`` on (all smoothed), in this order:

    - ``U-shaped``: falls then rises after ``s10``: ``L10 - Lmin ≥ min_change`` and ``Lend - Lmin ≥ min_change``;
    - ``rising``: higher at the end than after 10% of training: ``Lend - L10 ≥ min_change``;
    - ``flat``: no net drop: ``L0 - Lend < min_change``;
    - otherwise the curve drops, and the step at which it has made half of its drop is compared with the same step of
      ``reference`` (default: the mean curve of ``matrix``): ``early drop`` if at least ``timing_factor`` (2×) earlier,
      ``late drop`` if at least 2× later, ``steady decline`` in between (the drop follows the mean's timing).

    ``min_change`` is in nats (0.5 by default: several times the checkpoint-to-checkpoint jitter of one token's loss).
    """
    m = np.asarray(matrix, dtype=np.float64)
    steps = np.asarray(steps)
    if m.ndim != 2 or m.shape[1] != len(steps):
        raise ValueError(f"matrix must be [n_samples, {len(steps)} steps], got shape {m.shape}")
    s = smooth_curves(m)
    i10 = int(np.searchsorted(steps, window_start * steps[-1]))
    l0, l10, lend = s[:, 0], s[:, i10], s[:, -1]
    lmin = s[:, i10:].min(axis=1)
    u_shaped = (l10 - lmin >= min_change) & (lend - lmin >= min_change)
    rising = ~u_shaped & (lend - l10 >= min_change)
    flat = ~u_shaped & ~rising & (l0 - lend < min_change)
    ref = m.mean(axis=0) if reference is None else np.asarray(reference, dtype=np.float64)
    t_ref = half_drop_step(ref[None, :], steps)[0]
    t = half_drop_step(m, steps)
    with np.errstate(invalid="ignore"):
        early = t <= t_ref / timing_factor
        late = t >= t_ref * timing_factor
    out = np.full(len(m), "steady decline", dtype=object)
    out[early] = "early drop"
    out[late] = "late drop"
    out[flat] = "flat"
    out[rising] = "rising"
    out[u_shaped] = "U-shaped"
    return out


# ---- tokens: previous token, induction candidates, corpus bigram frequency ---------------------------------------


def token_features(samples: pl.DataFrame, ids_by_doc: dict[int, np.ndarray], context: int | None = None) -> pl.DataFrame:
    """Per sample: ``prev_id`` (the token before the target) and ``induction`` (the (previous, target) bigram already
    occurred earlier in the same context window), from the tokenized documents ``{doc_id: int array}``.

    Vectorised over all samples: documents are concatenated, each bigram gets a code (document, prev, target), and a
    sample is an induction candidate when the previous occurrence of its code starts at or after the window start
    (``position - context``; the document start when ``context`` is None). Raises if a sample's ``target_id`` is not
    the document's token at ``position`` (the loss table and the tokenization disagree).
    """
    doc_ids = samples["doc_id"].to_numpy()
    pos = samples["position"].to_numpy().astype(np.int64)
    keys = np.unique(doc_ids)
    missing = [int(d) for d in keys if int(d) not in ids_by_doc]
    if missing:
        raise KeyError(f"documents {missing[:5]} of the samples are not among the tokenized documents")
    arrays = [np.asarray(ids_by_doc[int(d)], dtype=np.int64) for d in keys]
    lengths = np.array([len(a) for a in arrays])
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    flat = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
    doc_index = np.repeat(np.arange(len(keys)), lengths)
    d = np.searchsorted(keys, doc_ids)
    if np.any(pos < 1) or np.any(pos >= lengths[d]):
        raise ValueError("sample positions outside their documents (position must be ≥ 1 and < document length)")
    g = offsets[d] + pos
    target = samples["target_id"].to_numpy().astype(np.int64)
    bad = flat[g] != target
    if bad.any():
        raise ValueError(f"{int(bad.sum())} of {len(g)} samples' target_id differ from the tokenized document")
    prev = flat[g - 1]
    vocab = int(flat.max()) + 1 if len(flat) else 1
    # bigram i = (flat[i], flat[i+1]); valid when both tokens are in the same document
    same = doc_index[:-1] == doc_index[1:]
    code = (doc_index[:-1] * vocab + flat[:-1]) * vocab + flat[1:]
    code = np.where(same, code, -1 - np.arange(len(code)))  # unique negative codes never match
    order = np.lexsort((np.arange(len(code)), code))  # by code, then position
    previous = np.full(len(code), -1, dtype=np.int64)
    sc = code[order]
    dup = np.concatenate([[False], sc[1:] == sc[:-1]])
    previous[order[dup]] = order[np.flatnonzero(dup) - 1]
    start_of_bigram = g - 1
    prev_occ = previous[start_of_bigram]
    window_start = offsets[d] if context is None else np.maximum(offsets[d], g - context)
    induction = (prev_occ >= 0) & (prev_occ >= window_start)
    return pl.DataFrame({"sample_id": samples["sample_id"], "prev_id": prev, "induction": induction})


@functools.lru_cache(maxsize=4)
def corpus_bigrams(suite_name: str) -> tuple[np.ndarray, np.ndarray, int]:
    """``(codes, counts, total)`` of (previous, target) token pairs in the train split of the suite's corpus.

    ``code = prev * 2**20 + target``; pairs that straddle a document boundary (``<|endoftext|>``) are not counted.
    Local suites reuse the train stream the trainer cached: the bigrams they trained on. Hub suites tokenize the
    train split of the book's corpus (``pico-pile``) with their tokenizer: text they never trained on (Pythia trained
    on the Pile), so these shares describe the text the losses are measured on, not the models' training data (see
    :func:`bigram_source`).
    """
    from .recipes import RECIPES

    if suite_name in RECIPES:
        from .train import prepare_data

        _, tokens_path = prepare_data(RECIPES[suite_name])
        stream = np.load(tokens_path).astype(np.int64)
        from .suites import load_suite

        eot = load_suite(suite_name).tokenizer().convert_tokens_to_ids("<|endoftext|>")
    else:
        from .corpus import load_documents
        from .samples import suite_corpus
        from .suites import load_suite

        suite = load_suite(suite_name)
        tok = suite.tokenizer()
        texts = load_documents(suite_corpus(suite), "train")["text"].to_list()
        ids = tok(texts, add_special_tokens=False)["input_ids"]
        eot = -1
        stream = np.concatenate([np.append(np.asarray(a, np.int64), eot) for a in ids])
    return count_bigrams(stream, eot)


def count_bigrams(stream: np.ndarray, eot: int = -1) -> tuple[np.ndarray, np.ndarray, int]:
    """``(codes, counts, total)`` of adjacent pairs in a token stream (int array), skipping pairs with ``eot``.
    ``code = prev * 2**20 + target`` (vocabularies up to ~1M tokens)."""
    stream = np.asarray(stream, dtype=np.int64)
    ok = (stream[:-1] != eot) & (stream[1:] != eot)
    codes = (stream[:-1][ok] << 20) + stream[1:][ok]
    uniq, counts = np.unique(codes, return_counts=True)
    return uniq, counts, int(ok.sum())


def bigram_share(suite_name: str, prev_ids: np.ndarray, target_ids: np.ndarray) -> np.ndarray:
    """Share of all train bigrams that are (prev, target), float64 per pair (0 for pairs never seen in training)."""
    return lookup_bigrams(corpus_bigrams(suite_name), prev_ids, target_ids)


def lookup_bigrams(bigrams: tuple[np.ndarray, np.ndarray, int], prev_ids, target_ids) -> np.ndarray:
    """Share of ``bigrams`` (from :func:`count_bigrams`) that each (prev, target) pair is; 0 for unseen pairs."""
    uniq, counts, total = bigrams
    q = (np.asarray(prev_ids, np.int64) << 20) + np.asarray(target_ids, np.int64)
    i = np.clip(np.searchsorted(uniq, q), 0, max(len(uniq) - 1, 0))
    found = len(uniq) > 0
    hit = (uniq[i] == q) if found else np.zeros(len(q), bool)
    return np.where(hit, counts[i] / max(total, 1), 0.0) if found else np.zeros(len(q))


def display_token(text: str) -> str:
    """A token as shown in labels: newline ``⏎``, tab ``⇥``, leading/trailing space ``␣`` (inner spaces kept)."""
    t = text.replace("\r", "␍").replace("\n", "⏎").replace("\t", "⇥")
    stripped = t.strip(" ")
    lead = len(t) - len(t.lstrip(" "))
    trail = len(t) - len(t.rstrip(" "))
    return "␣" * lead + stripped + "␣" * trail if stripped else "␣" * len(t)


# ---- cluster names, labels and colours ----------------------------------------------------------------------------


def cluster_name(cluster: int) -> str:
    """``"cluster 3"``, or ``"unclustered"`` for HDBSCAN's noise label -1."""
    return "unclustered" if cluster < 0 else f"cluster {cluster}"


def cluster_label(shape: str, shape_share: float, top_target: str | None, top_target_share: float, final_loss: float) -> str:
    """A cluster's label, from its numbers: its shape only when most of its curves have it (else "mixed, most often
    <shape> (<share>)"), its most common target (shown token) only when it dominates, and its median final loss.

    >>> cluster_label("late drop", 0.31, "␣the", 0.03, 4.44)
    'mixed, most often late drop (31%) · final 4.44 nats'
    >>> cluster_label("early drop", 0.71, ",", 0.82, 1.48)
    'early drop (71%) · "," 82% of targets · final 1.48 nats'
    """
    parts = [f"{shape} ({shape_share:.0%})" if shape_share >= DOMINANT_SHARE else f"mixed, most often {shape} ({shape_share:.0%})"]
    if top_target is not None and top_target_share >= DOMINANT_SHARE:
        parts.append(f'"{top_target}" {top_target_share:.0%} of targets')
    parts.append(f"final {final_loss:.2f} nats")
    return " · ".join(parts)


def _lab(color: str) -> np.ndarray:
    """CIE L*a*b* (D65) of ``"#rrggbb"``."""
    rgb = np.array([int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    rgb = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ rgb
    f = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(f > 0.008856, np.cbrt(f), 7.787 * f + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def colour_distance(a: str, b: str) -> float:
    """CIE76 ΔE between two ``"#rrggbb"`` colours (about 2.3 is a just-noticeable difference)."""
    return float(np.linalg.norm(_lab(a) - _lab(b)))


def cluster_colors(cluster_ids, avoid=()) -> dict[int, str]:
    """``{cluster: "#rrggbb"}``: :data:`NOISE_COLOR` for -1, :data:`CLUSTER_PALETTE` in order for the others,
    skipping palette colours within :data:`MIN_COLOUR_DISTANCE` of any colour in ``avoid`` (e.g. the run colours
    shown beside the map). The same ids and ``avoid`` always give the same colours."""
    avoid = list(avoid)
    usable = [c for c in CLUSTER_PALETTE if all(colour_distance(c, a) >= MIN_COLOUR_DISTANCE for a in avoid)] or CLUSTER_PALETTE
    return {int(c): NOISE_COLOR if c < 0 else usable[int(c) % len(usable)] for c in cluster_ids}


# ---- cluster table -------------------------------------------------------------------------------------------------


def cluster_table(samples: pl.DataFrame, curves: np.ndarray, steps, top: int = 3) -> pl.DataFrame:
    """One row per cluster of ``samples`` (needs columns cluster, shape, target_text, prev_text, domain, induction,
    bigram_share, x, y): size, share, silhouette on the map (None when there are fewer than two clusters), majority
    shape and its share, median curve (nats per checkpoint) and the step at which it has made half its drop, the share
    of newline targets, the most common target (``top_target``, shown form, and ``top_target_share``), the ``top``
    targets and bigrams as text (a bigram with its share of the cluster and of the reference corpus's bigrams, see
    :func:`corpus_bigrams`), induction share, domain mix, and a computed ``label`` (:func:`cluster_label`).
    Noise (cluster -1) is the last row if present.
    """
    from sklearn.metrics import silhouette_samples

    n = len(samples)
    cl = samples["cluster"].to_numpy()
    xy = samples.select("x", "y").to_numpy()
    sil = np.full(n, np.nan)
    if len(set(cl[cl >= 0])) >= 2:
        keep = cl >= 0
        sil[keep] = silhouette_samples(xy[keep], cl[keep])
    med_all_final = float(np.median(curves[:, -1]))
    rows = []
    tokens = [display_token(t) for t in samples["target_text"].to_list()]
    prevs = [display_token(t) for t in samples["prev_text"].to_list()]
    bshare = samples["bigram_share"].to_numpy()
    for c in sorted(set(cl.tolist()), key=lambda v: (v < 0, v)):
        idx = np.flatnonzero(cl == c)
        sub = samples[idx]
        tt = pl.Series([tokens[i] for i in idx]).value_counts(sort=True).head(top)
        top_targets = [f'"{t}" {k / len(idx):.0%}' for t, k in zip(tt[:, 0].to_list(), tt["count"].to_list())]
        pairs = pl.DataFrame({"p": [prevs[i] for i in idx], "t": [tokens[i] for i in idx], "f": bshare[idx]})
        bt = pairs.group_by("p", "t").agg(pl.len().alias("k"), pl.col("f").first()).sort(["k", "f"], descending=True).head(top)
        top_bigrams = [f"{p}→{t} ({k / len(idx):.0%}; corpus {f:.2%})" for p, t, k, f in bt.iter_rows()]
        shapes = sub["shape"].value_counts(sort=True)
        dom = sub["domain"].value_counts(sort=True)
        domain_mix = ", ".join(f"{d} {k / len(idx):.0%}" for d, k in zip(dom[:, 0].to_list(), dom["count"].to_list()))
        med = np.median(curves[idx], axis=0)
        shape, shape_share = shapes[0, 0], shapes["count"][0] / len(idx)
        top_target, top_target_share = tt[0, 0], tt["count"][0] / len(idx)
        label = cluster_label(shape, shape_share, top_target, top_target_share, float(med[-1]))
        newline = float(np.mean(["\n" in t for t in sub["target_text"].to_list()]))
        rows.append(
            {
                "cluster": int(c),
                "size": len(idx),
                "share": len(idx) / n,
                "newline_share": newline,
                "half_drop_step": float(half_drop_step(med[None, :], steps)[0]),
                "silhouette": float(np.nanmean(sil[idx])) if c >= 0 and np.isfinite(sil[idx]).any() else None,
                "shape": shape,
                "shape_share": float(shape_share),
                "final_loss": float(med[-1]),
                "final_vs_all": float(med[-1] - med_all_final),
                "induction_share": float(sub["induction"].mean()),
                "median_bigram_share": float(np.median(bshare[idx])),
                "top_target": top_target,
                "top_target_share": float(top_target_share),
                "top_targets": top_targets,
                "top_bigrams": top_bigrams,
                "domain_mix": domain_mix,
                "median_curve": [float(v) for v in med],
                "label": label,
            }
        )
    return pl.DataFrame(rows)


# ---- Michaud's observations, as numbers ----------------------------------------------------------------------------


def group_summary(atlas: "Atlas", mask: np.ndarray, run: str | None = None) -> dict:
    """Numbers for the samples selected by ``mask`` vs the rest: count, share, median half-drop step, median final
    loss, the group's median percentile in the ordering of all samples by final loss, and the share of each shape label (``shape:<label>``) in the group and in the rest (``rest_shape:<label>``)."""
    mask = np.asarray(mask, dtype=bool)
    m = atlas.curves[run or atlas.run]
    t = half_drop_step(m, atlas.steps)
    shapes = atlas.samples["shape"].to_numpy().astype(str)
    out = {
        "n": int(mask.sum()),
        "share": float(mask.mean()),
        "half_drop_step": float(np.nanmedian(t[mask])) if mask.any() else float("nan"),
        "rest_half_drop_step": float(np.nanmedian(t[~mask])) if (~mask).any() else float("nan"),
        "final_loss": float(np.median(m[mask, -1])) if mask.any() else float("nan"),
        "rest_final_loss": float(np.median(m[~mask, -1])) if (~mask).any() else float("nan"),
        # where the group sits in the ordering by final loss (0 = lowest loss of all samples, 1 = highest)
        "final_loss_percentile": float(np.median(np.argsort(np.argsort(m[:, -1]))[mask] / max(len(m) - 1, 1))) if mask.any() else float("nan"),
    }
    for shape in SHAPES:
        out[f"shape:{shape}"] = float((shapes[mask] == shape).mean()) if mask.any() else float("nan")
        out[f"rest_shape:{shape}"] = float((shapes[~mask] == shape).mean()) if (~mask).any() else float("nan")
    return out


PRECEDING_KINDS = ("newline", "punctuation", "line of capitals", "other")


def preceding_kinds(prev_texts, contexts) -> np.ndarray:
    """What comes right before each target (object array of :data:`PRECEDING_KINDS`), in this order of precedence:
    ``newline`` (the previous token holds a line break), ``punctuation`` (the previous token is punctuation only,
    e.g. ``.`` or ``?``), ``line of capitals`` (the context's last line is upper-case words, e.g. a speaker's name
    heading a speech in a play: ``DOCTOR CAIUS``), else ``other``."""
    prev = pl.Series(list(prev_texts), dtype=pl.String)
    last_line = pl.Series(list(contexts), dtype=pl.String).str.extract(r"([^\n]*)$", 1).str.strip_chars(" ")
    kind = np.full(len(prev), "other", dtype=object)
    capitals = last_line.str.contains(r"^[A-Z][A-Z '.\-]*[A-Z]$").fill_null(False).to_numpy()
    punct = prev.str.contains(r"^[^\w\s]+$").fill_null(False).to_numpy()
    newline = prev.str.contains("\n", literal=True).fill_null(False).to_numpy()
    kind[capitals] = "line of capitals"
    kind[punct] = "punctuation"
    kind[newline] = "newline"
    return kind


def _shares(values, top: int, n: int | None = None) -> list[tuple[str, float]]:
    """The ``top`` most common values with their count divided by ``n`` (default: the number of values)."""
    s = pl.Series(list(values), dtype=pl.String).value_counts(sort=True).head(top)
    n = max(len(values) if n is None else n, 1)
    return [(v, k / n) for v, k in zip(s[:, 0].to_list(), s["count"].to_list())]


def islands(atlas: "Atlas", min_silhouette: float = 0.5, top: int = 3) -> list[dict]:
    """The clusters that stand apart on the map: every cluster except the largest (the bulk) with a silhouette of at
    least ``min_silhouette``, most separated first. Empty when HDBSCAN found fewer than two clusters.

    Per island: cluster, size, share, silhouette; ``targets`` and ``previous``: the ``top`` most common target and
    previous tokens (shown form) with their share of the island, and ``punctuation``: the same for the previous
    tokens that are punctuation; ``target``: the most common target and ``coverage``,
    the share of all samples with that target that are in the island; ``preceding``: the share of each of
    :data:`PRECEDING_KINDS` (:func:`preceding_kinds`); ``capital_lines``: the most common lines of capitals before a
    target, with counts, and ``capital_lines_domain``: their most common domain and its share; and the
    :func:`group_summary` numbers (half-drop step and final loss of the island and of all other samples, shapes).
    """
    t = atlas.clusters
    clustered = t.filter(pl.col("cluster") >= 0)
    if clustered.height < 2:
        return []
    bulk = int(clustered.sort("size", descending=True)["cluster"][0])
    rows = clustered.filter((pl.col("cluster") != bulk) & (pl.col("silhouette") >= min_silhouette)).sort("silhouette", descending=True)
    s = atlas.samples
    shown = np.array([display_token(x) for x in s["target_text"].to_list()], dtype=object)
    prev = np.array([display_token(x) for x in s["prev_text"].to_list()], dtype=object)
    kinds = preceding_kinds(s["prev_text"].to_list(), s["context_text"].to_list())
    cl = s["cluster"].to_numpy()
    out = []
    for row in rows.iter_rows(named=True):
        mask = cl == row["cluster"]
        targets = _shares(shown[mask], top)
        caps = mask & (kinds == "line of capitals")
        lines = s.filter(pl.Series(caps))["context_text"].str.extract(r"([^\n]*)$", 1).str.strip_chars(" ")
        domains = _shares(s.filter(pl.Series(caps))["domain"].to_list(), 1)
        out.append(
            {
                "cluster": row["cluster"],
                "size": row["size"],
                "share": row["share"],
                "silhouette": row["silhouette"],
                "targets": targets,
                "previous": _shares(prev[mask], top),
                "punctuation": _shares(prev[mask & (kinds == "punctuation")], top, n=int(mask.sum())),
                "target": targets[0][0],
                "coverage": float(mask[shown == targets[0][0]].mean()),
                "preceding": {k: float((kinds[mask] == k).mean()) for k in PRECEDING_KINDS},
                "capital_lines": list(lines.value_counts(sort=True).head(top).iter_rows()),
                "capital_lines_domain": domains[0] if domains else None,
                **group_summary(atlas, mask),
            }
        )
    return out


def where_targets_go(atlas: "Atlas", target: str, previous: str | None = None) -> dict[int, float]:
    """``{cluster: share}``: how the samples whose target is ``target`` (raw text; and whose previous token is
    ``previous``, if given) spread over the clusters (-1: unclustered), largest share first."""
    s = atlas.samples.filter(pl.col("target_text") == target)
    if previous is not None:
        s = s.filter(pl.col("prev_text") == previous)
    if s.height == 0:
        return {}
    counts = s["cluster"].value_counts(sort=True)
    return {int(c): k / s.height for c, k in counts.iter_rows()}


def describe_spread(spread: dict[int, float], top: int = 4) -> str:
    """A :func:`where_targets_go` result in words: ``"45% in cluster 2, 22% unclustered, 17% in cluster 1"``."""
    return ", ".join(f"{share:.0%} " + ("unclustered" if c < 0 else f"in {cluster_name(c)}") for c, share in list(spread.items())[:top])


def top_targets(atlas: "Atlas", mask, top: int = 5) -> list[tuple[str, float]]:
    """The ``top`` most common targets (shown form) among the samples of ``mask``, with their share of them."""
    mask = np.asarray(mask, dtype=bool)
    return _shares([display_token(x) for x, keep in zip(atlas.samples["target_text"].to_list(), mask) if keep], top)


def frequent_bigrams(suite_name: str, top: int = 3) -> list[tuple[str, float]]:
    """The ``top`` most frequent (previous→target) pairs of :func:`corpus_bigrams` (shown form), with their share."""
    from .suites import load_suite

    codes, counts, total = corpus_bigrams(suite_name)
    tok = load_suite(suite_name).tokenizer()
    order = np.argsort(-counts, kind="stable")[:top]
    name = lambda i: display_token(tok.decode([int(i)]))  # noqa: E731
    return [(f"{name(codes[i] >> 20)}→{name(codes[i] & 0xFFFFF)}", counts[i] / max(total, 1)) for i in order]


def cluster_overview(atlas: "Atlas") -> pl.DataFrame:
    """The cluster table to read: one row per cluster (named), its size and share, silhouette, main shape with its
    share, half-drop step, median final loss and its most common targets (the share of induction candidates per
    cluster is in ``atlas.clusters``)."""
    t = atlas.clusters
    return pl.DataFrame(
        {
            "cluster": [cluster_name(c) for c in t["cluster"].to_list()],
            "samples": t["size"],
            "share": t["share"],
            "silhouette": t["silhouette"],
            "shape": [f"{s} ({k:.0%})" for s, k in zip(t["shape"].to_list(), t["shape_share"].to_list())],
            "half-drop step": t["half_drop_step"],
            "final loss (nats)": t["final_loss"],
            "top targets": [", ".join(x) for x in t["top_targets"].to_list()],
        }
    )


def cluster_overview_markdown(atlas: "Atlas") -> str:
    """:func:`cluster_overview` as a Markdown table, target tokens in code spans (shares as percentages)."""
    from .figures import markdown_table

    t = cluster_overview(atlas)
    t = t.with_columns(
        pl.Series("samples", [f"{n:,} ({s:.1%})" for n, s in zip(t["samples"].to_list(), t["share"].to_list())]),
        pl.Series("top targets", [", ".join(f"{md_code(tok)} {k:.0%}" for tok, k in row) for row in _top_target_shares(atlas)]),
    ).drop("share")
    return markdown_table(t, formats={"half-drop step": "{:.0f}"})


def _top_target_shares(atlas: "Atlas", top: int = 3) -> list[list[tuple[str, float]]]:
    cl = atlas.samples["cluster"].to_numpy()
    return [top_targets(atlas, cl == c, top) for c in atlas.clusters["cluster"].to_list()]


def cluster_listing(atlas: "Atlas", top: int = 3) -> str:
    """A Markdown list, one item per cluster: its ``top`` most common (previous→target) pairs with their share of
    the cluster and of the reference corpus's bigrams (:func:`corpus_bigrams`), and its mix of domains."""
    s = atlas.samples
    pairs = pl.DataFrame(
        {
            "cluster": s["cluster"],
            "pair": [f"{display_token(p)}→{display_token(x)}" for p, x in zip(s["prev_text"].to_list(), s["target_text"].to_list())],
            "corpus": s["bigram_share"],
        }
    )
    lines = []
    for row in atlas.clusters.iter_rows(named=True):
        c = row["cluster"]
        sub = pairs.filter(pl.col("cluster") == c)
        counts = sub.group_by("pair").agg(pl.len().alias("k"), pl.col("corpus").first()).sort(["k", "corpus"], descending=True).head(top)
        listed = "; ".join(f"{md_code(p)} {k / sub.height:.0%} (corpus {f:.2%})" for p, k, f in counts.iter_rows())
        lines.append(f"- **{cluster_name(c)}** ({row['size']:,} samples): {listed}. Domains: {row['domain_mix']}.")
    return "\n".join(lines)


def top_pairs(atlas: "Atlas", mask, top: int = 3) -> list[tuple[str, float]]:
    """The ``top`` most common (previous→target) pairs (shown form) among the samples of ``mask``, with their share."""
    s = atlas.samples.filter(pl.Series(np.asarray(mask, dtype=bool)))
    pairs = [f"{display_token(p)}→{display_token(t)}" for p, t in zip(s["prev_text"].to_list(), s["target_text"].to_list())]
    return _shares(pairs, top)


def md_code(text: str) -> str:
    """``text`` as a Markdown code span (safe for any token text: no Markdown or HTML inside it is interpreted);
    line breaks show as ``⏎``."""
    import re

    text = str(text).replace("\n", "⏎") or "(empty)"
    fence = "`" * (max((len(r) for r in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _percent_list(items, top: int = 3) -> str:
    return ", ".join(f"{md_code(v)} {s:.0%}" for v, s in items[:top])


_KIND_PHRASE = {"newline": "a line break", "punctuation": "punctuation", "line of capitals": "a line of capitals", "other": "other tokens"}


def describe_island(island: dict) -> str:
    """One island of :func:`islands` in a Markdown paragraph: size, silhouette, targets, what precedes them (with
    the lines of capitals named, and read as speakers' names when they come from the plays), the share of all
    samples with its main target that it holds, and when its curves drop and where they end."""
    kinds = ", ".join(
        f"{_KIND_PHRASE[kind]} {share:.0%}" + (f" ({_percent_list(island['punctuation'])})" if kind == "punctuation" and share >= 0.5 else "")
        for kind, share in sorted(island["preceding"].items(), key=lambda kv: -kv[1])
        if share >= 0.05
    )
    text = (
        f"**{cluster_name(island['cluster']).capitalize()}** ({island['size']:,} samples, {island['share']:.1%} of the map; "
        f"silhouette {island['silhouette']:.2f}): targets {_percent_list(island['targets'])}. "
        f"Right before them: {kinds}"
    )
    if island["preceding"].get("punctuation", 0) < 0.5:
        text += f"; the most common previous tokens are {_percent_list(island['previous'])}"
    caps = island["preceding"].get("line of capitals", 0)
    if caps >= 0.05 and island["capital_lines"]:
        names = ", ".join(md_code(line) for line, _ in island["capital_lines"])
        domain, share = island["capital_lines_domain"] or ("", 0.0)
        if domain == "shakespeare" and share >= 0.5:
            text += f". The lines of capitals are speakers' names heading a speech in the plays ({share:.0%} of them from Shakespeare; e.g. {names})"
        else:
            text += f". The lines of capitals are, e.g., {names}"
    text += (
        f". The island holds {island['coverage']:.0%} of all samples whose target is {md_code(island['target'])}. "
        f"Its curves make half of their drop by step {island['half_drop_step']:.0f} (all other samples: step "
        f"{island['rest_half_drop_step']:.0f}) and end at a median of {island['final_loss']:.2f} nats (others: "
        f"{island['rest_final_loss']:.2f})."
    )
    return text


def bigram_source(suite) -> tuple[str, bool]:
    """``(description, trained_on)`` of the corpus whose bigrams :func:`corpus_bigrams` counts for ``suite`` (a
    :class:`~helpers.suites.Suite`): its own training split for a local suite (``trained_on`` True); for a hub suite
    the train split of the book's corpus, which the hub models never saw (``trained_on`` False)."""
    from .samples import suite_corpus

    corpus = suite_corpus(suite)
    if suite.kind == "local":
        return f"the train split of `{corpus}`, which the runs of `{suite.name}` trained on", True
    return (
        f"the train split of `{corpus}` (the corpus whose test split this book measures losses on), tokenized with the "
        f"suite's tokenizer; the runs of `{suite.name}` never trained on it",
        False,
    )


def map_explains_final_loss(atlas: "Atlas", cluster: int | None = None) -> float:
    """R² of the final loss fitted by a linear function of the map coordinates (x, y), over the samples of
    ``cluster`` (all samples if None): how much of the spread in final loss the position on the map accounts for."""
    s = atlas.samples if cluster is None else atlas.samples.filter(pl.col("cluster") == cluster)
    if s.height < 3:
        return float("nan")
    x = np.c_[s["x"].to_numpy(), s["y"].to_numpy(), np.ones(s.height)].astype(np.float64)
    y = s["final_loss"].to_numpy().astype(np.float64)
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    total = ((y - y.mean()) ** 2).sum()
    return float(1 - ((y - x @ coef) ** 2).sum() / total) if total > 0 else float("nan")


def rising_shares(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each pair of consecutive checkpoints of a loss matrix [n_samples, n_steps]: the share of samples whose
    loss is higher at the later checkpoint (float64 [n_steps - 1]), and whether any loss changed at all (bool
    [n_steps - 1]; False where both checkpoints have the same weights, e.g. Pythia's step 0 and step 1)."""
    d = np.diff(np.asarray(matrix, dtype=np.float64), axis=1)
    return (d > 0).mean(axis=0), (d != 0).any(axis=0)


def curve_correlation(a: np.ndarray, b: np.ndarray, steps, from_step: int = 0) -> np.ndarray:
    """Per-row Pearson r of two runs' curves of the same samples after removing each run's mean curve (so the shared
    fall of every token does not count), over checkpoints ≥ ``from_step``. float64 [n_samples]."""
    keep = np.asarray(steps) >= from_step
    x = a[:, keep] - a[:, keep].mean(axis=0)
    y = b[:, keep] - b[:, keep].mean(axis=0)
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    den = np.sqrt((x * x).sum(1) * (y * y).sum(1))
    return np.divide((x * y).sum(1), den, out=np.full(len(x), np.nan), where=den > 0)


def run_agreement(atlas: "Atlas", run_a: str, run_b: str, seed: int = 0) -> dict:
    """How alike the same samples learn in two runs: median per-sample r of mean-removed curves (all checkpoints, and
    from 10% of training on), the same for randomly paired samples (the chance level), and the share of samples with
    the same shape label in both runs (each run labelled against its own mean curve), with its chance level."""
    a, b = atlas.curves[run_a], atlas.curves[run_b]
    steps = atlas.steps
    perm = np.random.default_rng(seed).permutation(len(a))
    s10 = int(0.1 * steps[-1])
    la, lb = _labels(atlas, run_a), _labels(atlas, run_b)
    return {
        "run_a": run_a,
        "run_b": run_b,
        "median_r": float(np.nanmedian(curve_correlation(a, b, steps))),
        "median_r_after_10pct": float(np.nanmedian(curve_correlation(a, b, steps, s10))),
        "random_pairs_r": float(np.nanmedian(curve_correlation(a, b[perm], steps))),
        "same_shape": float((la == lb).mean()),
        "same_shape_random": float((la == lb[perm]).mean()),
    }


AGREEMENT_SCHEMA = {
    "kind": pl.String, "run_a": pl.String, "run_b": pl.String, "median_r": pl.Float64, "median_r_after_10pct": pl.Float64,
    "random_pairs_r": pl.Float64, "same_shape": pl.Float64, "same_shape_random": pl.Float64,
}  # fmt: skip


def agreement_table(atlas: "Atlas") -> pl.DataFrame:
    """:func:`run_agreement` for every pair of runs of the atlas (:func:`run_pairs`), with its ``kind`` (seed or
    size). Empty (same columns) when the atlas has one run."""
    rows = [{"kind": kind, **run_agreement(atlas, a, b)} for kind, a, b in run_pairs(atlas.runs)]
    return pl.DataFrame(rows, schema=AGREEMENT_SCHEMA)


def agreement_by_kind(table: pl.DataFrame) -> pl.DataFrame:
    """Medians of :func:`agreement_table` per kind of pair: kind, pairs, and the median of every number."""
    return (
        table.group_by("kind")
        .agg(pl.len().alias("pairs"), pl.exclude("kind", "run_a", "run_b").median())
        .sort("kind")
    )


def _labels(atlas: "Atlas", run: str) -> np.ndarray:
    if run == atlas.run:
        return atlas.samples["shape"].to_numpy().astype(str)
    return shape_labels(atlas.curves[run], atlas.steps, min_change=atlas.params.get("min_change", 0.5)).astype(str)


def shape_agreement(atlas: "Atlas", run_a: str, run_b: str) -> pl.DataFrame:
    """Per shape label: its share in ``run_a``, the share of those samples with the same label in ``run_b``, and that
    label's share in ``run_b`` (what agreement by chance would give). A label well above chance is a property of the
    token, not of one run's noise."""
    la, lb = _labels(atlas, run_a), _labels(atlas, run_b)
    rows = []
    for shape in SHAPES:
        sel = la == shape
        rows.append(
            {
                "shape": shape,
                "share": float(sel.mean()),
                "same_in_other_run": float((lb[sel] == shape).mean()) if sel.any() else float("nan"),
                "chance": float((lb == shape).mean()),
            }
        )
    return pl.DataFrame(rows)


def run_pairs(run_names) -> list[tuple[str, str, str]]:
    """``(kind, a, b)`` for every pair of runs: kind ``seed`` when they differ only in seed, ``size`` otherwise."""
    from .figures import parse_run, sort_runs

    names = sort_runs(run_names)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            out.append(("seed" if parse_run(a)[0] == parse_run(b)[0] else "size", a, b))
    return out


def default_run(run_names) -> str:
    """The run a chapter maps by default: the largest size's default-seed run (Michaud mapped pythia-410m)."""
    from .figures import parse_run

    names = list(run_names)
    best = max(names, key=lambda n: (parse_run(n)[2] == 0, parse_run(n)[1] if parse_run(n)[1] != float("inf") else -1))
    return best


# ---- the atlas ----------------------------------------------------------------------------------------------------


@dataclass
class Atlas:
    """A map of one run's per-token curves, with the other runs' curves of the same samples for overlays."""

    suite: str
    run: str  # the run whose curves were embedded
    steps: list[int]
    samples: pl.DataFrame  # samples columns + x, y, cluster, shape, prev_id, prev_text, induction, bigram_share, final_loss
    curves: dict[str, np.ndarray]  # run -> float32 [n_samples, n_steps], rows in ``samples`` order
    clusters: pl.DataFrame
    params: dict = field(default_factory=dict)

    @property
    def runs(self) -> list[str]:
        return list(self.curves)

    def mean_curve(self, run: str | None = None) -> np.ndarray:
        return self.curves[run or self.run].mean(axis=0)

    def cluster_colors(self) -> dict[int, str]:
        """``{cluster: colour}`` of every cluster on the map (and -1), none near a run colour of this atlas's runs:
        the viewer and the chapter's figures use these, so a colour means one cluster everywhere."""
        from .figures import run_colors

        return cluster_colors(self.clusters["cluster"].to_list(), avoid=run_colors(self.runs).values())

    def cluster_of(self, sample_id: int) -> int:
        return int(self.samples.filter(pl.col("sample_id") == sample_id)["cluster"][0])

    def shape_counts(self) -> pl.DataFrame:
        """Samples per shape label: shape, n, share (all of :data:`SHAPES`, zero counts included)."""
        counts = dict(zip(*np.unique(self.samples["shape"].to_numpy().astype(str), return_counts=True)))
        n = len(self.samples)
        return pl.DataFrame(
            {"shape": list(SHAPES), "n": [int(counts.get(s, 0)) for s in SHAPES], "share": [counts.get(s, 0) / n for s in SHAPES]}
        )


def atlas_from_arrays(
    samples: pl.DataFrame,
    curves: dict[str, np.ndarray],
    steps,
    run: str,
    suite: str = "",
    n_neighbors: int = DEFAULT_NEIGHBORS,
    min_dist: float = DEFAULT_MIN_DIST,
    seed: int = DEFAULT_SEED,
    n_epochs: int | None = DEFAULT_EPOCHS,
    min_cluster_size: int | None = None,
    min_change: float = 0.5,
    embedding: np.ndarray | None = None,
) -> Atlas:
    """Embed, cluster and label already-loaded data. ``samples`` must have the fixed samples columns plus
    ``prev_id``, ``prev_text``, ``induction`` and ``bigram_share`` (see :func:`build_atlas`), rows aligned with every
    ``curves[run]`` matrix. A precomputed ``embedding`` ([n, 2]) skips UMAP."""
    m = np.asarray(curves[run], dtype=np.float32)
    if embedding is None:
        xy = embed(m, steps, n_neighbors=n_neighbors, min_dist=min_dist, seed=seed, n_epochs=n_epochs)
    else:
        xy = np.asarray(embedding, dtype=np.float32)
    cl = find_clusters(xy, min_cluster_size)
    shapes = shape_labels(m, steps, min_change=min_change)
    samples = samples.with_columns(
        pl.Series("x", xy[:, 0]),
        pl.Series("y", xy[:, 1]),
        pl.Series("cluster", cl),
        pl.Series("shape", shapes.astype(str)),
        pl.Series("final_loss", m[:, -1]),
    )
    params = dict(n_neighbors=n_neighbors, min_dist=min_dist, seed=seed, n_epochs=n_epochs, min_cluster_size=min_cluster_size, min_change=min_change)
    return Atlas(suite, run, list(steps), samples, {k: np.asarray(v, np.float32) for k, v in curves.items()}, cluster_table(samples, m, steps), params)


def build_atlas(
    suite_name: str,
    run: str | None = None,
    runs: list[str] | None = None,
    table=None,
    **params,
) -> Atlas:
    """The atlas of ``run`` (default: :func:`default_run`, the largest default-seed run) of ``suite_name``, with the curves of ``runs`` (default:
    all runs) for overlays. ``params`` go to :func:`atlas_from_arrays` (n_neighbors, min_dist, seed, n_epochs,
    min_cluster_size, min_change). ``table``: a loaded :class:`~helpers.losses.LossTable`; by default
    :func:`helpers.losses.load_losses` loads (and if needed extracts) the suite's table.
    """
    if table is None:
        from .losses import load_losses

        table = load_losses(suite_name)
    all_runs = list(table.runs)
    run = run or default_run(all_runs)
    runs = [run] + [r for r in (runs or all_runs) if r != run]
    curves, steps = {}, None
    for r in runs:
        m, s = table.matrix(r)
        if steps is None:
            steps = list(s)
        if list(s) != steps:
            continue  # a run on another schedule cannot be overlaid point for point
        curves[r] = m
    samples = with_token_features(table.samples, suite_name, table.settings["split"], table.settings["context"])
    return atlas_from_arrays(samples, curves, steps, run, suite=suite_name, **params)


def with_token_features(samples: pl.DataFrame, suite_name: str, split: str = "test", context: int | None = None) -> pl.DataFrame:
    """``samples`` plus prev_id, prev_text (if missing), induction (see :func:`token_features`) and bigram_share (the
    share of the train split's bigrams that are this sample's (previous, target) pair).

    The documents are tokenized exactly as the loss table's were (:func:`helpers.samples.tokenize_split`: suite
    tokenizer, no BOS, truncated to ``context`` tokens, the model's by default), so each document is one window.
    """
    from .samples import tokenize_split
    from .suites import load_suite

    suite = load_suite(suite_name)
    docs = tokenize_split(suite, split, context)
    ids = dict(zip(docs.doc_ids.tolist(), docs.tokens))
    feats = token_features(samples, ids, docs.context)
    if "prev_text" not in samples.columns:
        tok = suite.tokenizer()
        prev_ids = feats["prev_id"].to_numpy()
        uniq, inv = np.unique(prev_ids, return_inverse=True)
        texts = np.array([tok.decode([int(i)]) for i in uniq], dtype=object)[inv]
        samples = samples.with_columns(feats["prev_id"], pl.Series("prev_text", texts.tolist(), dtype=pl.String))
    elif not np.array_equal(samples["prev_id"].to_numpy(), feats["prev_id"].to_numpy()):
        raise ValueError("the samples table's prev_id differs from the tokenized documents")
    share = bigram_share(suite_name, samples["prev_id"].to_numpy(), samples["target_id"].to_numpy())
    return samples.with_columns(feats["induction"], pl.Series("bigram_share", share))


# ---- synthetic curves (tests, benchmark) ---------------------------------------------------------------------------


def synthetic_curves(steps, n: int = 1000, seed: int = 0, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(matrix, shapes, reference)``: ``n`` float32 loss curves of known shape (a sixth each of :data:`SHAPES`,
    shuffled) on ``steps``, their true shapes, and the noise-free "steady decline" curve to use as the reference.

    A drop is a logistic in log10(step) from ~8.3 nats (uniform over 4,096 tokens) to 1-5 nats; early/late drops are
    centred 0.6 decades before/after the steady one; ``rising`` drops early and adds +1.5 nats after 10% of training, ``U-shaped`` a
    1.5-nat dip centred in the second half of training (log axis) and a 1.5-nat rise after it.
    """
    rng = np.random.default_rng(seed)
    steps = np.asarray(steps, dtype=np.float64)
    x = _log_x(steps)
    xmax = x[-1]
    mid = 0.45 * xmax

    def drop(center, l0, l1, width=0.12 * xmax):
        return l1[:, None] + (l0 - l1)[:, None] / (1 + np.exp((x[None, :] - center[:, None]) / width))

    kinds = np.array([SHAPES[i % len(SHAPES)] for i in range(n)], dtype=object)
    rng.shuffle(kinds)
    l0 = 8.3 + rng.normal(0, 0.05, n)
    l1 = rng.uniform(1.0, 5.0, n)
    centre = np.full(n, mid) + rng.normal(0, 0.03, n)
    centre[(kinds == "early drop") | (kinds == "rising")] -= 0.6
    centre[kinds == "late drop"] += 0.6
    m = drop(centre, l0, l1)
    s10 = np.log10(0.1 * steps[-1])
    t = np.clip((x - s10) / (xmax - s10), 0, 1)[None, :]
    rising = kinds == "rising"
    m[rising] += 1.5 * t[0] ** 0.7
    u = kinds == "U-shaped"
    m[u] -= 1.5 * np.sin(np.pi * t[0]) ** 2 * (x > s10)
    flat = kinds == "flat"
    m[flat] = l0[flat, None] - 0.1 * t
    m += rng.normal(0, noise, m.shape)
    reference = drop(np.array([mid]), np.array([8.3]), np.array([3.0]))[0]
    return m.astype(np.float32), kinds, reference


HOSTILE_TEXT = "</script><img src=x onerror=alert(1)><script>window.__lcvPwned=1</script>&amp;\u2028\n"
MARKUP_TOKEN = '"&amp;<b>'  # short enough to show unclipped: a quote, an entity and a tag, all to be shown as typed


def synthetic_atlas(
    steps, n: int = 600, runs: tuple[str, ...] = ("syn-1m", "syn-1m-seed1", "syn-2m"), seed: int = 0, hostile: bool = False, embedding: bool = False
) -> Atlas:
    """An :class:`Atlas` of :func:`synthetic_curves` with made-up samples (for tests and the benchmark).

    ``hostile``: every 7th target/context/previous token is :data:`HOSTILE_TEXT` (markup that must show as text),
    and every other 11th target is :data:`MARKUP_TOKEN`.
    ``embedding``: run UMAP; otherwise the map is the first two (scaled) curve coordinates of a PCA, which is fast.
    """
    rng = np.random.default_rng(seed)
    m, kinds, _ = synthetic_curves(steps, n, seed)
    curves = {r: np.clip(m + rng.normal(0, 0.1, m.shape).astype(np.float32) * k, 0, None) for k, r in enumerate(runs)}
    words = ["\n", " the", ",", " and", "def", " self", ".", " LORD", "(", " thou"]
    target = [words[i % len(words)] for i in range(n)]
    prev = [words[(i * 3 + 1) % len(words)] for i in range(n)]
    context = [f"line one\nline {i} of a made-up context with{prev[i]}" for i in range(n)]
    if hostile:
        for i in range(11, n, 11):
            target[i] = MARKUP_TOKEN
        for i in range(0, n, 7):
            target[i] = prev[i] = HOSTILE_TEXT
            context[i] = HOSTILE_TEXT + " before " + HOSTILE_TEXT
    samples = pl.DataFrame(
        {
            "sample_id": np.arange(n),
            "doc_id": np.arange(n) // 10,
            "domain": [("shakespeare", "bible", "code")[i % 3] for i in range(n)],
            "position": 1 + np.arange(n) % 60,
            "target_id": np.arange(n) % 50,
            "target_text": target,
            "context_text": context,
            "prev_id": np.arange(n) % 40,
            "prev_text": prev,
            "induction": (np.arange(n) % 5) == 0,
            "bigram_share": rng.uniform(0, 0.01, n),
        }
    )
    xy = None
    if not embedding:
        x = scale_curves(m, steps)
        x = x - x.mean(axis=0)
        xy = (x @ np.linalg.svd(x, full_matrices=False)[2][:2].T).astype(np.float32)
    return atlas_from_arrays(samples, curves, steps, runs[0], suite="synthetic", embedding=xy)
