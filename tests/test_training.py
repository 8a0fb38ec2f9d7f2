"""The documented training path: `train`, `default_callbacks`, plots.

Multi-replica tests run MirroredStrategy over the two logical CPU devices
that conftest.py makes; the multi-worker and fault-tolerance tests start
real worker processes running examples/distributed_training.py.
"""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

import aiservice_kit
from aiservice_kit import build_cnn
from aiservice_kit import default_callbacks
from aiservice_kit import get_strategy
from aiservice_kit import plot_history
from aiservice_kit import train
from aiservice_kit.training import BACKUP_DIR
from aiservice_kit.training import BEST_MODEL_FILE
from aiservice_kit.training import FINAL_MODEL_FILE
from aiservice_kit.training import LOG_FILE

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = REPO_ROOT / "examples" / "distributed_training.py"

#: Relative tolerance between the loss after 2 epochs on 2 replicas and on
#: one device: same data, initial weights and batch order (shuffle off, as
#: tf.data's seeded shuffle orders differ once Keras distributes the
#: dataset), so only the summation order of the all-reduce differs.
LOSS_RTOL = 1e-4


def _small_images(data_dir, count=512, side=12):
    """Real MNIST digits, cropped to `side` pixels around the centre."""
    from aiservice_kit.datasets import load_mnist

    images, labels = load_mnist(data_dir / "mnist", kind="t10k")
    start = (28 - side) // 2
    crop = images[:count, start : start + side, start : start + side]
    return np.ascontiguousarray(crop), labels[:count].astype("int64")


def _final_loss(build_fn, x, y, strategy, **kwargs):
    keras.utils.set_random_seed(7)
    kwargs.setdefault("mixed_precision", False)  # the replicas, not bf16
    model, history = train(
        build_fn,
        x,
        y,
        epochs=2,
        batch_size=32,
        strategy=strategy,
        shuffle=False,
        verbose=0,
        **kwargs,
    )
    assert len(history.history["loss"]) == 2
    return model, history.history["loss"][-1]


def _assert_same_loss_on_two_replicas(build_fn, x, y):
    mirrored = get_strategy("mirrored", log=False)
    assert mirrored.num_replicas_in_sync == 2
    single = get_strategy("cpu", log=False)
    _, single_loss = _final_loss(build_fn, x, y, single)
    model, mirrored_loss = _final_loss(build_fn, x, y, mirrored)
    assert np.isfinite(mirrored_loss)
    np.testing.assert_allclose(mirrored_loss, single_loss, rtol=LOSS_RTOL)
    return model


@pytest.mark.multi_device
def test_build_cnn_trains_on_two_replicas_like_on_one(data_dir):
    x, y = _small_images(data_dir)
    model = _assert_same_loss_on_two_replicas(
        lambda: build_cnn(
            x.shape[1:],
            num_classes=10,
            filters=(8,),
            dense_units=16,
            dropout=0.0,
        ),
        x,
        y,
    )
    assert model.predict(x[:4], verbose=0).shape == (4, 10)


def _gunpoint(data_dir, count=64, step=5):
    """Real GunPoint series (150 steps, downsampled), labels 0/1."""
    from aiservice_kit.datasets import load_ts

    x, labels = load_ts(data_dir / "gunpoint" / "GunPoint_TRAIN.ts")
    classes = sorted(set(labels.tolist()))
    y = np.array([classes.index(label) for label in labels], dtype="int64")
    return np.ascontiguousarray(x[:count, ::step]), y[:count]


def _sms(data_dir, count=256):
    """Real SMS messages (raw strings) and ham=0 / spam=1 labels."""
    path = data_dir / "sms-spam-collection" / "SMSSpamCollection"
    rows = [
        line.split("\t", 1)
        for line in path.read_text(encoding="utf-8").splitlines()[:count]
    ]
    texts = [text for _, text in rows]
    return texts, np.array([label == "spam" for label, _ in rows], "int64")


@pytest.mark.multi_device
def test_build_lstm_trains_on_two_replicas_like_on_one(data_dir):
    from aiservice_kit.models.sequence import build_lstm

    x, y = _gunpoint(data_dir)
    _assert_same_loss_on_two_replicas(
        lambda: build_lstm(x.shape[1:], num_classes=2, units=8, dropout=0.0),
        x,
        y,
    )


