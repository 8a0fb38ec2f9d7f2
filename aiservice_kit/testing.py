"""Contract checks for packages that extend aiservice_kit.

A new model builder or recommender gets training, export and serving by
meeting the contract of `models/_contract.py` and the estimator API, not by
editing this library. These checks say whether it does, the way
scikit-learn's `check_estimator` and implicit's `RecommenderBaseTestMixin`
do for theirs: each raises `AssertionError` naming the broken rule.

```python
import functools
from aiservice_kit.testing import check_builder, check_recommender

def test_my_builder():
    check_builder(functools.partial(build_my_net, (32,), num_classes=3))

def test_my_recommender():
    check_recommender(MyRecommender)
```

Rules checked by `check_builder` are listed in `BUILDER_RULES`, those of
`check_recommender` in `RECOMMENDER_RULES`.
"""

import contextlib
import inspect
import os
import tempfile
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

#: Rule id -> what `check_builder` asserts.
BUILDER_RULES = {
    "no-strategy-argument": "the builder takes no `strategy` argument",
    "returns-functional-model": "it returns a Functional keras.Model",
    "compiled-by-default": "the model comes back compiled",
    "compile-false": "`compile=False`, when accepted, gives an uncompiled "
    "model",
    "named-output": "one output, its layer named `probabilities` "
    "(classifier) or `predictions` (regressor)",
    "float32-head": "the output stays float32 under a mixed_bfloat16 policy",
    "predicts": "`predict` runs on the sample inputs",
    "softmax": "a classifier's outputs are probabilities (rows sum to 1)",
    "fit-step": "one `fit` step runs and gives a finite loss",
    "keras-round-trip": "`.keras` save, `keras.saving.load_model` with no "
    "custom_objects, equal predictions",
    "class-names": "stored class names (`get_class_names`) are one str per "
    "output column",
    "split-text": "a raw-string model splits (`split_text_model`) into a "
    "vectorizer and a numeric model with the same outputs",
    "export": "`export_saved_model` publishes a version that "
    "`verify_export` passes (with `export=True`)",
}

#: Rule id -> what `check_recommender` asserts.
RECOMMENDER_RULES = {
    "params": "`__init__` only stores its arguments; `get_params`, "
    "`set_params` (returns self, rejects unknown names) and cloning work",
    "not-fitted": "queries before `fit` raise NotFittedError",
    "fit-returns-self": "`fit` returns the estimator",
    "recommend-shapes": "`recommend` gives (n_users, top_k) ids and scores, "
    "1-D for one user, best first",
    "top-k-filled": "`top_k` items while unseen items remain",
    "liked-excluded": "items in a user's history are never recommended",
    "similar-items": "`similar_items` gives (n, top_k), the item left out",
    "save-load": "`save` writes arrays loadable with allow_pickle=False, "
    "and `load` gives identical results",
}


def _fail(rule: str, message: str) -> AssertionError:
    return AssertionError(f"[{rule}] {message}")


@contextlib.contextmanager
def _rule(rule: str) -> Iterator[None]:
    """Turns an error inside a check into an AssertionError naming it."""
    try:
        yield
    except AssertionError as error:
        if str(error).startswith("["):
            raise
        raise _fail(rule, str(error)) from error
    except Exception as error:
        raise _fail(rule, f"{type(error).__name__}: {error}") from error


# --------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------

_WORDS = ("free", "prize", "call", "now", "see", "you", "at", "lunch", "ok")


def _accepts(build_fn: Callable[..., Any], name: str) -> bool:
    try:
        parameters = inspect.signature(build_fn).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters


def _sample_inputs(model: Any, rng: np.random.Generator, rows: int) -> Any:
    """Random inputs that fit the model's input specs."""
    import keras

    samples = {}
    for tensor in model.inputs:
        shape = [rows] + [4 if dim is None else dim for dim in tensor.shape[1:]]
        dtype = keras.backend.standardize_dtype(tensor.dtype)
        if dtype == "string":
            count = int(np.prod(shape))
            values = [
                " ".join(rng.choice(_WORDS, size=4)) for _ in range(count)
            ]
            samples[tensor.name] = np.array(values, dtype=object).reshape(shape)
        elif "int" in dtype:
            samples[tensor.name] = rng.integers(0, 8, size=shape).astype(dtype)
        else:
            samples[tensor.name] = rng.random(shape).astype(dtype)
    if len(samples) == 1:
        return next(iter(samples.values()))
    return samples


def _output_layer_names(model: Any) -> list[str]:
    entries = model.get_config()["output_layers"]
    if entries and isinstance(entries[0], str):  # one output, unnested
        entries = [entries]
    return [entry[0] for entry in entries]


