"""The tuning and explaining examples run on real data, small."""

import pytest


@pytest.mark.large
def test_tuning_example(run_example, data_dir, tmp_path):
    argv = [
        "--data-dir",
        str(data_dir),
        "--train-size",
        "400",
        "--max-trials",
        "2",
        "--epochs",
        "1",
        "--directory",
        str(tmp_path),
    ]
    results = run_example("tuning", argv)
    assert results["cnn_trials"] == 2
    assert (
        results["cnn_best_val_accuracy"] >= results["cnn_default_val_accuracy"]
    )
    assert (
        results["recommender_best_ndcg"] >= results["recommender_default_ndcg"]
    )
    assert results["cnn_test_accuracy"] > 0.2  # chance is 0.1


@pytest.mark.large
def test_explain_example(run_example, data_dir, tmp_path):
    results = run_example(
        "explain",
        [
            "--data-dir",
            str(data_dir),
            "--train-size",
            "600",
            "--epochs",
            "1",
            "--output-dir",
            str(tmp_path),
        ],
    )
    assert results["figures"] == 3
    assert results["max_completeness_error"] < 0.02
    assert results["recommender_sum_gap"] < 1e-3
