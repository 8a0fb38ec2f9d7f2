"""`create_app(model)`: a Keras model served straight from memory.

The app runs in a real uvicorn server on loopback, in a thread of this
process (the model lives here), and is called over HTTP.
"""

import gc
import runpy
import tempfile
import threading
import time

import keras
import numpy as np
import pytest
import uvicorn
from serving_helpers import REPO_ROOT
from serving_helpers import free_port

from aiservice_kit import build_cnn
from aiservice_kit.serving import Client
from aiservice_kit.serving import create_app


@pytest.fixture
def serve():
    """Starts an app in a thread; yields its URL maker, stops it after."""
    servers = []

    def start(app) -> str:
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=port, log_level="warning", ws="none"
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 120
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline
            time.sleep(0.05)
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=60)


def test_a_keras_model_is_served_straight_from_memory(serve, tmp_path):
    model = build_cnn((12, 12), num_classes=3, filters=(4,), dense_units=8)
    images = np.random.default_rng(0).integers(0, 256, (4, 12, 12), "uint8")
    expected = model.predict(images, verbose=0)

    app = create_app(model, db=tmp_path / "service.db", auth=False)
    with Client(serve(app)) as client:
        predictions = client.predict(
            "default", images, signature_name="predict"
        )
        status = client.status("default")
        frozen = gc.get_freeze_count()  # the loaded model, out of gc's way

    np.testing.assert_allclose(
        [row["probabilities"] for row in predictions], expected, rtol=1e-5
    )
    assert [row["predicted_class"] for row in predictions] == list(
        expected.argmax(axis=1)
    )
    assert [entry["state"] for entry in status] == ["AVAILABLE"]
    assert frozen > 100_000


def test_models_by_name_mix_memory_and_paths(serve, tmp_path):
    from aiservice_kit.export import export_saved_model

    keras.utils.set_random_seed(1)
    on_disk = build_cnn((12, 12), num_classes=2, filters=(4,), dense_units=8)
    export_saved_model(on_disk, tmp_path / "on_disk")
    in_memory = build_cnn((12, 12), num_classes=3, filters=(4,), dense_units=8)
    images = np.zeros((1, 12, 12), "uint8")

    app = create_app(
        {"on_disk": tmp_path / "on_disk", "in_memory": in_memory},
        db=tmp_path / "service.db",
        auth=False,
    )
    with Client(serve(app)) as client:
        assert len(client.predict("on_disk", images)[0]) == 2
        assert len(client.predict("in_memory", images)[0]) == 3


def test_anything_else_is_refused_naming_what_is_accepted(tmp_path):
    with pytest.raises(TypeError, match="base path, a ModelConfig or a keras"):
        create_app({"mnist": 42}, db=tmp_path / "service.db")
    with pytest.raises(TypeError, match=r"`models\['default'\]`"):
        create_app(np.zeros(3), db=tmp_path / "service.db")


def test_the_temporary_export_goes_away_with_the_app(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model = build_cnn((12, 12), num_classes=2, filters=(4,), dense_units=8)

    app = create_app(model, db=tmp_path / "service.db", auth=False)
    assert len(list(tmp_path.glob("aiservice_kit-serve-*/default/1"))) == 1
    del app
    gc.collect()
    assert list(tmp_path.glob("aiservice_kit-serve-*")) == []

    # A refused argument after an export leaves nothing behind either.
    with pytest.raises(TypeError, match=r"`models\['bad'\]`"):
        create_app({"good": model, "bad": 42}, db=tmp_path / "service.db")
    assert list(tmp_path.glob("aiservice_kit-serve-*")) == []


def test_the_serving_example_runs_small(tmp_path, capsys):
    example = REPO_ROOT / "examples" / "serve_from_notebook.py"
    main = runpy.run_path(str(example), run_name="example")["main"]

    results = main(["--epochs", "3", "--workdir", str(tmp_path)])

    assert results["served_agree"] == 1.0
    assert results["versions"] == {"stable": 1, "canary": 2}
    assert min(results["accuracy"].values()) > 0.5
    assert "label canary -> version 2" in capsys.readouterr().out