@pytest.mark.multi_device
def test_transformer_encoder_trains_on_two_replicas_like_on_one(data_dir):
    from aiservice_kit.models.layers import TransformerEncoder

    x, y = _gunpoint(data_dir)

    def build():
        inputs = keras.Input(x.shape[1:], name="sequence")
        h = keras.layers.Dense(8)(inputs)
        h = TransformerEncoder(intermediate_dim=16, num_heads=2)(h)
        h = keras.layers.GlobalAveragePooling1D()(h)
        outputs = keras.layers.Dense(2, activation="softmax")(h)
        model = keras.Model(inputs, outputs)
        model.compile(
            "adam", "sparse_categorical_crossentropy", metrics=["accuracy"]
        )
        return model

    _assert_same_loss_on_two_replicas(build, x, y)


@pytest.mark.multi_device
def test_raw_string_text_classifier_trains_on_two_replicas(data_dir):
    from aiservice_kit.models.text import build_text_classifier

    texts, y = _sms(data_dir)
    model = _assert_same_loss_on_two_replicas(
        lambda: build_text_classifier(
            texts, num_classes=2, dense_units=8, dropout=0.0
        ),
        texts,
        y,
    )
    # The returned model still takes raw strings, and evaluates on them.
    assert model.inputs[0].dtype == "string"
    probabilities = model.predict(np.array(texts[:3], dtype=object), verbose=0)
    assert probabilities.shape == (3, 2)
    metrics = aiservice_kit.evaluate(model, texts, y)
    assert 0.0 <= metrics["accuracy"] <= 1.0


@pytest.mark.multi_device
def test_best_checkpoint_of_a_string_model_on_two_replicas_takes_strings(
    data_dir, tmp_path
):
    # The integer half is what trains there; the checkpoint a user loads
    # and serves must still be the raw-string model.
    from aiservice_kit.models.text import build_text_classifier

    texts, y = _sms(data_dir)
    model, history = train(
        lambda: build_text_classifier(
            texts, num_classes=2, dense_units=8, dropout=0.0
        ),
        texts,
        y,
        epochs=2,
        batch_size=32,
        strategy=get_strategy("mirrored", log=False),
        run_dir=tmp_path,
        verbose=0,
    )
    best = keras.saving.load_model(tmp_path / BEST_MODEL_FILE)

    assert best.inputs[0].dtype == "string"
    losses = history.history["loss"]
    assert losses[1] < losses[0]  # so the best checkpoint is the last epoch
    sample = np.array(texts[:4], dtype=object)
    np.testing.assert_allclose(  # float32, reloaded: last-bit differences
        best.predict(sample, verbose=0),
        model.predict(sample, verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )


def test_model_built_outside_the_scope_gets_a_message_naming_the_fix():
    x = np.zeros((8, 8, 8), "uint8")
    y = np.zeros(8, "int64")
    model = build_cnn((8, 8), num_classes=2, filters=(4,))
    with pytest.raises(ValueError, match=r"strategy\.scope\(\)"):
        train(
            model,
            x,
            y,
            epochs=1,
            batch_size=4,
            strategy=get_strategy("mirrored", log=False),
        )


def test_train_checks_its_arguments():
    x = np.zeros((8, 8, 8), "uint8")
    with pytest.raises(TypeError, match="build_fn"):
        train("cnn", x, np.zeros(8), epochs=1, batch_size=4)
    with pytest.raises(ValueError, match="epochs"):
        train(lambda: None, x, np.zeros(8), epochs=0, batch_size=4)
    with pytest.raises(ValueError, match="not compiled"):
        train(
            lambda: build_cnn((8, 8), num_classes=2, compile=False),
            x,
            np.zeros(8),
            epochs=1,
            batch_size=4,
        )
    with pytest.raises(ValueError, match="steps_per_execution"):
        train(
            lambda: build_cnn((8, 8), num_classes=2, filters=(4,)),
            x,
            np.zeros(8),
            epochs=1,
            batch_size=4,
            strategy=get_strategy("mirrored", log=False),
            steps_per_execution=8,
        )


_X = np.random.default_rng(0).integers(0, 255, (8, 8, 8, 1)).astype("uint8")
_Y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
_TRAIN = {"epochs": 1, "batch_size": 4, "verbose": 0}


def _tiny_cnn():
    return build_cnn((8, 8, 1), num_classes=3, filters=(4,), dense_units=8)


@pytest.mark.parametrize(
    ("x", "y", "error", "match"),
    [
        # Was: InvalidArgumentError from SparseSoftmaxCrossEntropyWithLogits.
        (_X, _Y + 3, ValueError, r"class indices in \[0, 3\)"),
        # Was: "Input 0 ... is incompatible with the layer".
        (np.repeat(_X, 3, -1), _Y, ValueError, "holds 3 features"),
        # Was: "Argument `output` must have rank (ndim) `target.ndim - 1`".
        (_X, np.eye(3)[_Y], ValueError, "`y` looks one-hot"),
        (_X, _Y + 0.5, ValueError, "whole class indices"),
        # Was: ValueError: None values not supported.
        (_X, None, ValueError, "`y` must be given"),
        # Was: TypeError: object of type 'NoneType' has no len()
        (None, _Y, TypeError, "Received: x=None"),
        (_X, _Y[:5], ValueError, "same number of samples"),
    ],
)
def test_train_checks_data_as_the_models_fit_does(x, y, error, match):
    with pytest.raises(error, match=match):
        train(_tiny_cnn, x, y, **_TRAIN)


def test_train_checks_validation_data_and_evaluate_checks_its_data():
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\)"):
        train(_tiny_cnn, _X, _Y, validation_data=(_X, _Y + 3), **_TRAIN)
    model, _ = train(_tiny_cnn, _X, list(_Y), **_TRAIN)
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\)"):
        aiservice_kit.evaluate(model, _X, _Y + 3)
    assert set(aiservice_kit.evaluate(model, _X, _Y.astype(float))) >= {"loss"}


