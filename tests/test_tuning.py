"""tune(): declared spaces, resumable searches, and searches that match or
beat the builders' defaults on real data within a budget of trials."""

import json
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

import aiservice_kit
from aiservice_kit import CosineRecommender
from aiservice_kit import build_cnn
from aiservice_kit import build_lstm
from aiservice_kit import build_text_classifier
from aiservice_kit.datasets import load_labelled_text
from aiservice_kit.datasets import load_ts
from aiservice_kit.models.text import encode_labels
from aiservice_kit.recommenders import interactions
from aiservice_kit.tuning import SEARCH_SPACES
from aiservice_kit.tuning import Choice
from aiservice_kit.tuning import Float
from aiservice_kit.tuning import search_space
from aiservice_kit.tuning import tune

#: The search may lose this much to run-to-run noise against a separately
#: trained default model (the defaults are its first trial).
NOISE = 0.01


def test_every_builder_declares_its_space():
    assert set(SEARCH_SPACES) == {
        "build_cnn",
        "build_lstm",
        "build_text_classifier",
        "CosineRecommender",
    }
    cnn = search_space(build_cnn)
    assert {"width", "depth", "dropout", "learning_rate", "batch_size"} <= set(
        cnn
    )
    assert search_space(CosineRecommender)["n_neighbors"].default == 20


def test_a_user_narrows_fixes_removes_and_extends_the_space():
    space = search_space(
        "build_cnn",
        {
            "width": Choice((8, 16), default=8),  # narrowed
            "depth": 1,  # fixed
            "dropout": None,  # removed: the builder's default
            "kernel_size": Choice((3, 5)),  # a builder option added
        },
    )
    assert space["width"].values == (8, 16)
    assert space["depth"] == 1
    assert "dropout" not in space
    assert space["kernel_size"].default == 3
    custom = search_space("build_cnn", lambda hp: {"width": 8})
    assert callable(custom)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="No search space"):
        search_space("build_something")
    with pytest.raises(TypeError, match="search_space"):
        search_space("build_cnn", [1, 2])
    with pytest.raises(ValueError, match="algorithm"):
        tune(build_cnn, np.zeros((4, 8, 8)), [0, 1, 0, 1], algorithm="grd")
    with pytest.raises(ValueError, match="max_trials"):
        tune(build_cnn, np.zeros((4, 8, 8)), [0, 1, 0, 1], max_trials=0)
    with pytest.raises(ValueError, match="'grid' or 'random'"):
        tune(CosineRecommender, ([1], [2]), algorithm="bayesian")
    with pytest.raises(ValueError, match="default=3"):
        Choice((1, 2), default=3)


#: Run by the killed-search test in its own interpreter: the same search
#: as the test's resumed one, with a budget it never gets to finish.
_SEARCH_SCRIPT = """
import sys
import numpy as np
import aiservice_kit
from aiservice_kit import build_cnn
from aiservice_kit import build_lstm
from aiservice_kit.tuning import Choice, Float

data = np.load(sys.argv[1])
space = {
    "width": Choice((4, 8), default=8),
    "depth": 1,
    "dense_units": 16,
    "dropout": Float(0.0, 0.4, step=0.2, default=0.2),
}
aiservice_kit.tune(
    build_cnn, data["x"], data["y"], search_space=space, algorithm="random",
    epochs=1, directory=sys.argv[2], max_trials=50, verbose=0,
)
"""


def _completed_trials(project: Path) -> list[str]:
    done = []
    for path in sorted(project.glob("trial_*/trial.json")):
        try:
            trial = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being written
        if trial.get("status") == "COMPLETED":
            done.append(trial["trial_id"])
    return done


