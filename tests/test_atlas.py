"""The atlas: Michaud's metric via sqrt(w) scaling, shape labels, clusters, induction candidates, bigram shares."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from helpers.atlas import (
    SHAPES,
    count_bigrams,
    embed,
    find_clusters,
    half_drop_step,
    lookup_bigrams,
    scale_curves,
    shape_labels,
    synthetic_atlas,
    synthetic_curves,
    token_features,
    weighted_distance,
)
from helpers.recipes import RECIPES
from helpers.schedule import PYTHIA_CHECKPOINTS

SCHEDULES = {"pico": RECIPES["pico"].steps, "nano": RECIPES["nano"].steps, "pythia": PYTHIA_CHECKPOINTS}


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_sqrt_w_scaling_gives_the_weighted_metric_and_its_ordering(schedule):
    steps = SCHEDULES[schedule]
    rng = np.random.default_rng(1)
    curves = rng.normal(4, 1.5, (80, len(steps))).astype(np.float32)
    weighted = weighted_distance(curves[:, None, :], curves[None, :, :], steps)
    z = scale_curves(curves, steps).astype(np.float64)
    euclid_sq = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(euclid_sq, weighted, rtol=1e-5, atol=1e-6)
    iu = np.triu_indices(len(curves), 1)
    # the same ordering of all pairwise distances, and the same nearest neighbours of every curve
    assert np.array_equal(np.argsort(weighted[iu], kind="stable"), np.argsort(euclid_sq[iu], kind="stable"))
    assert np.array_equal(np.argsort(weighted, axis=1)[:, :10], np.argsort(euclid_sq, axis=1)[:, :10])


def test_weights_are_not_uniform_so_the_metric_matters():
    steps = SCHEDULES["pico"]
    a, b = np.zeros(len(steps)), np.zeros(len(steps))
    early, late = b.copy(), b.copy()
    early[2] = 1.0  # a difference at step 2 (log-spacing 0.3 decades)
    late[-2] = 1.0  # the same difference at step 585 (0.011 decades)
    assert weighted_distance(a, early, steps) > 10 * weighted_distance(a, late, steps)


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_shape_labels_recover_synthetic_shapes(schedule):
    steps = SCHEDULES[schedule]
    curves, truth, reference = synthetic_curves(steps, n=600, seed=2)
    labels = shape_labels(curves, steps, reference=reference)
    assert set(truth) == set(SHAPES)
    for shape in SHAPES:
        got = labels[truth == shape]
        assert (got == shape).mean() == 1.0, (shape, dict(zip(*np.unique(got, return_counts=True))))


def test_shape_label_rules_on_hand_made_curves():
    steps = np.array(SCHEDULES["pico"])
    x = np.log10(np.maximum(steps, 0.5))
    ref = 3 + 5.3 / (1 + np.exp((x - 1.3) / 0.3))
    flat = np.full(len(steps), 8.0)
    rising = 2 + 5 / (1 + np.exp((x - 0.6) / 0.1)) + np.where(steps >= 60, 1.0 * (steps - 60) / 540, 0)
    u = ref.copy()
    u[steps >= 200] -= 1.0
    u[steps >= 400] += 1.0  # falls by 1 nat after step 200, back up after 400
    labels = shape_labels(np.stack([ref, flat, rising, u]), steps, reference=ref)
    assert labels.tolist() == ["steady decline", "flat", "rising", "U-shaped"]


def test_half_drop_step():
    steps = [0, 1, 2, 4, 8, 16, 32, 64, 128]
    curve = np.array([[8, 8, 8, 8, 8, 2, 2, 2, 2.0]])  # the whole drop between step 8 and 16
    t = half_drop_step(curve, steps)[0]
    assert 8 < t < 16
    assert np.isnan(half_drop_step(np.array([[2, 3, 3, 3, 3, 3, 3, 3, 3.0]]), steps)[0])


def test_find_clusters_finds_islands_largest_first():
    rng = np.random.default_rng(0)
    big = rng.normal(0, 1, (600, 2))
    mid = rng.normal([12, 0], 0.5, (250, 2))
    small = rng.normal([0, 15], 0.3, (60, 2))
    labels = find_clusters(np.vstack([big, mid, small]), min_cluster_size=30)
    assert np.bincount(labels[labels >= 0]).tolist()[:3] == sorted(np.bincount(labels[labels >= 0]).tolist(), reverse=True)[:3]
    assert len(set(labels[:600]) - {-1}) == 1 and labels[600:850].max() == labels[600:850].min() != labels[0]
    assert (labels[850:] == labels[850]).all() and labels[850] == 2


def test_embed_is_deterministic_for_a_seed():
    steps = SCHEDULES["nano"]
    curves, _, _ = synthetic_curves(steps, n=300, seed=4)
    a = embed(curves, steps, n_neighbors=15, seed=7)
    b = embed(curves, steps, n_neighbors=15, seed=7)
    c = embed(curves, steps, n_neighbors=15, seed=8)
    assert a.shape == (300, 2) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    with pytest.raises(ValueError, match="NaN"):
        embed(np.where(np.eye(300, len(steps)) > 0, np.nan, curves), steps)


def test_token_features_marks_bigrams_seen_earlier_in_the_same_window():
    docs = {10: np.array([5, 6, 7, 5, 6, 9, 5, 6]), 11: np.array([5, 6, 8])}
    samples = pl.DataFrame(
        {
            "sample_id": [0, 1, 2, 3, 4],
            "doc_id": [10, 10, 10, 10, 11],
            "position": [1, 4, 5, 7, 1],
            "target_id": [6, 6, 9, 6, 6],
        }
    )
    f = token_features(samples, docs)
    assert f["prev_id"].to_list() == [5, 5, 6, 5, 5]
    # (5,6) first at 0..1: not a candidate; again at 3..4 and 6..7: candidates; (6,9) new; doc 11 does not see doc 10
    assert f["induction"].to_list() == [False, True, False, True, False]
    # a 3-token window at position 4 starts at index 1: the (5,6) at 0..1 is outside it; at position 7 the one at 3..4
    # is inside a 4-token window (starts at 3) but not a 3-token window (starts at 4)
    assert token_features(samples, docs, context=3)["induction"].to_list() == [False, False, False, False, False]
    assert token_features(samples, docs, context=4)["induction"].to_list() == [False, True, False, True, False]
    with pytest.raises(ValueError, match="differ"):
        token_features(samples.with_columns(pl.Series("target_id", [6, 6, 9, 6, 7])), docs)


def test_bigram_counts_skip_document_boundaries():
    eot = 99
    stream = np.array([1, 2, 1, 2, eot, 2, 1, 2, eot])
    counts = count_bigrams(stream, eot)
    assert counts[2] == 5  # (1,2) (2,1) (1,2) | (2,1) (1,2)
    share = lookup_bigrams(counts, np.array([1, 2, 2, 3]), np.array([2, 1, eot, 1]))
    np.testing.assert_allclose(share, [3 / 5, 2 / 5, 0, 0])


def test_cluster_table_on_a_synthetic_atlas():
    atlas = synthetic_atlas(SCHEDULES["pico"], n=900, seed=5)
    t = atlas.clusters
    assert t["size"].sum() == 900
    assert {"cluster", "size", "share", "silhouette", "shape", "top_targets", "top_bigrams", "induction_share",
            "domain_mix", "median_curve", "label"} <= set(t.columns)  # fmt: skip
    assert all(len(c) == len(atlas.steps) for c in t["median_curve"].to_list())
    assert atlas.shape_counts()["n"].sum() == 900
    assert set(atlas.samples["shape"].unique().to_list()) <= set(SHAPES)


@pytest.mark.slow
def test_build_atlas_on_nano(nano):
    from helpers.atlas import build_atlas

    atlas = build_atlas("nano", n_neighbors=10, min_cluster_size=5)
    s = atlas.samples
    assert set(atlas.runs) == set(nano.run_names)
    assert {"x", "y", "cluster", "shape", "induction", "bigram_share", "prev_text"} <= set(s.columns)
    assert s["bigram_share"].min() >= 0 and (s["bigram_share"] > 0).mean() > 0.5
    assert 0 <= s["induction"].mean() <= 1
    assert atlas.clusters["size"].sum() == s.height


def test_umap_neighbours_are_the_weighted_metrics_own():
    from helpers.atlas import exact_neighbours

    steps = SCHEDULES["pico"]
    curves, _, _ = synthetic_curves(steps, n=400, seed=9, noise=0.3)
    curves[1] = curves[0]  # an exact duplicate: each still lists itself first
    idx, dist = exact_neighbours(scale_curves(curves, steps), 15)
    assert (idx[:, 0] == np.arange(400)).all() and (dist[:, 0] == 0).all()
    weighted = weighted_distance(curves[:, None, :], curves[None, :, :], steps)
    for r in range(2, 400, 37):
        np.testing.assert_allclose(np.sort(weighted[r])[:15], dist[r] ** 2, rtol=1e-3, atol=1e-5)


def test_run_pairs_agreement_and_group_summary_on_a_synthetic_atlas():
    from helpers.atlas import group_summary, run_agreement, run_pairs, shape_agreement

    atlas = synthetic_atlas(SCHEDULES["pico"], n=600, seed=6)  # runs syn-1m, syn-1m-seed1, syn-2m
    assert run_pairs(atlas.runs) == [("seed", "syn-1m", "syn-1m-seed1"), ("size", "syn-1m", "syn-2m"), ("size", "syn-1m-seed1", "syn-2m")]
    agree = run_agreement(atlas, "syn-1m", "syn-1m-seed1")
    assert agree["median_r"] > 0.8 > 0.2 > abs(agree["random_pairs_r"])  # the same curves plus small noise
    assert agree["same_shape"] > agree["same_shape_random"]
    t = shape_agreement(atlas, "syn-1m", "syn-1m-seed1")
    assert t["shape"].to_list() == list(SHAPES) and abs(t["share"].sum() - 1) < 1e-9
    flat = atlas.samples["shape"].to_numpy() == "flat"
    g = group_summary(atlas, flat)
    assert g["n"] == flat.sum() and g["shape:flat"] == 1.0 and g["rest_shape:flat"] == 0.0
    assert g["final_loss"] > g["rest_final_loss"] and g["final_loss_percentile"] > 0.5


# ---- cluster names, labels, colours ---------------------------------------------------------------------------------


def test_cluster_label_names_shape_and_target_only_when_they_dominate():
    from helpers.atlas import cluster_label, cluster_name

    assert cluster_name(-1) == "unclustered" and cluster_name(2) == "cluster 2"
    mixed = cluster_label("late drop", 0.31, "␣the", 0.03, 4.44)
    assert mixed.startswith("mixed, most often late drop (31%)") and "␣the" not in mixed
    comma = cluster_label("early drop", 0.71, ",", 0.82, 1.48)
    assert comma == 'early drop (71%) · "," 82% of targets · final 1.48 nats'
    assert "noise" not in cluster_label("steady decline", 0.73, "⏎", 0.89, 0.16)


def _islands_atlas():
    """A synthetic atlas whose map has a bulk and two islands: one of comma targets, one of newlines after '.' or
    after a line of capitals (a speaker's name)."""
    from helpers.atlas import atlas_from_arrays

    steps = SCHEDULES["pico"]
    rng = np.random.default_rng(0)
    n_bulk, n_comma, n_nl = 400, 60, 40
    n = n_bulk + n_comma + n_nl
    xy = np.vstack([rng.normal(0, 1, (n_bulk, 2)), rng.normal([15, 0], 0.3, (n_comma, 2)), rng.normal([0, 15], 0.3, (n_nl, 2))])
    curves, _, _ = synthetic_curves(steps, n=n, seed=1)
    words = [" the", " and", " of", " LORD", "def"]
    target = [words[i % 5] for i in range(n_bulk)] + [","] * 50 + ["\n"] * 10 + ["\n"] * n_nl
    prev = [" a"] * n_bulk + [" him"] * n_comma + ["."] * 30 + ["ALIND"] * 10
    context = ["some text a"] * n_bulk + ["and him"] * n_comma + ["He spoke."] * 30 + ["Words.\n\nROSALIND"] * 10
    domain = ["bible"] * (n - 10) + ["shakespeare"] * 10
    samples = pl.DataFrame(
        {
            "sample_id": np.arange(n), "doc_id": np.arange(n), "domain": domain, "position": np.ones(n, int),
            "target_id": np.zeros(n, int), "target_text": target, "context_text": context, "prev_id": np.zeros(n, int),
            "prev_text": prev, "induction": np.zeros(n, bool), "bigram_share": np.zeros(n),
        }
    )  # fmt: skip
    return atlas_from_arrays(samples, {"syn-1m": curves, "syn-1m-seed1": curves}, steps, "syn-1m", embedding=xy, min_cluster_size=20)


def test_islands_describe_the_clusters_apart_from_the_bulk():
    from helpers.atlas import islands, where_targets_go

    atlas = _islands_atlas()
    t = atlas.clusters
    assert t.filter(pl.col("cluster") == 0)["size"][0] == 400
    found = islands(atlas)
    assert {i["target"] for i in found} == {",", "⏎"} and all(i["silhouette"] >= 0.5 for i in found)
    assert found[0]["silhouette"] >= found[1]["silhouette"]
    comma = next(i for i in found if i["target"] == ",")
    assert comma["size"] == 60 and comma["targets"][0] == (",", pytest.approx(50 / 60)) and comma["coverage"] == 1.0
    newline = next(i for i in found if i["target"] == "⏎")
    assert newline["coverage"] == pytest.approx(40 / 50)  # 10 of the 50 newline targets are in the comma island
    assert newline["preceding"]["punctuation"] == pytest.approx(0.75) and newline["preceding"]["line of capitals"] == pytest.approx(0.25)
    assert newline["capital_lines"] == [("ROSALIND", 10)] and newline["capital_lines_domain"] == ("shakespeare", 1.0)
    assert where_targets_go(atlas, "\n") == {newline["cluster"]: 0.8, comma["cluster"]: 0.2}
    label = t.filter(pl.col("cluster") == comma["cluster"])["label"][0]
    assert '"," 83% of targets' in label


def test_islands_are_empty_with_fewer_than_two_clusters():
    from helpers.atlas import atlas_from_arrays, islands

    steps = SCHEDULES["pico"]
    curves, _, _ = synthetic_curves(steps, n=200, seed=3)
    base = synthetic_atlas(steps, n=200, seed=3, runs=("syn-1m",))
    xy = np.random.default_rng(1).normal(0, 1, (200, 2))  # one blob: one cluster at most, silhouette undefined
    atlas = atlas_from_arrays(base.samples.drop("x", "y", "cluster", "shape", "final_loss"), {"syn-1m": curves}, steps, "syn-1m", embedding=xy)
    assert (atlas.clusters["cluster"] >= 0).sum() <= 1
    assert atlas.clusters.filter(pl.col("cluster") >= 0)["silhouette"].is_null().all()
    assert islands(atlas) == []


def test_preceding_kinds():
    from helpers.atlas import preceding_kinds

    kinds = preceding_kinds(
        [".", "?!", "IUS", "\n", " word", "HE"],
        ["He said.", "What?!", "Exit.\n\nDEMETRIUS", "a\n", "a word", "and HE"],
    )
    assert kinds.tolist() == ["punctuation", "punctuation", "line of capitals", "newline", "other", "other"]


def test_cluster_colours_avoid_the_run_colours_of_the_books_suites():
    from helpers.atlas import MIN_COLOUR_DISTANCE, NOISE_COLOR, cluster_colors, colour_distance
    from helpers.figures import run_colors

    assert colour_distance("#000000", "#ffffff") == pytest.approx(100, abs=0.1)
    suites = [
        ["pico-0.6m", "pico-0.6m-seed1", "pico-0.6m-seed2", "pico-0.6m-seed3", "pico-1.1m", "pico-2.2m"],
        ["pythia-70m", "pythia-160m", "pythia-410m", "pythia-160m-seed1", "pythia-160m-seed2", "pythia-160m-seed3"],
        ["nano-20k", "nano-20k-seed1", "nano-60k", "nano-60k-seed1"],
        [f"pythia-{s}" for s in ("14m", "31m", "70m", "160m", "410m", "1b", "1.4b")],
    ]
    for runs in suites:
        avoid = list(run_colors(runs).values())
        colours = cluster_colors(range(-1, 8), avoid=avoid)
        assert colours[-1] == NOISE_COLOR
        for c in range(8):
            assert min(colour_distance(colours[c], a) for a in avoid) >= MIN_COLOUR_DISTANCE, (runs, c, colours[c])
        assert len({colours[c] for c in range(8)}) == 8  # eight clusters, eight colours
    # the book's default suite keeps the palette's order: cluster 0, 1, 2 always get the same colours
    pico = cluster_colors([0, 1, 2], avoid=run_colors(suites[0]).values())
    assert pico == cluster_colors([0, 1, 2], avoid=run_colors(suites[1]).values())


def test_atlas_cluster_colors_cover_every_cluster():
    atlas = synthetic_atlas(SCHEDULES["pico"], n=300, seed=2)
    colours = atlas.cluster_colors()
    assert set(colours) == set(atlas.clusters["cluster"].to_list())


def test_agreement_table_with_one_run_is_empty_not_an_error():
    from helpers.atlas import agreement_by_kind, agreement_table

    one = synthetic_atlas(SCHEDULES["pico"], n=200, seed=2, runs=("syn-1m",))
    t = agreement_table(one)
    assert t.is_empty() and "median_r" in t.columns
    assert agreement_by_kind(t).is_empty()
    three = synthetic_atlas(SCHEDULES["pico"], n=200, seed=2)
    by_kind = agreement_by_kind(agreement_table(three))
    assert by_kind["kind"].to_list() == ["seed", "size"] and by_kind["pairs"].to_list() == [1, 2]


def test_rising_shares_mark_pairs_where_nothing_changed():
    from helpers.atlas import rising_shares

    m = np.array([[5.0, 5.0, 4.0, 4.5], [5.0, 5.0, 6.0, 3.0], [5.0, 5.0, 4.0, 4.0]])  # step 0 -> 1: the same weights
    share, changed = rising_shares(m)
    np.testing.assert_allclose(share, [0, 1 / 3, 1 / 3])
    assert changed.tolist() == [False, True, True]


def test_map_explains_final_loss():
    from helpers.atlas import map_explains_final_loss

    atlas = synthetic_atlas(SCHEDULES["pico"], n=300, seed=2)
    s = atlas.samples
    linear = atlas.samples.with_columns((2 * pl.col("x") - pl.col("y") + 1).alias("final_loss"))
    atlas.samples = linear
    assert map_explains_final_loss(atlas) == pytest.approx(1.0)
    atlas.samples = s.with_columns(pl.Series("final_loss", np.random.default_rng(0).normal(size=s.height)))
    assert map_explains_final_loss(atlas) < 0.1


def test_md_code_keeps_any_token_literal():
    from helpers.atlas import md_code

    assert md_code("<b>") == "`<b>`" and md_code("\n") == "`⏎`"
    assert md_code("a`b") == "``a`b``" and md_code("`") == "`` ` ``"
    assert md_code("") == "`(empty)`"


def test_describe_island_states_the_computed_numbers():
    from helpers.atlas import describe_island, describe_spread, islands, where_targets_go

    atlas = _islands_atlas()
    found = {i["target"]: i for i in islands(atlas)}
    text = describe_island(found["⏎"])
    nl = found["⏎"]
    assert f"({nl['size']:,} samples" in text and f"silhouette {nl['silhouette']:.2f}" in text
    assert "punctuation 75% (`.` 75%)" in text and "a line of capitals 25%" in text
    assert "speakers' names" in text and "`ROSALIND`" in text  # from the plays
    assert "holds 80% of all samples whose target is `⏎`" in text
    assert f"by step {nl['half_drop_step']:.0f}" in text and f"{nl['final_loss']:.2f} nats" in text
    comma = describe_island(found[","])
    assert "speakers" not in comma and "most common previous tokens are `␣him` 100%" in comma
    spread = describe_spread(where_targets_go(atlas, "\n"))
    assert spread == f"80% in cluster {nl['cluster']}, 20% in cluster {found[','][ 'cluster']}"
    assert describe_spread({-1: 0.75, 1: 0.25}) == "75% unclustered, 25% in cluster 1"


def test_cluster_overview_is_narrow_and_readable():
    from helpers.atlas import cluster_overview, cluster_overview_markdown

    atlas = _islands_atlas()
    t = cluster_overview(atlas)
    assert t.columns == ["cluster", "samples", "share", "silhouette", "shape", "half-drop step", "final loss (nats)", "top targets"]
    md = cluster_overview_markdown(atlas).splitlines()
    assert len(md) == 2 + atlas.clusters.height and md[0].count("|") == 8  # seven columns: share goes with samples
    comma_row = next(line for line in md if "`,` 83%" in line)
    assert comma_row.startswith("| cluster ") and "| 60 (12.0%) |" in comma_row


def test_bigram_source_tells_hub_suites_they_never_trained_on_it():
    from types import SimpleNamespace

    from helpers.atlas import bigram_source

    local, trained = bigram_source(SimpleNamespace(kind="local", name="pico", meta={"corpus": "pico-pile"}))
    assert trained and "trained on" in local and "never" not in local
    hub, trained = bigram_source(SimpleNamespace(kind="hub", name="pythia-small"))
    assert not trained and "`pico-pile`" in hub and "never trained on it" in hub
