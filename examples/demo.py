"""The aiservice_kit demo: the library's main job, start to finish.

On scikit-learn's handwritten digits (they ship with scikit-learn, so this
runs offline) it builds a CNN, trains, evaluates, saves, reloads and
predicts; exports a versioned SavedModel; serves it with the REST server
(TensorFlow Serving's protocol) on loopback; creates an API key, calls the
server with it and prints the usage bill. Run it with `make demo`.
"""

# Import aiservice_kit first: it hides TensorFlow's start-up notices.
import aiservice_kit as ak  # isort: skip

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np

from aiservice_kit.datasets import load_digits_images
from aiservice_kit.export import export_saved_model
from aiservice_kit.serving import Client
from aiservice_kit.serving import KeyStore
from aiservice_kit.serving import PriceList
from aiservice_kit.serving import SQLiteMeter

#: The demo's price list: 0.40 (USD) per 1,000 predicted images.
PRICE_PER_1000 = 0.40


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_and_bill(
    model_dir: Path, database: Path, images: np.ndarray
) -> dict[str, float]:
    """Serves `model_dir`, calls it with a new API key, returns the bill."""
    key, _ = KeyStore(database).create("demo-customer", plan="free")
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aiservice_kit.cli",
            "serve",
            "--model",
            f"digits={model_dir}",
            "--db",
            str(database),
            "--port",
            str(port),
            "--auth",
            "on",
            "--access-log",
            "off",
            "--log-level",
            "warning",
        ]
    )
    try:
        with Client(f"http://127.0.0.1:{port}", api_key=key) as client:
            deadline = time.monotonic() + 60
            while not client.ready():
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the model server did not start")
                time.sleep(0.2)
            answers = [
                client.predict("digits", images[start : start + 4])
                for start in range(0, 12, 4)
            ]
    finally:
        server.terminate()
        server.wait(timeout=30)
    served = np.concatenate([np.argmax(a, axis=1) for a in answers])
    bill = PriceList({"digits": PRICE_PER_1000}).bill(
        SQLiteMeter(database).summarize()
    )
    print()
    print("usage bill (price 0.40 per 1,000 instances)")
    for line in bill.lines:
        print(
            f"  {line.key_name:<14} {line.model:<8} {line.requests:>3} calls "
            f"{line.instances:>4} instances  {line.amount:.6f} {bill.currency}"
        )
    print(f"  {'total':<14} {'':<8} {'':>25}  {bill.total:.6f} {bill.currency}")
    return {
        "served_instances": float(len(served)),
        "served_classes": served,
        "bill_total": float(bill.total),
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description="aiservice_kit demo")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}",
        help="where the model, the export and the ledger go "
        "(default: runs/demo-<time>)",
    )
    parser.add_argument("--verbose", type=int, default=2, help="as in fit")
    args = parser.parse_args(argv)
    workdir = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, float] = {}

    print(f"aiservice_kit {ak.__version__} demo, working in {workdir}")
    (x_train, y_train), (x_test, y_test) = load_digits_images(seed=0)
    print(
        f"data      scikit-learn digits: {len(x_train)} training and "
        f"{len(x_test)} test images of {x_train.shape[1:]} uint8 pixels"
    )

    print(f"\n1/4 Training a CNN for {args.epochs} epochs...", flush=True)
    keras.utils.set_random_seed(0)
    model = ak.build_cnn(x_train.shape[1:], num_classes=10)
    started = time.perf_counter()
    model.fit(
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=32,
        verbose=args.verbose,
    )
    results["training_seconds"] = time.perf_counter() - started
    _, results["accuracy"] = model.evaluate(x_test, y_test, verbose=0)

    print("2/4 Evaluating, saving and reloading...", flush=True)
    saved = workdir / "digits_cnn.keras"
    model.save(saved)
    reloaded = keras.models.load_model(saved)
    predicted = reloaded.predict(x_test, verbose=0).argmax(axis=1)
    results["reloaded_accuracy"] = float(np.mean(predicted == y_test))
    results["file_megabytes"] = saved.stat().st_size / 1e6

    print("3/4 Exporting a versioned SavedModel (checked)...", flush=True)
    export_dir = workdir / "exports" / "digits"
    version_dir = export_saved_model(reloaded, export_dir)
    print(
        "4/4 Serving it with an API key, calling it, billing the calls...",
        flush=True,
    )
    served = serve_and_bill(version_dir.parent, workdir / "service.db", x_test)
    results.update(
        {key: value for key, value in served.items() if key != "served_classes"}
    )
    local = reloaded.predict(x_test[:12], verbose=0).argmax(axis=1)
    results["served_matches_local"] = float(
        np.array_equal(served["served_classes"], local)
    )

    rows = [
        ("test accuracy", f"{results['accuracy']:.4f}"),
        ("accuracy after reload", f"{results['reloaded_accuracy']:.4f}"),
        ("training time", f"{results['training_seconds']:.1f} s"),
        ("saved .keras file", f"{results['file_megabytes']:.2f} MB"),
        (
            "served = local predictions",
            str(bool(results["served_matches_local"])),
        ),
        ("bill for 12 instances", f"{results['bill_total']:.6f} USD"),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print()
    print(f"artifacts in {workdir}:")
    print(f"  {saved}  the trained model (keras.models.load_model)")
    print(f"  {version_dir}  the SavedModel (aiservice-kit serve, TF Serving)")
    print(f"  {workdir / 'service.db'}  API keys and the usage ledger")
    return results


if __name__ == "__main__":
    main()