def test_a_killed_search_resumes_without_repeating_trials(
    mnist_split, tmp_path, capsys
):
    x_train, y_train, _, _ = mnist_split
    x, y = x_train[:400, ::2, ::2], y_train[:400]  # 14x14, fast
    np.savez(tmp_path / "data.npz", x=x, y=y)
    search = tmp_path / "search"
    process = subprocess.Popen(
        [sys.executable, "-c", _SEARCH_SCRIPT, str(tmp_path / "data.npz"),
         str(search)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    try:
        while len(_completed_trials(search / "build_cnn")) < 2:
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "no 2 trials in 300 s"
            time.sleep(0.1)
    finally:
        process.kill()  # SIGKILL: no clean-up, mid-trial or between trials
        process.wait()
        process.stderr.close()
    killed_with = _completed_trials(search / "build_cnn")
    assert len(killed_with) >= 2

    space = {
        "width": Choice((4, 8), default=8),
        "depth": 1,
        "dense_units": 16,
        "dropout": Float(0.0, 0.4, step=0.2, default=0.2),
    }
    budget = len(killed_with) + 2
    resumed = aiservice_kit.tune(
        build_cnn,
        x,
        y,
        search_space=space,
        algorithm="random",
        epochs=1,
        directory=search,
        max_trials=budget,
        verbose=1,
    )
    printed = capsys.readouterr().out
    # Only the missing trials ran; the killed run's are read back.
    assert resumed.new_trials == 2, printed
    assert printed.count("[tune] trial") == 2
    assert len(resumed.trials) == budget
    ids = [row["trial"] for row in resumed.trials]
    assert len(set(ids)) == budget and set(killed_with) <= set(ids)
    # The first trial is the defaults of every range.
    assert resumed.trials[0]["width"] == 8
    assert resumed.trials[0]["dropout"] == 0.2
    header = [line for line in printed.splitlines() if " score " in line]
    assert header and header[-1].split()[0] == "trial"  # the final table
    assert resumed.best_score == max(row["score"] for row in resumed.trials)
    assert isinstance(resumed.model, keras.Model)
    assert resumed.model.predict(x[:2], verbose=0).shape == (2, 10)


def test_a_trial_left_running_by_a_kill_runs_again(mnist_split, tmp_path):
    # A search killed after a trial's trial.json was written, before
    # oracle.json listed it as ongoing, leaves it RUNNING: it must run
    # again on resume instead of taking a slot of max_trials unrun.
    x_train, y_train, _, _ = mnist_split
    x, y = x_train[:200, ::2, ::2], y_train[:200]
    options = {
        "search_space": {"width": Choice((4, 8)), "depth": 1},
        "algorithm": "random",
        "epochs": 1,
        "directory": tmp_path,
        "max_trials": 2,
        "verbose": 0,
    }
    aiservice_kit.tune(build_cnn, x, y, **options)
    last = tmp_path / "build_cnn" / "trial_1" / "trial.json"
    record = json.loads(last.read_text())
    record["status"], record["score"] = "RUNNING", None
    last.write_text(json.dumps(record))

    resumed = aiservice_kit.tune(build_cnn, x, y, **options)

    assert resumed.new_trials == 1
    assert [row["trial"] for row in resumed.trials] == ["0", "1"]


def test_recommender_grid_search_scores_ndcg_and_resumes(data_dir, tmp_path):
    likes = interactions.load_movielens_ratings(
        data_dir / "movielens-latest-small", min_rating=4.0
    )
    space = {"n_neighbors": Choice((20, 5, 50, 200), default=20)}
    result = tune(
        CosineRecommender,
        likes,
        search_space=space,
        algorithm="grid",
        directory=tmp_path,
        verbose=0,
    )
    assert [row["n_neighbors"] for row in result.trials] == [20, 5, 50, 200]
    assert result.objective == "ndcg@10"
    default = result.trials[0]["score"]
    assert result.best_score >= default  # the same deterministic fit
    assert 0.0 < default < 1.0
    assert isinstance(result.model, CosineRecommender)
    assert result.model.n_neighbors == result.best_params["n_neighbors"]
    assert len(result.model.user_ids_) == len(np.unique(likes.user_ids))
    again = tune(
        CosineRecommender,
        likes,
        search_space=space,
        algorithm="grid",
        directory=tmp_path,
        verbose=0,
    )
    assert again.new_trials == 0 and again.trials == result.trials


def _default_score(build, x, y, validation, epochs, batch_size=32):
    keras.utils.set_random_seed(0)
    model = build()
    history = model.fit(
        x,
        y,
        validation_data=validation,
        epochs=epochs,
        batch_size=batch_size,
        callbacks=[
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy", patience=2, restore_best_weights=True
            )
        ],
        verbose=0,
    )
    return max(history.history["val_accuracy"])


@pytest.mark.large
def test_tune_on_mnist_matches_or_beats_the_defaults(mnist_split, tmp_path):
    x_train, y_train, _, _ = mnist_split
    x, y = x_train[:2000], y_train[:2000]
    validation = (x_train[2000:2600], y_train[2000:2600])
    result = tune(
        build_cnn,
        x,
        y,
        validation_data=validation,
        algorithm="bayesian",
        max_trials=4,
        epochs=3,
        directory=tmp_path,
        seed=0,
    )
    default = _default_score(
        lambda: build_cnn((28, 28), num_classes=10), x, y, validation, 3
    )
    print(
        f"MNIST val accuracy: best {result.best_score:.4f}, "
        f"default {default:.4f}"
    )
    # Exactly: the defaults are the search's first trial, on the same
    # validation data, and the best trial is at least as good.
    defaults = search_space(build_cnn)
    first = result.trials[0]
    assert all(
        first[name] == space.default
        for name, space in defaults.items()
        if name in first and hasattr(space, "default")
    ), first
    assert result.best_score >= first["score"]
    # And against the defaults trained on their own, within run-to-run noise.
    assert result.best_score >= default - NOISE
    assert len(result.trials) == 4


#: Published 1-NN DTW (full window) test accuracy on ItalyPowerDemand
#: (UCR archive); tests/models/test_sequence.py recomputes it.
ITALY_DTW = 0.950


@pytest.mark.large
def test_tune_lstm_starts_from_the_random_conv_defaults(data_dir, tmp_path):
    # build_lstm's default classifier is the random-convolution front end:
    # a search must start there (and standardize with the training
    # sequences, as the builder's users do), not at a recurrent stack.
    folder = data_dir / "italypowerdemand"
    x, labels = load_ts(folder / "ItalyPowerDemand_TRAIN.ts")
    x_test, test_labels = load_ts(folder / "ItalyPowerDemand_TEST.ts")
    names, y = np.unique(labels, return_inverse=True)
    y_test = np.searchsorted(names, test_labels)

    result = tune(
        build_lstm,
        x,
        y,
        validation_data=(x_test, y_test),
        max_trials=2,
        epochs=30,
        patience=5,
        directory=tmp_path,
        seed=0,
        verbose=0,
    )

    first = result.trials[0]
    assert first["frontend"] == "random_conv", first
    assert "width" not in first  # unused by its model, so not reported
    assert first["score"] >= ITALY_DTW, first
    assert result.best_score >= first["score"]


@pytest.mark.large
def test_tune_on_sms_spam_matches_or_beats_the_defaults(data_dir, tmp_path):
    texts, labels = load_labelled_text(
        data_dir / "sms-spam-collection" / "SMSSpamCollection"
    )
    texts = np.asarray(texts, dtype=object)
    probe = build_text_classifier(texts[:100], class_names=["ham", "spam"])
    y_all = encode_labels(probe, labels)
    x, y = texts[:2000], y_all[:2000]
    validation = (texts[2000:3000], y_all[2000:3000])
    result = tune(
        build_text_classifier,
        x,
        y,
        builder_kwargs={"class_names": ["ham", "spam"]},
        search_space={"encoder": "ngrams"},  # the fast encoder only
        validation_data=validation,
        algorithm="bayesian",
        max_trials=4,
        epochs=3,
        directory=tmp_path,
    )
    default = _default_score(
        lambda: build_text_classifier(x, class_names=["ham", "spam"]),
        x,
        y,
        validation,
        3,
    )
    print(
        f"SMS val accuracy: best {result.best_score:.4f}, default {default:.4f}"
    )
    assert result.best_score >= default - NOISE
    assert result.model.predict(
        np.asarray(["free prize"], object), verbose=0
    ).shape == (
        1,
        2,
    )


@pytest.mark.large
def test_tune_with_folds_and_hyperband(mnist_split, tmp_path):
    x_train, y_train, _, _ = mnist_split
    x, y = x_train[:300, ::2, ::2], y_train[:300]
    space = {"width": Choice((4, 8), default=8), "depth": 1, "dense_units": 16}
    folded = tune(
        build_cnn,
        x,
        y,
        search_space=space,
        algorithm="random",
        max_trials=2,
        folds=2,
        epochs=1,
        directory=tmp_path / "folds",
        verbose=0,
    )
    assert len(folded.trials) == 2 and 0.0 <= folded.best_score <= 1.0
    banded = tune(
        build_cnn,
        x,
        y,
        search_space=space,
        algorithm="hyperband",
        epochs=2,
        directory=tmp_path / "hyperband",
        verbose=0,
    )
    assert banded.trials and banded.best_params["width"] in (4, 8)


@pytest.mark.large
@pytest.mark.multi_device
def test_text_search_runs_under_two_replicas(tmp_path):
    # Keras cannot fit a string input under >1 replica (keras #21172): the
    # search trains the numeric part on vectorized batches instead.
    from aiservice_kit import get_strategy

    strategy = get_strategy("mirrored", log=False)
    texts = np.asarray(
        ["win a free prize now", "see you at lunch", "claim cash", "ok"] * 8,
        dtype=object,
    )
    labels = np.array([1, 0, 1, 0] * 8)
    result = tune(
        build_text_classifier,
        texts,
        labels,
        search_space={"encoder": "ngrams", "dense_units": 8},
        algorithm="random",
        max_trials=1,
        epochs=2,
        strategy=strategy,
        directory=tmp_path,
        verbose=0,
    )
    assert result.model.distribute_strategy is strategy
    probabilities = result.model.predict(texts[:2], verbose=0)
    assert probabilities.shape == (2, 2)


def _tiny_images():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (8, 8, 8, 1)).astype("uint8")
    return x, np.array([0, 1, 2, 0, 1, 2, 0, 1])


