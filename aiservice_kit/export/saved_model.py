"""SavedModel: the versioned `base_path/<N>/` layout TF Serving loads."""

from __future__ import annotations

import os
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras

from aiservice_kit._layout import publish_version
from aiservice_kit._validation import check_bool
from aiservice_kit.export import _runtimes
from aiservice_kit.export import _signature
from aiservice_kit.export import explain as explain_signature
from aiservice_kit.export.verify import DEFAULT_VERIFY_SAMPLES
from aiservice_kit.export.verify import _synthetic_inputs
from aiservice_kit.export.verify import as_samples
from aiservice_kit.export.verify import verify_planned


def export_saved_model(
    model: keras.Model,
    base_path: str | os.PathLike,
    version: int | None = None,
    *,
    verify: bool = True,
    sample_inputs: Any = None,
    class_names: Sequence[str] | None = None,
    task: str | None = None,
    input_dtypes: Mapping[str, str] | None = None,
    explain: bool = False,
    runtimes: str | Sequence[str] | None = None,
) -> Path:
    """Exports any Keras model as `base_path/<version>/`, ready for TF Serving.

    The task is inferred from the model unless `task` states it: a float
    [batch, n] output made by a softmax or sigmoid is a classifier's, one
    value per example a regressor's, anything else (several outputs
    included) a `tensor` model's; output layers named `probabilities` or
    `predictions` (the aiservice_kit builders') tell it by their name.

    Signatures (names in `aiservice_kit._layout`), all calling the model
    with `training=False` on raw inputs named like the model's inputs
    (`image` as uint8 pixels for `build_cnn` models, `text` as strings; an
    unnamed single input becomes `inputs`):

    - `serving_default`: one tensor, as Keras' `model.export` writes it:
      a classifier's `probabilities`, a regressor's `predictions`; a
      tensor model each output under its own name.
    - `predict`: a classifier returns `probabilities` (float32, batch x
      classes) and `predicted_class` (int64); a regressor `predictions`;
      a tensor model each output under its own name.
    - `classification` (classifiers): TF Serving's Classify. Serialized
      `tf.Example`s in (`inputs`, one feature per model input, named like
      it), `classes` (string labels) and `scores` (float32), both
      [batch, num_classes]; a one-column sigmoid classifier has two
      classes, scores `[1 - p, p]`.
    - `regression` (regressors of one value per example): TF Serving's
      Regress. `tf.Example`s in, `outputs` (float32, [batch]) out.

    The version appears atomically (see `write_versioned_saved_model`) with
    the metadata `assets.extra/aiservice_kit.json` beside it (task,
    class names, signatures, the model's own outputs). With `verify`, the
    artifact is loaded and compared with the Keras model before it is
    published, the classify/regress signature included: a mismatch
    publishes nothing.

    With `explain=True`, image and numeric-sequence models also get an
    `explain` signature (`EXPLAIN_SIGNATURE`, `export/explain.py`): the
    same inputs, the same outputs plus `attributions` shaped like the
    input: integrated gradients of the predicted class (a regressor's
    first output) from an all-zeros baseline in 64 steps, the defaults of
    `aiservice_kit.explain`, so an exported model explains without the
    Python object (the metadata's `explain` entry records the method).
    Text models, models with several inputs and tabular models get none.

    With `runtimes`, the `serving_default` and `predict` signatures are
    also converted from the SavedModel for LiteRT (`.tflite`, builtin ops,
    run with XNNPACK) and/or ONNX Runtime (`.onnx`), written as
    `<version>/runtimes/<signature>.tflite|.onnx` (`_layout.RUNTIMES_DIR`)
    and recorded in the metadata (`runtimes`), so `aiservice-kit serve
    --runtime auto` can run them instead of TensorFlow once it has proven
    them equal. Each artifact is proven equal to its signature before the
    version is published (one row, then every verification row; floats
    within `verify.FLOAT_TOLERANCE`, integers exactly), and the rows are
    kept beside them (`runtimes/proof_inputs.npz`) for the server's own
    proof. `runtimes="auto"` writes what the model fits and records why it
    skipped the rest (`runtimes_skipped`: raw-string inputs, lookup
    tables, recurrent layers that are not unrolled, a failed conversion); a
    runtime named explicitly that the model cannot run raises instead.
    The classify, regress and explain signatures always run on
    TensorFlow.

    Args:
        model: keras.Model. Any Functional or Sequential model with
            symbolic inputs, one or several inputs and outputs.
        base_path: str or PathLike. The model's base directory.
        version: int or None. Version to publish; None takes the next one.
        verify: bool. Whether to check the artifact against Keras first.
        sample_inputs: array, dict of arrays, or None. Inputs for the
            check (a synthetic sample of 16 rows when None).
        class_names: list of str or None. Class names to record and to
            return as `classes` (text classifiers record their own when
            None; "0", "1", ... when there are none).
        task: str or None. `"classification"`, `"regression"` or
            `"tensor"` to override the inferred task.
        input_dtypes: dict or None. Signature dtype per input name, to
            override the defaults (for example `{"image": "float32"}`).
        explain: bool. Whether to add the `explain` signature (models it
            does not apply to are exported without it either way). Off by
            default: writing the gradient graph made exports about 2x
            slower (a few seconds more per model).
        runtimes: None, `"auto"`, `"litert"`, `"onnx"` or a list of
            them. Other runtimes to convert the serving signatures for
            (None: none). ONNX needs the `onnx` extra.

    Returns:
        The published version directory `base_path/<version>`.

    Raises:
        TypeError: if `model` is not a Keras model.
        ValueError: if an argument is invalid (a classifier's `task` for a
            model with several outputs, `class_names` of the wrong length).
        FileExistsError: if the version already exists.
        ExportMismatchError: if the artifact disagrees with the model,
            or a runtime named in `runtimes` disagrees with the SavedModel.
        ValueError: also if a runtime named in `runtimes` cannot express
            the model (raw strings, lookup tables), naming the layer.
        ExportError: if a runtime named in `runtimes` fails to convert.

    Example:
    ```python
    import keras
    from aiservice_kit import export_saved_model
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    version_dir = export_saved_model(model, "models/mnist")  # models/mnist/1
    ```
    """
    plan = _signature.plan(model, task, input_dtypes)
    check_bool("verify", verify)
    if sample_inputs is not None:
        as_samples(plan, sample_inputs)  # refused now, not after writing
    wanted, explicit = _runtimes.check_runtimes(runtimes)
    explained = check_bool("explain", explain) and explain_signature.supports(
        plan
    )
    names = _signature.class_names_of(model, plan, class_names)
    inputs, outputs = _signature.io_metadata(plan)
    metadata = {
        "task": plan.task,
        "class_names": names,
        "inputs": inputs,
        "outputs": outputs,
        "signatures": _signature.signatures_metadata(plan),
        "model_outputs": _signature.model_outputs_metadata(plan),
    }
    if explained:
        metadata["explain"] = explain_signature.metadata(plan)

    def write(tmp_dir: Path) -> None:
        _signature.write_saved_model(
            model, plan, tmp_dir, names, explain=explained
        )
        if verify:
            verify_planned(
                model, tmp_dir, sample_inputs, plan, format="saved_model"
            )
        if wanted:
            samples = (
                _synthetic_inputs(model, plan, DEFAULT_VERIFY_SAMPLES)
                if sample_inputs is None
                else as_samples(plan, sample_inputs)
            )
            metadata.update(
                _runtimes.write_runtimes(
                    model, plan, tmp_dir, wanted, explicit, samples
                )
            )

    return publish_version(base_path, version, write, metadata)
