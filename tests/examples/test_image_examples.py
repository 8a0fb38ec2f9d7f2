"""The demo, the image example and the quickstart notebook keep working."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "quickstart.ipynb"


def test_demo_runs_the_whole_cycle(run_example, tmp_path, capsys):
    results = run_example("demo", ["--epochs", "3", "--workdir", str(tmp_path)])

    printed = capsys.readouterr().out
    assert "test accuracy" in printed and "usage bill" in printed
    assert results["reloaded_accuracy"] == pytest.approx(results["accuracy"])
    assert results["accuracy"] > 0.5  # 3 epochs: far above chance (0.1)
    assert (tmp_path / "digits_cnn.keras").is_file()
    assert (tmp_path / "exports" / "digits" / "1" / "saved_model.pb").is_file()
    # The server answered with the model's own predictions, and the ledger
    # billed exactly the 12 instances sent, at 0.40 per 1,000.
    assert results["served_matches_local"] == 1.0
    assert results["served_instances"] == 12
    assert results["bill_total"] == pytest.approx(12 * 0.40 / 1000)


def test_image_classification_example_on_real_mnist(
    run_example, data_dir, tmp_path
):
    results = run_example(
        "image_classification",
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

    assert results["reload_identical"] == 1.0
    assert results["accuracy"] > 0.5
    assert (tmp_path / "history.png").stat().st_size > 1000
    assert (tmp_path / "mnist_cnn.keras").is_file()


def test_quickstart_notebook_executes(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )

    client.execute()

    outputs = [
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    ]
    assert any("test accuracy" in text for text in outputs)
    assert not any(
        output.get("output_type") == "error"
        for cell in notebook.cells
        for output in cell.get("outputs", [])
    )