def _loss_name(model: Any) -> str:
    loss = model.loss
    if isinstance(loss, str):
        return loss
    return getattr(loss, "name", None) or type(loss).__name__


def _sample_targets(
    model: Any, task: str, rng: np.random.Generator, rows: int
) -> np.ndarray:
    width = int(model.outputs[0].shape[-1])
    if task == "regression":
        return rng.random((rows, width)).astype("float32")
    labels = np.arange(rows) % width
    name = _loss_name(model).lower()
    if "categorical" in name and "sparse" not in name:
        return np.eye(width, dtype="float32")[labels]
    return labels.astype("int64")


def _predict(model: Any, x: Any) -> np.ndarray:
    return np.asarray(model.predict(x, verbose=0, batch_size=len(_rows(x))))


def _rows(x: Any) -> Any:
    return next(iter(x.values())) if isinstance(x, dict) else x


def _build(build_fn: Callable[..., Any], **kwargs: Any) -> Any:
    import keras

    model = build_fn(**kwargs)
    if not isinstance(model, keras.Model):
        raise _fail(
            "returns-functional-model",
            f"the builder returned a {type(model).__name__}, not a keras.Model",
        )
    if "output_layers" not in model.get_config():
        raise _fail(
            "returns-functional-model",
            f"{type(model).__name__} {model.name!r} is not a Functional "
            "model (build it as keras.Model(inputs, outputs)); export and "
            "split_text_model walk its graph",
        )
    return model


