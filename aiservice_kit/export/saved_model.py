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
from aiservice_kit.export import _signature
from aiservice_kit.export import explain as explain_signature
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
) -> Path:
    """Exports `model` as `base_path/<version>/`, ready for TF Serving.

    The SavedModel's `serving_default` signature calls the model with
    `training=False` and takes raw inputs named like the model's inputs
    (`image` as uint8 pixels for `build_cnn` models, `text` as strings,
    `sequence` as float32; an unnamed single input becomes `inputs`). A
    classifier returns `probabilities` (float32, batch x classes) and
    `predicted_class` (int64); a regressor returns `predictions`. The
    version appears atomically (see `write_versioned_saved_model`) with the
    metadata `assets.extra/aiservice_kit.json` beside it. With `verify`, the
    artifact is loaded and compared with the Keras model before it is
    published: a mismatch publishes nothing.

    With `explain=True`, image and numeric-sequence models also get an
    `explain` signature (`EXPLAIN_SIGNATURE`, `export/explain.py`): the
    same inputs, the same outputs plus `attributions` shaped like the
    input: integrated gradients of the predicted class (a regressor's
    first output) from an all-zeros baseline in 64 steps, the defaults of
    `aiservice_kit.explain`, so an exported model explains without the
    Python object (the metadata's `explain` entry records the method).
    Text models, models with several inputs and tabular models get none.

    Args:
        model: keras.Model. A Functional or Sequential model whose output
            layer is named `probabilities` (classifier) or `predictions`
            (regressor), as the aiservice_kit builders make them.
        base_path: str or PathLike. The model's base directory.
        version: int or None. Version to publish; None takes the next one.
        verify: bool. Whether to check the artifact against Keras first.
        sample_inputs: array, dict of arrays, or None. Inputs for the
            check (a synthetic sample of 16 rows when None).
        class_names: list of str or None. Class names to record (text
            classifiers record their own when None).
        task: str or None. `"classification"` or `"regression"` when the
            output layer name does not tell.
        input_dtypes: dict or None. Signature dtype per input name, to
            override the defaults (for example `{"image": "float32"}`).
        explain: bool. Whether to add the `explain` signature (models it
            does not apply to are exported without it either way). Off by
            default: writing the gradient graph made exports about 2x
            slower (a few seconds more per model).

    Returns:
        The published version directory `base_path/<version>`.

    Raises:
        TypeError: if `model` is not a Keras model.
        ValueError: if the task cannot be told or an argument is invalid.
        FileExistsError: if the version already exists.
        ExportMismatchError: if the artifact disagrees with the model.

    Example:
    ```python
    from aiservice_kit import build_cnn, export_saved_model
    model = build_cnn((28, 28), num_classes=10)
    version_dir = export_saved_model(model, "models/mnist")  # models/mnist/1
    ```
    """
    plan = _signature.plan(model, task, input_dtypes)
    check_bool("verify", verify)
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
    }
    if explained:
        metadata["explain"] = explain_signature.metadata(plan)

    def write(tmp_dir: Path) -> None:
        _signature.write_saved_model(model, plan, tmp_dir, explain=explained)
        if verify:
            verify_planned(
                model, tmp_dir, sample_inputs, plan, format="saved_model"
            )

    return publish_version(base_path, version, write, metadata)
