"""What `create_app` is given, turned into one ModelConfig per model.

A served model can be named by a base path, a `ModelConfig`, or a
`keras.Model` held in memory (a notebook serving what it just trained).
This is the one serving module that knows Keras: an in-memory model is
exported (and verified) with `export_saved_model` into a temporary
directory that lives as long as the app, with the `explain` signature
where the model supports one (images, numeric sequences), so
`:explain` works for it too.
"""

import os
import shutil
import sys
import tempfile
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiservice_kit.serving.batching import BatchingConfig
from aiservice_kit.serving.config import DEFAULT_MODEL_NAME
from aiservice_kit.serving.registry import ModelConfig


def _is_keras_model(value: Any) -> bool:
    # Checked without importing Keras: a Keras model implies it is loaded.
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(value, keras.Model)


class InMemoryExports:
    """SavedModels of the Keras models handed to `create_app` directly.

    Each is exported (and verified) with `export_saved_model` into one
    temporary directory, removed when the app is garbage-collected or the
    interpreter exits. Image and numeric-sequence models get the
    `explain` signature (`explain=True`), so `:explain` answers for them;
    it adds about 1.5-2.5 s to the export of a small CNN (measured on 2
    shared cores: 3.0 -> 4.9 s at 12x12, 2.0 -> 3.3-4.4 s at 28x28).
    """

    def __init__(self) -> None:
        self.root: Path | None = None

    def export(self, name: str, model: Any) -> Path:
        """Exports `model` as `<root>/<name>/1/`; returns the base path."""
        from aiservice_kit.export import export_saved_model

        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="aiservice_kit-serve-"))
        export_saved_model(model, self.root / name, explain=True)
        return self.root / name

    def remove_with(self, owner: Any) -> None:
        """Removes the exports when `owner` (the app) is collected."""
        if self.root is not None:
            weakref.finalize(owner, shutil.rmtree, self.root, True)

    def remove(self) -> None:
        """Removes the exports now."""
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)


def model_configs(
    models: Any,
    configured: Mapping[str, ModelConfig],
    batching: BatchingConfig,
    exports: InMemoryExports,
) -> dict[str, ModelConfig]:
    """Merges `create_app`'s `models` into the config file's models.

    Args:
        models: a dict of name -> base path, ModelConfig or keras.Model;
            a single one of those (served as `"default"`); or None.
        configured: dict of name -> ModelConfig from the config file.
        batching: BatchingConfig. For models given as paths or models.
        exports: InMemoryExports. Where in-memory models are exported.

    Returns:
        dict of name -> ModelConfig, every base path an existing
        directory.

    Raises:
        ValueError: for a bad name, no models, or a missing base path.
        TypeError: for a value that is none of the accepted kinds.

    Example:
    ```python
    exports = InMemoryExports()
    model_configs({"mnist": "exports/mnist"}, {}, BatchingConfig(), exports)
    ```
    """
    if models is not None and not isinstance(models, Mapping):
        models = {DEFAULT_MODEL_NAME: models}
    merged = dict(configured)
    for name, value in (models or {}).items():
        if not isinstance(name, str) or not name or "/" in name or ":" in name:
            raise ValueError(
                "Model names must be non-empty strings without '/' or ':'. "
                f"Received: {name!r}"
            )
        if isinstance(value, ModelConfig):
            merged[name] = value
        elif isinstance(value, (str, os.PathLike)):
            merged[name] = ModelConfig(Path(value), batching)
        elif _is_keras_model(value):
            merged[name] = ModelConfig(exports.export(name, value), batching)
        else:
            raise TypeError(
                f"`models[{name!r}]` must be a base path, a ModelConfig or a "
                f"keras.Model. Received: {value!r}"
            )
    if not merged:
        raise ValueError(
            "`models` must name at least one model to serve, e.g. "
            "{'mnist': 'exports/mnist'}. Received: models={}"
        )
    for name, model in merged.items():
        if not Path(model.base_path).is_dir():
            raise ValueError(
                f"The base path of model {name!r} must be an existing "
                "directory holding version subdirectories (1/, 2/, ...). "
                f"Received: {str(model.base_path)!r}"
            )
    return merged
