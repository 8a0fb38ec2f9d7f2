"""Serve a model straight from memory, then roll out a canary by label.

What a notebook does after training: `create_app(model)` serves the Keras
model without an export step, on loopback, in a background thread. Then
two exported versions are served with TF Serving's version labels:
`stable` and `canary` are names in the config, and clients keep their URL
while the labels move. Uses scikit-learn's digits (ships with it).

    python examples/serve_from_notebook.py
"""

# Import aiservice_kit first: it hides TensorFlow's start-up notices.
import aiservice_kit as ak  # isort: skip

import argparse
import socket
import threading
import time
from pathlib import Path

import numpy as np
import uvicorn

from aiservice_kit.datasets import load_digits_images
from aiservice_kit.export import export_saved_model
from aiservice_kit.serving import Client
from aiservice_kit.serving import ModelConfig
from aiservice_kit.serving import create_app


class BackgroundServer:
    """A uvicorn server on a free loopback port, in a daemon thread."""

    def __init__(self, app) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._server = uvicorn.Server(
            uvicorn.Config(app, port=port, log_level="warning", ws="none")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> "BackgroundServer":
        self._thread.start()
        deadline = time.monotonic() + 120
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=60)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("runs") / f"serve-{time.strftime('%Y%m%d-%H%M%S')}",
        help="where the exports and the ledger go (default: runs/serve-<time>)",
    )
    parser.add_argument("--verbose", type=int, default=2, help="as in fit")
    args = parser.parse_args(argv)
    workdir = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)

    (x_train, y_train), (x_test, y_test) = load_digits_images()
    model = ak.build_cnn(x_train.shape[1:], num_classes=10)
    print(f"Training on {len(x_train)} digits for {args.epochs} epochs...")
    model.fit(
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=32,
        verbose=args.verbose,
    )
    local = model.predict(x_test, verbose=0).argmax(axis=1)

    # 1. Straight from memory: served as "default", as TF Serving names a
    #    lone model. auth=False is for loopback only.
    print("Serving the model from memory on loopback...", flush=True)
    app = create_app(model, db=workdir / "service.db", auth=False)
    with BackgroundServer(app) as server, Client(server.url) as client:
        # serving_default answers the probabilities of each image.
        served = np.argmax(client.predict("default", x_test), axis=1)
    same = float(np.mean(np.asarray(served) == local))
    print(f"served from memory: {same:.0%} agree with model.predict")

    # 2. A canary: version 1 is the model above, version 2 trains more.
    print("Exporting version 1, training 2 more epochs, exporting version 2")
    export_saved_model(model, workdir / "digits", version=1)
    model.fit(x_train, y_train, epochs=2, batch_size=32, verbose=args.verbose)
    export_saved_model(model, workdir / "digits", version=2)
    labels = {"stable": 1, "canary": 2}
    app = create_app(
        {"digits": ModelConfig(workdir / "digits", version_labels=labels)},
        db=workdir / "service.db",
        auth=False,
    )
    accuracy, versions = {}, {}
    with BackgroundServer(app) as server, Client(server.url) as client:
        for label in labels:
            rows = client.predict("digits", x_test, label=label)
            predicted = np.argmax(rows, axis=1)
            accuracy[label] = float(np.mean(predicted == y_test))
            versions[label] = client.last_version
            print(
                f"label {label:<6} -> version {client.last_version}: "
                f"accuracy {accuracy[label]:.3f}"
            )
    print(f"artifacts in {workdir}:")
    print(f"  {workdir / 'digits'}  SavedModel versions 1 and 2")
    print(f"  {workdir / 'service.db'}  the usage ledger")
    return {"served_agree": same, "accuracy": accuracy, "versions": versions}


if __name__ == "__main__":
    main()