def test_a_validation_split_that_leaves_no_training_data_says_so():
    # Was: "`batch_size` must not exceed the number of training samples
    # (0) under multi-worker training", on one worker.
    with pytest.raises(ValueError) as error:
        train(_tiny_cnn, _X, _Y, validation_split=0.99, **_TRAIN)
    message = str(error.value)
    assert "`validation_split` leaves no training samples" in message
    assert "holds out 8 of the 8 samples" in message
    assert "multi-worker" not in message


def test_train_takes_and_refuses_texts_as_the_text_models_fit_does():
    texts = ["free prize", "see you", "win cash", "lunch?", "claim prize", "ok"]

    def build():
        return aiservice_kit.build_text_classifier(
            texts, class_names=["ham", "spam"], dense_units=4
        )

    # Was: UnimplementedError: Cast string to int64 (fit accepted these).
    model, history = train(build, texts, ["spam", "ham"] * 3, **_TRAIN)
    assert np.isfinite(history.history["loss"][0])
    # Was: Failed to convert a NumPy array to a Tensor (NoneType).
    with pytest.raises(TypeError, match="item 5 is a NoneType"):
        train(build, texts[:-1] + [None], [1, 0] * 3, **_TRAIN)


def test_train_with_run_dir_writes_the_run_and_validation_split(
    data_dir, tmp_path
):
    x, y = _small_images(data_dir, count=256)
    model, history = train(
        lambda: build_cnn(x.shape[1:], num_classes=10, filters=(4,)),
        x,
        y,
        epochs=2,
        batch_size=32,
        run_dir=tmp_path,
        validation_split=0.25,
        verbose=0,
    )
    assert set(history.history) >= {"loss", "val_loss", "val_accuracy"}
    assert _csv_epochs(tmp_path / LOG_FILE) == ["0", "1"]
    for name in (BEST_MODEL_FILE, FINAL_MODEL_FILE, "tensorboard"):
        assert (tmp_path / name).exists()
    reloaded = keras.saving.load_model(tmp_path / FINAL_MODEL_FILE)
    np.testing.assert_allclose(
        reloaded.predict(x[:8], verbose=0), model.predict(x[:8], verbose=0)
    )
    # Finished runs stay finished: the same call trains no further epoch.
    _, again = train(
        lambda: build_cnn(x.shape[1:], num_classes=10, filters=(4,)),
        x,
        y,
        epochs=2,
        batch_size=32,
        run_dir=tmp_path,
        validation_split=0.25,
        verbose=0,
    )
    assert again.history == {}
    assert _csv_epochs(tmp_path / LOG_FILE) == ["0", "1"]


