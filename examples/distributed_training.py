"""Trains `build_cnn` on MNIST with `aiservice_kit.train`, on any hardware.

The same command runs on a laptop, on several GPUs, on several machines
(set TF_CONFIG on each) and on a Cloud TPU VM; `get_strategy()` picks.
With `--run-dir`, a run that is killed resumes at the epoch it reached
when the same command is run again.

    python examples/distributed_training.py --run-dir runs/mnist

On two machines (or two processes), each with its own task index:

    TF_CONFIG='{"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]},
                "task": {"type": "worker", "index": 0}}' \
        python examples/distributed_training.py --run-dir /shared/runs/mnist

Prints one JSON line with the test accuracy and what ran where.
"""

import argparse
import json
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="dataset cache folder (default: $AISERVICE_KIT_DATA, else "
        "~/.aiservice_kit/datasets); missing datasets are downloaded once",
    )
    parser.add_argument("--run-dir", type=Path, default=None)
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--samples", type=int, default=8000)
    parser.add_argument("--test-samples", type=int, default=2000)
    parser.add_argument("--side", type=int, default=28, help="crop side")
    parser.add_argument("--filters", default="32,64")
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--verbose", type=int, default=2)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import aiservice_kit
    from aiservice_kit.datasets import fetch_mnist

    # First, before any tensor exists: TensorFlow requires it for TPUs and
    # for multi-worker training.
    strategy = aiservice_kit.get_strategy(args.strategy)
    info = aiservice_kit.describe_strategy(strategy)
    print(f"Strategy: {info}", flush=True)
    print("Loading MNIST (downloaded once, then read from the cache)...")

    images, labels = fetch_mnist("t10k", data_home=args.data_dir)
    start = (28 - args.side) // 2
    images = images[:, start : start + args.side, start : start + args.side]
    x_train, y_train = images[: args.samples], labels[: args.samples]
    x_test, y_test = images[-args.test_samples :], labels[-args.test_samples :]
    filters = tuple(int(f) for f in args.filters.split(","))

    def build():
        return aiservice_kit.build_cnn(
            x_train.shape[1:], num_classes=10, filters=filters
        )

    print(f"Training on {len(x_train)} images for {args.epochs} epochs...")
    model, history = aiservice_kit.train(
        build,
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        strategy=strategy,
        run_dir=args.run_dir,
        patience=args.patience,
        verbose=args.verbose,
    )
    # model.evaluate fails under multi-worker strategies (keras #20585):
    # aiservice_kit.evaluate works everywhere.
    print(f"Evaluating on {len(x_test)} held-out images...", flush=True)
    metrics = aiservice_kit.evaluate(model, x_test, y_test)
    if args.run_dir is None:
        print("no --run-dir: the model was not saved")
    else:
        print(
            f"artifacts in {args.run_dir} (workers other than the chief: "
            "worker-<index>/ inside it): model.keras (final), best.keras, "
            "log.csv, tensorboard/, backup/ (to resume)"
        )
    result = {
        "strategy": str(info),
        "worker_index": info.worker_index,
        "is_chief": info.is_chief,
        "epochs_run": len(history.history.get("loss", [])),
        "test_loss": metrics["loss"],
        "test_accuracy": metrics["accuracy"],
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
    sys.exit(0)