#: A one-trial search small enough for the 2-core CI machine.
_TINY = dict(
    search_space={"width": 4, "depth": 1, "dense_units": 8},
    max_trials=1,
    epochs=1,
    verbose=0,
)


def test_an_objective_the_models_do_not_report_is_refused_up_front(
    tmp_path,
):
    x, y = _tiny_images()

    with pytest.raises(ValueError) as caught:
        tune(build_cnn, x, y, objective="f1", directory=tmp_path, **_TINY)

    message = str(caught.value)
    assert message.startswith("`objective` must be 'auto' or a metric")
    for name in ("'val_accuracy'", "'val_loss'", "'accuracy'", "'loss'"):
        assert name in message
    assert "Received: objective='f1'" in message
    assert not list(tmp_path.glob("*/trial_*"))  # no trial ran
    with pytest.raises(TypeError, match="`objective` must be"):
        tune(build_cnn, x, y, objective=None, directory=tmp_path, **_TINY)


def test_a_resumed_search_keeps_its_objective(tmp_path):
    x, y = _tiny_images()
    first = tune(
        build_cnn, x, y, objective="val_loss", directory=tmp_path, **_TINY
    )
    assert first.objective == "val_loss"

    for objective in ("auto", "val_accuracy"):  # auto: val_accuracy here
        with pytest.raises(ValueError) as caught:
            tune(
                build_cnn,
                x,
                y,
                objective=objective,
                directory=tmp_path,
                **_TINY,
            )
        message = str(caught.value)
        assert "was scored by objective='val_loss'" in message
        assert "objective='val_accuracy'" in message
        assert "overwrite=True" in message

    again = tune(
        build_cnn, x, y, objective="val_loss", directory=tmp_path, **_TINY
    )
    assert again.new_trials == 0 and again.trials == first.trials
    fresh = tune(
        build_cnn,
        x,
        y,
        objective="val_accuracy",
        directory=tmp_path,
        overwrite=True,
        **_TINY,
    )
    assert fresh.objective == "val_accuracy" and fresh.new_trials == 1


