"""examples/recommendation.py runs the full cycle on real MovieLens data."""

import runpy
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "recommendation.py"


def test_recommendation_example_runs_small(data_dir, tmp_path, capsys):
    main = runpy.run_path(str(EXAMPLE), run_name="example")["main"]
    results = main(
        [
            "--data-dir",
            str(data_dir),
            "--workdir",
            str(tmp_path),
            "--max-users",
            "120",
        ]
    )
    printed = capsys.readouterr().out
    assert "NDCG@10 item-based" in printed and "top 5 for user" in printed
    assert results["reload_identical"] == 1.0
    assert results["export_identical"] == 1.0
    assert results["ndcg"] > 0.0
    assert (tmp_path / "movielens_cosine.npz").is_file()
    assert (tmp_path / "serving" / "1" / "saved_model.pb").is_file()


RATINGS = EXAMPLE.parent / "rating_prediction.py"


def test_rating_prediction_example_runs_small(data_dir, tmp_path, capsys):
    main = runpy.run_path(str(RATINGS), run_name="example")["main"]
    results = main(
        [
            "--data-dir",
            str(data_dir / "movielens-latest-small"),
            "--workdir",
            str(tmp_path),
            "--max-users",
            "60",
            "--folds",
            "2",
            "--epochs",
            "5",
        ]
    )
    printed = capsys.readouterr().out
    assert "MF 2-fold CV" in printed and "top 5 for user" in printed
    assert results["reload_identical"] == 1.0
    assert results["export_identical"] == 1.0
    assert 0.5 < results["rmse"] < 1.5
    assert (tmp_path / "movielens_mf.npz").is_file()
    assert (tmp_path / "serving" / "1" / "saved_model.pb").is_file()
