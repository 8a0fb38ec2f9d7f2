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
from aiservice_kit import build_text_classifier
from aiservice_kit.datasets import load_labelled_text
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