def test_builder_kwargs_the_search_space_sets_are_refused(tmp_path):
    x, y = _tiny_images()

    with pytest.raises(ValueError) as caught:
        tune(
            build_cnn,
            x,
            y,
            builder_kwargs={"filters": (4,), "dense_units": 8},
            directory=tmp_path,
            max_trials=1,
        )
    message = str(caught.value)
    assert message.startswith(
        "`builder_kwargs` sets ['dense_units', 'filters']"
    )
    assert "search_space={'dense_units': None, 'depth': None" in message
    assert "multiple values" not in message
    # Taken out of the search, they may be fixed in builder_kwargs.
    result = tune(
        build_cnn,
        x,
        y,
        builder_kwargs={"filters": (4,)},
        directory=tmp_path,
        **{**_TINY, "search_space": {"width": None, "depth": None}},
    )
    assert result.model.get_layer("block1_conv1").filters == 4
    with pytest.raises(TypeError, match="`builder_kwargs` must be a dict"):
        tune(build_cnn, x, y, builder_kwargs=[("filters", (4,))])
    with pytest.raises(ValueError, match="your `search_space` callable"):
        tune(
            build_cnn,
            x,
            y,
            search_space=lambda hp: {"filters": (hp.Choice("w", [4, 8]),)},
            builder_kwargs={"filters": (4,)},
            directory=tmp_path,
        )


def test_loss_and_error_objectives_are_minimized():
    from aiservice_kit._keras_search import direction

    for objective in ("val_loss", "val_mae", "mse", "val_mean_squared_error"):
        assert direction(objective) == "min", objective
    for objective in ("val_accuracy", "auc", "val_precision"):
        assert direction(objective) == "max", objective


# The builder arguments every search passes on are checked by the builders
# (tests/models/ is another engineer's; they live here for now).


