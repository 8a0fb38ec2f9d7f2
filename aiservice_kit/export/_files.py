"""Single-file artifacts (.tflite, .onnx, .keras): checked, then renamed."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def publish_file(path: Path, data: bytes, check: Callable[[Path], Any]) -> Path:
    """Writes `data` beside `path`, checks it, then renames it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}"
    try:
        tmp.write_bytes(data)
        check(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def check_output_path(
    path: Any, suffixes: tuple[str, ...], name: str = "path"
) -> Path:
    """Returns `path` as a Path if it is a file path with one of `suffixes`.

    `name` is the argument's name in the error messages.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"`{name}` must be a file path ending in {' or '.join(suffixes)}. "
            f"Received: {name}={path!r}"
        )
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise ValueError(
            f"`{name}` must end in {' or '.join(suffixes)}. "
            f"Received: {name}={str(path)!r}"
        )
    if path.is_dir():
        raise ValueError(
            f"`{name}` is a directory; pass a file path. "
            f"Received: {name}={str(path)!r}"
        )
    return path
