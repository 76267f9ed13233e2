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
