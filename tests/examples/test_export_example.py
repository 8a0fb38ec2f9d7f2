"""The export example trains on real MNIST and verifies every format."""

import pytest


@pytest.mark.large
def test_export_everything_example(run_example, data_dir, tmp_path, capsys):
    results = run_example(
        "export_everything",
        [
            "--data-dir",
            str(data_dir),
            "--train-size",
            "600",
            "--epochs",
            "2",  # one epoch on 600 images leaves near-ties int8 can flip
            "--output-dir",
            str(tmp_path),
        ],
    )

    assert "tflite int8" in capsys.readouterr().out
    assert results["keras"]["accuracy"] > 0.3  # chance is 0.1
    for name in ("saved_model", "tflite", "onnx"):
        assert results[name]["max_abs_diff"] <= 1e-5, name
        assert results[name]["class_agreement"] == 1.0, name
        assert results[name]["accuracy"] == results["keras"]["accuracy"]
    for name in ("tflite dynamic", "tflite float16", "tflite int8"):
        assert results[name]["class_agreement"] >= 0.95, name
    int8, float32 = results["tflite int8"], results["tflite"]
    assert int8["size_bytes"] < 0.35 * float32["size_bytes"]
    assert (tmp_path / "saved_model" / "1" / "saved_model.pb").is_file()