def test_rerun_of_a_finished_resume_says_how_to_train_more(
    data_dir, tmp_path, caplog
):
    x, y = _small_images(data_dir, count=64)

    def run(epochs):
        return train(
            lambda: build_cnn(x.shape[1:], num_classes=10, filters=(4,)),
            x,
            y,
            epochs=epochs,
            batch_size=32,
            run_dir=tmp_path,
            verbose=0,
        )[1]

    run(1)
    assert aiservice_kit.training.epochs_done(tmp_path) == 1
    caplog.clear()
    with caplog.at_level("WARNING", logger="aiservice_kit"):
        assert run(1).history == {}
    assert "already trained 1 epochs" in caplog.text
    assert "Pass epochs > 1 (--epochs M > 1" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="aiservice_kit"):
        assert len(run(2).history["loss"]) == 1  # resumes: epoch 2 only
    assert "already trained" not in caplog.text
    assert aiservice_kit.training.epochs_done(tmp_path / "none") == 0


def test_default_callbacks_are_keras_own_in_a_safe_order(tmp_path):
    callbacks = default_callbacks(tmp_path / "run", monitor="val_accuracy")
    kinds = [type(callback) for callback in callbacks]
    assert kinds == [
        keras.callbacks.BackupAndRestore,
        keras.callbacks.ModelCheckpoint,
        keras.callbacks.EarlyStopping,
        keras.callbacks.TensorBoard,
        keras.callbacks.CSVLogger,
    ]
    assert callbacks[1].monitor == "val_accuracy"
    assert callbacks[2].monitor_op is not None or callbacks[2].mode == "max"
    only_log = default_callbacks(
        tmp_path / "b",
        patience=None,
        save_best=False,
        backup=False,
        tensorboard=False,
    )
    assert [type(c) for c in only_log] == [keras.callbacks.CSVLogger]
    with pytest.raises(TypeError, match="run_dir"):
        default_callbacks(3)
    with pytest.raises(ValueError, match="patience"):
        default_callbacks(tmp_path, patience=-1)


def test_plot_history_writes_one_panel_per_metric(tmp_path):
    history = {
        "loss": [1.0, 0.5],
        "accuracy": [0.5, 0.8],
        "val_loss": [1.1, 0.7],
        "val_accuracy": [0.4, 0.7],
    }
    path = plot_history(history, tmp_path / "plots" / "curves.png", title="t")
    assert path == tmp_path / "plots" / "curves.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib import image

    height, width = image.imread(path).shape[:2]
    assert width > height  # two panels side by side
    with pytest.raises(TypeError, match="history"):
        plot_history([1, 2], tmp_path / "x.png")
    with pytest.raises(ValueError, match="no metrics"):
        plot_history({}, tmp_path / "x.png")


def test_plot_history_takes_a_fit_history(tmp_path):
    model = build_cnn((8, 8), num_classes=2, filters=(4,))
    history = model.fit(
        np.zeros((8, 8, 8), "uint8"), np.zeros(8), epochs=2, verbose=0
    )
    assert plot_history(history, tmp_path / "fit.png").stat().st_size > 0


def test_example_runs_small_in_process(data_dir):
    import importlib.util

    spec = importlib.util.spec_from_file_location("example", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    result = example.main(
        [*TINY, "--data-dir", str(data_dir), "--samples", "512"]
        + ["--test-samples", "500", "--epochs", "2", "--batch-size", "64"]
    )
    assert result["epochs_run"] == 2 and result["is_chief"]
    assert result["test_accuracy"] > 0.2  # 10 classes: chance is 0.1


# --------------------------------------------------------------------------
# Real processes: multi-worker training and resuming after SIGKILL.
# --------------------------------------------------------------------------

#: Tiny runs of the example: 12x12 crops of real digits, 4 filters.
TINY = ["--side", "12", "--filters", "4", "--verbose", "2"]
WORKER_TIMEOUT = 120


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _env(data_dir, tf_config=None):
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["AISERVICE_KIT_DATA"] = str(data_dir)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), env.get("PYTHONPATH", "")]
    )
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def _start(args, env, log_path):
    log = open(log_path, "w")  # noqa: SIM115 - closed by the caller
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE), *args],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO_ROOT,
    )
    return process, log


