"""The text and sequence examples run the full cycle on real data, small."""

import pytest


@pytest.mark.large
def test_text_classification_example(run_example, data_dir, tmp_path):
    results = run_example(
        "text_classification",
        [
            "--data-dir",
            str(data_dir),
            "--train-size",
            "600",
            "--epochs",
            "2",
            "--output-dir",
            str(tmp_path),
        ],
    )
    assert results["accuracy"] > 0.9  # the all-ham guess scores 0.866
    assert results["reloaded_identical"] == 1.0
    assert (tmp_path / "sms_spam.keras").is_file()


@pytest.mark.large
def test_sequence_classification_example(run_example, data_dir, tmp_path):
    results = run_example(
        "sequence_classification",
        [
            "--data-dir",
            str(data_dir),
            "--epochs",
            "10",
            "--output-dir",
            str(tmp_path),
        ],
    )
    assert results["accuracy"] > 0.5  # chance is 0.25 on BasicMotions
    assert results["reloaded_identical"] == 1.0
    assert (tmp_path / "basicmotions.keras").is_file()
