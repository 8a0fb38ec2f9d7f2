""".keras files: save atomically, load with the library's layers known."""

from __future__ import annotations

import os
import uuid
import zipfile
from pathlib import Path

import keras

from aiservice_kit._validation import check_bool
from aiservice_kit.export._files import check_output_path
from aiservice_kit.export._signature import check_model


def save_model(model: keras.Model, path: str | os.PathLike) -> Path:
    """Saves `model` as a `.keras` file, atomically.

    Args:
        model: keras.Model. The model to save.
        path: str or PathLike. A file path ending in `.keras`.

    Returns:
        The written path.

    Raises:
        TypeError: if `model` is not a Keras model.
        ValueError: if `path` does not end in `.keras`.

    Example:
    ```python
    from aiservice_kit.export import save_model, load_model
    save_model(model, "mnist.keras")
    model = load_model("mnist.keras")
    ```
    """
    model = check_model(model)
    path = check_output_path(path, (".keras",))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp.keras"
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_model(path: str | os.PathLike, *, compile: bool = True) -> keras.Model:
    """Loads a `.keras` file saved by `save_model` (or `model.save`).

    aiservice_kit's custom layers are registered as serializable, so no
    `custom_objects` are needed.

    Args:
        path: str or PathLike. A `.keras` file.
        compile: bool. Whether to restore the compiled state.

    Returns:
        The model.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if it is not a `.keras` file, or not a readable
            `.keras` archive (not a zip file, or one without a model).

    Example:
    ```python
    from aiservice_kit.export import load_model
    model = load_model("mnist.keras")
    ```
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"`path` must be a path to a .keras file. Received: path={path!r}"
        )
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No model file at {path}.")
    if path.suffix.lower() != ".keras":
        raise ValueError(
            "`path` must be a .keras file (Keras 3's format). "
            f"Received: path={str(path)!r}"
        )
    check_bool("compile", compile)

    def not_readable(why: str) -> ValueError:
        return ValueError(
            "`path` is not a readable .keras archive (the zip file "
            f"`model.save` writes): {why}. Received: path={str(path)!r}"
        )

    if not zipfile.is_zipfile(path):
        raise not_readable("not a zip file")
    try:
        with zipfile.ZipFile(path) as archive:
            if "config.json" not in archive.namelist():
                raise not_readable("it holds no config.json")
        import aiservice_kit.models  # noqa: F401  (registers custom layers)

        return keras.saving.load_model(path, compile=compile)
    except zipfile.BadZipFile as error:
        raise not_readable(f"a damaged zip file ({error})") from None