def _result(log_path):
    lines = Path(log_path).read_text().splitlines()
    return json.loads(next(line for line in reversed(lines) if line[:1] == "{"))


@pytest.mark.large
def test_two_real_workers_train_identical_weights(data_dir, tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    run_dir = tmp_path / "run"
    args = [*TINY, "--samples", "256", "--test-samples", "200"]
    args += ["--epochs", "2", "--batch-size", "32", "--run-dir", str(run_dir)]
    started = []
    try:
        for index in range(2):
            config = {
                "cluster": cluster,
                "task": {"type": "worker", "index": index},
            }
            started.append(
                _start(args, _env(data_dir, config), tmp_path / f"w{index}.log")
            )
        codes = [process.wait(timeout=WORKER_TIMEOUT) for process, _ in started]
    finally:
        for process, log in started:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
    logs = [(tmp_path / f"w{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], logs
    results = [_result(tmp_path / f"w{i}.log") for i in range(2)]
    assert [r["worker_index"] for r in results] == [0, 1]
    assert [r["is_chief"] for r in results] == [True, False]
    assert all(r["epochs_run"] == 2 for r in results)
    assert "(multi_worker)" in results[0]["strategy"]
    assert "2 replica(s)" in results[0]["strategy"]
    # Synchronous training: both workers end with the very same weights.
    chief = keras.saving.load_model(run_dir / FINAL_MODEL_FILE)
    other = keras.saving.load_model(run_dir / "worker-1" / FINAL_MODEL_FILE)
    for mine, theirs in zip(
        chief.get_weights(), other.get_weights(), strict=True
    ):
        np.testing.assert_array_equal(mine, theirs)
    # The chief's saved model loads and evaluates on the held-out digits.
    x, y = _small_images(data_dir, count=10_000)
    loss, accuracy = chief.evaluate(x[-200:], y[-200:], verbose=0)
    assert np.isfinite(loss)
    np.testing.assert_allclose(accuracy, results[0]["test_accuracy"], atol=1e-6)
    with open(run_dir / LOG_FILE) as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["0", "1"]


def _csv_epochs(path):
    if not path.exists():
        return []
    with open(path) as handle:
        return [row["epoch"] for row in csv.DictReader(handle)]


@pytest.mark.large
def test_killed_run_resumes_at_the_epoch_it_reached(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    args = [*TINY, "--samples", "2000", "--test-samples", "200"]
    args += ["--epochs", "5", "--batch-size", "32", "--run-dir", str(run_dir)]
    env = _env(data_dir)
    process, log = _start(args, env, tmp_path / "first.log")
    try:
        deadline = time.monotonic() + WORKER_TIMEOUT
        while len(_csv_epochs(run_dir / LOG_FILE)) < 2:
            assert process.poll() is None, (tmp_path / "first.log").read_text()
            assert time.monotonic() < deadline, "epoch 2 never ended"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    assert process.returncode == -signal.SIGKILL
    assert _csv_epochs(run_dir / LOG_FILE) == ["0", "1"]
    assert (run_dir / BACKUP_DIR).is_dir()

    # The same command again: resumes at epoch 3 (index 2), ends at 5.
    second = subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=WORKER_TIMEOUT,
        cwd=REPO_ROOT,
    )
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Epoch 3/5" in second.stdout and "Epoch 1/5" not in second.stdout
    assert json.loads(second.stdout.splitlines()[-1])["epochs_run"] == 3
    assert _csv_epochs(run_dir / LOG_FILE) == ["0", "1", "2", "3", "4"]
    assert (run_dir / BEST_MODEL_FILE).exists()
    assert (run_dir / FINAL_MODEL_FILE).exists()
