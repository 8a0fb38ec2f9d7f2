"""Ranking metrics: hand-computed values, both input forms, errors."""

import math

import numpy as np
import pytest
import scipy.sparse as sp

from aiservice_kit.recommenders import metrics

RECOMMENDED = np.array([[3, 1, 4, 0], [2, 0, 1, 4], [4, 3, 2, 1]])
RELEVANT = [{1, 0}, {5}, set()]  # the third user is untested
MATRIX = sp.csr_matrix(
    ([1, 1, 1], ([0, 0, 1], [1, 0, 5])), shape=(3, 6), dtype=np.float32
)


def test_hand_computed_values():
    # User 0: hits at ranks 2 and 4; user 1: no hit; user 2 is skipped.
    assert metrics.precision_at_k(RECOMMENDED, RELEVANT, 4) == pytest.approx(
        (2 / 4 + 0) / 2
    )
    assert metrics.recall_at_k(RECOMMENDED, RELEVANT, 2) == pytest.approx(
        (1 / 2 + 0) / 2
    )
    assert metrics.hit_rate_at_k(RECOMMENDED, RELEVANT, 1) == 0.0
    assert metrics.hit_rate_at_k(RECOMMENDED, RELEVANT, 2) == 0.5
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    ideal = 1 + 1 / math.log2(3)
    assert metrics.ndcg_at_k(RECOMMENDED, RELEVANT, 4) == pytest.approx(
        dcg / ideal / 2
    )
    ap = (1 / 2 + 2 / 4) / 2
    assert metrics.map_at_k(RECOMMENDED, RELEVANT, 4) == pytest.approx(ap / 2)
    assert metrics.catalogue_coverage(RECOMMENDED, 10, 2) == pytest.approx(0.5)


def test_perfect_ranking_scores_one():
    recommended = np.array([[7, 8, 1]])
    relevant = [{7, 8}]
    for metric in (metrics.ndcg_at_k, metrics.map_at_k, metrics.recall_at_k):
        assert metric(recommended, relevant, 3) == pytest.approx(1.0)


def test_sparse_and_sequence_inputs_agree():
    sequence = metrics.ranking_report(RECOMMENDED, RELEVANT, 3, n_items=6)
    sparse = metrics.ranking_report(RECOMMENDED, MATRIX, 3, n_items=6)
    assert sequence == pytest.approx(sparse)
    assert set(sparse) == {
        "precision@3",
        "recall@3",
        "ndcg@3",
        "map@3",
        "hit_rate@3",
        "coverage@3",
    }


def test_padding_never_matches():
    recommended = np.array([[-1, 1], [-1, -1]])
    matrix = sp.csr_matrix(np.array([[0, 1], [1, 0]], dtype=np.float32))
    assert metrics.hit_rate_at_k(recommended, matrix, 2) == 0.5
    assert metrics.catalogue_coverage(recommended, 2, 2) == 0.5
    strings = np.array([["", "b"]])
    assert metrics.precision_at_k(strings, [{"b", ""}], 2) == 0.5
    assert metrics.catalogue_coverage(strings, 4, 2) == 0.25


def test_errors():
    with pytest.raises(ValueError, match="k"):
        metrics.precision_at_k(RECOMMENDED, RELEVANT, 0)
    with pytest.raises(ValueError, match="at least k=5"):
        metrics.ndcg_at_k(RECOMMENDED, RELEVANT, 5)
    with pytest.raises(ValueError, match="2-D"):
        metrics.recall_at_k([1, 2, 3], RELEVANT, 1)
    with pytest.raises(ValueError, match="one entry per user"):
        metrics.map_at_k(RECOMMENDED, RELEVANT[:2], 2)
    with pytest.raises(ValueError, match="one row per user"):
        metrics.map_at_k(RECOMMENDED, MATRIX[:2], 2)
    with pytest.raises(TypeError, match="relevant"):
        metrics.hit_rate_at_k(RECOMMENDED, "abc", 2)
    with pytest.raises(TypeError, match="k"):
        metrics.hit_rate_at_k(RECOMMENDED, RELEVANT, 2.0)