def check_builder(
    build_fn: Callable[..., Any],
    x: Any = None,
    y: Any = None,
    *,
    export: bool = False,
    seed: int = 0,
) -> None:
    """Checks that a model builder meets the library's model contract.

    Builds the model (keep its arguments tiny: this fits, saves and
    reloads it), then checks each rule of `BUILDER_RULES` in turn. A
    model that passes trains with `train` on any strategy, exports with
    `export_saved_model` and serves unchanged.

    Args:
        build_fn: callable. Called with no arguments (bind them with
            `functools.partial` or a lambda), it returns the model. If it
            accepts `compile`, `compile=False` must give an uncompiled
            model.
        x: array, list of str, dict of arrays, or None. A few sample
            inputs; None draws 8 random rows from the model's input specs
            (strings are random words, unknown lengths are 4).
        y: array or None. Targets for `x`; None draws them (class indices,
            one-hot for a categorical loss, or floats for a regressor).
        export: bool. Also export a SavedModel and verify it (slower).
        seed: int. Seed of the random samples.

    Raises:
        AssertionError: naming the first broken rule, as `[rule-id] what
            was found`, chained to the underlying error if any.
        TypeError: if `build_fn` is a model or not callable.

    Example:
    ```python
    import functools
    from aiservice_kit import build_cnn
    from aiservice_kit.testing import check_builder
    check_builder(functools.partial(build_cnn, (8, 8, 1), num_classes=3,
                                    filters=(4,)))
    ```
    """
    import keras

    from aiservice_kit.models._contract import PREDICTIONS
    from aiservice_kit.models._contract import PROBABILITIES
    from aiservice_kit.models._contract import get_class_names
    from aiservice_kit.models._contract import split_text_model

    if isinstance(build_fn, keras.Model) or not callable(build_fn):
        raise TypeError(
            "`build_fn` must be a callable that returns a keras.Model (the "
            "builder, not a model it built: the checks build it several "
            f"times). Received: build_fn={build_fn!r}"
        )
    if _accepts(build_fn, "strategy"):
        raise _fail(
            "no-strategy-argument",
            "the builder takes a `strategy` argument; builders never know "
            "about strategies (users build inside `strategy.scope()`)",
        )
    rng = np.random.default_rng(seed)
    with _rule("returns-functional-model"):
        model = _build(build_fn)
    if not model.compiled or getattr(model, "optimizer", None) is None:
        raise _fail(
            "compiled-by-default",
            f"{model.name!r} came back uncompiled; compile it with the loss "
            "and metrics of its task (and accept `compile=False`)",
        )
    if _accepts(build_fn, "compile"):
        with _rule("compile-false"):
            raw = _build(build_fn, compile=False)
            if raw.compiled:
                raise _fail(
                    "compile-false",
                    f"build_fn(compile=False) returned a compiled model "
                    f"{raw.name!r}",
                )

    outputs = _output_layer_names(model)
    if len(outputs) != 1 or outputs[0] not in (PROBABILITIES, PREDICTIONS):
        raise _fail(
            "named-output",
            f"the output layers of {model.name!r} are {outputs}; expected one "
            f"named {PROBABILITIES!r} (classifier) or {PREDICTIONS!r} "
            "(regressor)",
        )
    task = "classification" if outputs[0] == PROBABILITIES else "regression"

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        with _rule("float32-head"):
            mixed = build_fn()
    finally:
        keras.config.set_dtype_policy(previous)
    dtype = keras.backend.standardize_dtype(mixed.outputs[0].dtype)
    if dtype != "float32":
        raise _fail(
            "float32-head",
            f"under a mixed_bfloat16 policy the output is {dtype}; give the "
            "output layer dtype='float32' (a softmax in half precision is "
            "not safe)",
        )
    del mixed

    if x is None:
        x = _sample_inputs(model, rng, 8)
    if y is None:
        y = _sample_targets(model, task, rng, len(_rows(x)))
    with _rule("predicts"):
        before = _predict(model, x)
    if task == "classification":
        sums = before.sum(axis=-1)
        if before.min() < 0 or not np.allclose(sums, 1.0, atol=1e-4):
            raise _fail(
                "softmax",
                f"the {PROBABILITIES!r} rows must be probabilities; got "
                f"row sums {sums[:4]} and minimum {before.min():.3g}",
            )

    with _rule("fit-step"):
        history = model.fit(x, y, epochs=1, batch_size=len(_rows(x)), verbose=0)
    loss = history.history.get("loss", [float("nan")])[-1]
    if not np.isfinite(loss):
        raise _fail("fit-step", f"one fit step gave loss {loss}")

    expected = _predict(model, x)
    with tempfile.TemporaryDirectory(prefix="aiservice_kit-check-") as tmp:
        with _rule("keras-round-trip"):
            path = Path(tmp) / "model.keras"
            model.save(path)
            loaded = keras.saving.load_model(path)
            np.testing.assert_allclose(
                _predict(loaded, x),
                expected,
                rtol=1e-5,
                atol=1e-6,
                err_msg="predictions changed after the .keras round trip",
            )

        with _rule("class-names"):
            names = get_class_names(model)
            width = int(model.outputs[0].shape[-1])
            if names is not None and (
                len(names) != width
                or not all(isinstance(n, str) for n in names)
                or len(set(names)) != len(names)
            ):
                raise _fail(
                    "class-names",
                    f"get_class_names gave {names!r} for {width} output "
                    "columns; expected one distinct str per column",
                )

        string_inputs = [
            t
            for t in model.inputs
            if keras.backend.standardize_dtype(t.dtype) == "string"
        ]
        if string_inputs:
            with _rule("split-text"):
                vectorizer, numeric = split_text_model(model)
                np.testing.assert_allclose(
                    np.asarray(numeric(vectorizer(np.asarray(x)))),
                    np.asarray(model(np.asarray(x), training=False)),
                    rtol=1e-5,
                    atol=1e-6,
                    err_msg="the numeric half disagrees with the model",
                )

        if export:
            from aiservice_kit.export import export_saved_model
            from aiservice_kit.export import verify_export

            with _rule("export"):
                version_dir = export_saved_model(
                    model, Path(tmp) / "export", sample_inputs=x
                )
                report = verify_export(
                    model, version_dir, x, format="saved_model", strict=False
                )
                if not report.passed:
                    raise _fail("export", str(report))


# --------------------------------------------------------------------------
# Recommenders
# --------------------------------------------------------------------------