@pytest.mark.parametrize("dropout", [float("nan"), np.float32("nan"), -0.1])
def test_a_builder_refuses_a_dropout_outside_0_1(dropout):
    with pytest.raises(
        ValueError, match=r"`dropout` must be a number in \[0, 1\)"
    ):
        build_cnn((8, 8, 1), num_classes=3, dropout=dropout)


def test_check_fraction_refuses_nan_with_allow_one_too():
    from aiservice_kit._validation import check_fraction

    with pytest.raises(ValueError, match="must be a number in"):
        check_fraction("test_size", float("nan"), allow_one=True)
    assert check_fraction("test_size", 1, allow_one=True) == 1.0


def test_a_builder_refuses_an_unknown_optimizer_listing_the_known():
    with pytest.raises(ValueError) as caught:
        build_cnn((8, 8, 1), num_classes=3, optimizer="nosuch")
    message = str(caught.value)
    assert message.startswith("`optimizer` must be a Keras optimizer name")
    assert "'adam'" in message and "'sgd'" in message
    assert "Received: optimizer='nosuch'" in message
    model = build_cnn((8, 8, 1), num_classes=3, optimizer="SGD")
    assert type(model.optimizer).__name__ == "SGD"


def _smallest_inputs(name):
    """What a builder needs besides its options, for tiny models."""
    rng = np.random.default_rng(0)
    if name == "build_cnn":
        return {"input_shape": (12, 12, 1), "num_classes": 3}
    if name == "build_lstm":
        sequences = rng.normal(size=(20, 16, 2)).astype("float32")
        return {
            "input_shape": (16, 2),
            "num_classes": 3,
            "normalization_data": sequences,
        }
    texts = ["good value", "bad value", "great phone", "broken screen"]
    return {"train_texts": texts * 5, "num_classes": 2}


@pytest.mark.parametrize(
    "name", ["build_cnn", "build_lstm", "build_text_classifier"]
)
def test_each_space_defaults_trial_builds_the_builders_default_model(name):
    # The first trial runs the space's defaults and is documented as the
    # builder's defaults: a changed builder default must move its space.
    from aiservice_kit._search_spaces import builder_arguments

    defaults = {
        option: spec.default
        for option, spec in SEARCH_SPACES[name].items()
        if hasattr(spec, "default")
    }
    builder = getattr(aiservice_kit, name)
    inputs = _smallest_inputs(name)

    by_builder = builder(**inputs)
    by_search = builder(**inputs, **builder_arguments(name, defaults))

    assert by_search.get_config() == by_builder.get_config()
    assert [w.shape for w in by_search.weights] == [
        w.shape for w in by_builder.weights
    ]
    assert type(by_search.optimizer) is type(by_builder.optimizer)
    assert float(by_search.optimizer.learning_rate) == pytest.approx(
        float(by_builder.optimizer.learning_rate)
    )


def test_lstm_random_conv_trials_drop_the_recurrent_options():
    from aiservice_kit._search_spaces import builder_arguments
    from aiservice_kit._search_spaces import fit_to_task

    recurrent = {"width": 128, "depth": 2, "bidirectional": True}
    assert builder_arguments(
        "build_lstm", {"frontend": "random_conv", "dropout": 0.1, **recurrent}
    ) == {"frontend": "random_conv", "dropout": 0.1}
    assert builder_arguments(
        "build_lstm", {"frontend": "recurrent", **recurrent}
    ) == {"frontend": "recurrent", "units": (128, 128), "bidirectional": True}
    # A regressor has only the recurrent stack: a searched front end goes,
    # a fixed one stays for the builder to refuse with its own message.
    space = search_space("build_lstm")
    assert "frontend" not in fit_to_task("build_lstm", space, classifier=False)
    assert fit_to_task("build_lstm", space, classifier=True) == space
    fixed = search_space("build_lstm", {"frontend": "random_conv"})
    assert fit_to_task("build_lstm", fixed, False)["frontend"] == "random_conv"


def test_cnn_width_scales_the_default_blocks_and_depth_is_bounded():
    from aiservice_kit._search_spaces import builder_arguments

    assert builder_arguments("build_cnn", {"width": 16, "depth": 2}) == {
        "filters": (16, 64)
    }
    assert builder_arguments("build_cnn", {"width": 4}) == {
        "filters": (4, 16, 48)
    }
    with pytest.raises(ValueError, match=r"depth.*Received: depth=4"):
        builder_arguments("build_cnn", {"depth": 4})