def _interactions(seed: int) -> Any:
    """12 users x 10 items; each user has 2-4 items, all items seen."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for user in range(12):
        items = rng.choice(10, size=2 + user % 3, replace=False)
        rows.extend([user] * len(items))
        cols.extend(items)
    rows.extend(range(10))
    cols.extend(range(10))
    data = np.ones(len(rows), dtype=np.float32)
    return sp.csr_matrix((data, (rows, cols)), shape=(12, 10))


def _new(estimator_or_factory: Any) -> Any:
    if isinstance(estimator_or_factory, type) or (
        callable(estimator_or_factory)
        and not hasattr(estimator_or_factory, "get_params")
    ):
        return estimator_or_factory()
    estimator = estimator_or_factory
    return type(estimator)(**estimator.get_params())


def check_recommender(
    estimator_or_factory: Any,
    X: Any = None,
    *,
    top_k: int = 3,
    seed: int = 0,
) -> None:
    """Checks that a recommender meets the estimator contract.

    The contract of `CosineRecommender` (scikit-learn's parameter API,
    implicit's verbs): each rule of `RECOMMENDER_RULES` in turn.

    Args:
        estimator_or_factory: an unfitted estimator (cloned from its
            `get_params()`), or a class or function that returns one.
        X: a users x items scipy sparse matrix, or None for a small random
            one (12 users, 10 items, 2-4 items each).
        top_k: int. Items asked per query; keep it below the number of
            items any user has not seen.
        seed: int. Seed of the random interactions.

    Raises:
        AssertionError: naming the first broken rule, as `[rule-id] what
            was found`.

    Example:
    ```python
    from aiservice_kit import CosineRecommender
    from aiservice_kit.testing import check_recommender
    check_recommender(CosineRecommender(n_neighbors=5))
    ```
    """
    from aiservice_kit.exceptions import NotFittedError

    if X is None:
        X = _interactions(seed)
    X = X.tocsr()
    with _rule("params"):
        estimator = _new(estimator_or_factory)
        params = estimator.get_params()
        for name, value in params.items():
            if getattr(estimator, name) is not value:
                raise _fail(
                    "params",
                    f"__init__ must store {name!r} unchanged as an "
                    "attribute of the same name",
                )
        fitted_early = [k for k in vars(estimator) if k.endswith("_")]
        if fitted_early:
            raise _fail(
                "params",
                f"__init__ set fitted attributes {fitted_early}; set them in "
                "fit",
            )
        if estimator.set_params(**params) is not estimator:
            raise _fail("params", "set_params must return self")
        try:
            estimator.set_params(not_a_parameter=1)
        except ValueError:
            pass
        else:
            raise _fail(
                "params", "set_params accepted an unknown parameter name"
            )
        clone = type(estimator)(**params)
        if clone.get_params() != params:
            raise _fail(
                "params",
                f"a clone has params {clone.get_params()}, not {params}",
            )
    for query in ("recommend", "similar_items"):
        try:
            getattr(estimator, query)(0, top_k=top_k)
        except NotFittedError:
            continue
        except Exception as error:
            raise _fail(
                "not-fitted",
                f"{query} before fit raised {type(error).__name__}, not "
                "NotFittedError",
            ) from error
        raise _fail("not-fitted", f"{query} before fit raised nothing")

    with _rule("fit-returns-self"):
        returned = estimator.fit(X)
    if returned is not estimator:
        raise _fail("fit-returns-self", f"fit returned {returned!r}")

    users = np.arange(X.shape[0])
    with _rule("recommend-shapes"):
        ids, scores = estimator.recommend(users, top_k=top_k)
        ids, scores = np.asarray(ids), np.asarray(scores)
        if ids.shape != (len(users), top_k) or scores.shape != ids.shape:
            raise _fail(
                "recommend-shapes",
                f"recommend gave ids {ids.shape} and scores {scores.shape}; "
                f"expected ({len(users)}, {top_k})",
            )
        if np.any(np.diff(scores, axis=1) > 0):
            raise _fail("recommend-shapes", "scores are not best first")
        one_ids, _ = estimator.recommend(users[0], top_k=top_k)
        if np.asarray(one_ids).shape != (top_k,):
            raise _fail(
                "recommend-shapes",
                f"one user gave shape {np.asarray(one_ids).shape}, expected "
                f"({top_k},)",
            )
    for user in users:
        liked = set(X.indices[X.indptr[user] : X.indptr[user + 1]].tolist())
        got = [int(i) for i in ids[user]]
        if X.shape[1] - len(liked) >= top_k and (
            len(set(got)) != top_k or min(got) < 0
        ):
            raise _fail(
                "top-k-filled",
                f"user {user} got {got}: {top_k} distinct items were due "
                f"({X.shape[1] - len(liked)} unseen remain)",
            )
        if liked & set(got):
            raise _fail(
                "liked-excluded",
                f"user {user} was recommended items {sorted(liked & set(got))}"
                " already in their history",
            )
    with _rule("similar-items"):
        items = np.arange(X.shape[1])
        similar, _ = estimator.similar_items(items, top_k=top_k)
        similar = np.asarray(similar)
        if similar.shape != (len(items), top_k):
            raise _fail(
                "similar-items",
                f"similar_items gave {similar.shape}, expected "
                f"({len(items)}, {top_k})",
            )
        if np.any(similar == items[:, None]):
            raise _fail(
                "similar-items", "an item was returned as similar to itself"
            )

    with tempfile.TemporaryDirectory(prefix="aiservice_kit-check-") as tmp:
        with _rule("save-load"):
            path = os.path.join(tmp, "model.npz")
            estimator.save(path)
            with np.load(path, allow_pickle=False) as arrays:
                for name in arrays.files:
                    arrays[name]  # raises if an array needs pickle
            loaded = type(estimator).load(path)
            again, again_scores = loaded.recommend(users, top_k=top_k)
            np.testing.assert_array_equal(np.asarray(again), ids)
            np.testing.assert_allclose(np.asarray(again_scores), scores)
