"""Loaders for standard dataset formats, and the sample data the package uses.

The package ships no third-party data. `load_digits_images` reads
scikit-learn's digits, which ship with scikit-learn; the other loaders read
files the user already has (MNIST's IDX files, the UCR/UEA `.ts` archive,
tab-separated text).
"""

import gzip
import os
from pathlib import Path

import numpy as np

from aiservice_kit._validation import check_fraction

# IDX type codes (the third byte of the magic number) and their dtypes.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _open_maybe_gzip(path: Path):
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def load_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (MNIST's format), gzipped or not.

    Args:
        path: str or PathLike. The `.idx` or `.gz` file.

    Returns:
        A numpy array with the file's dtype and shape (uint8 for MNIST).

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if the magic number is wrong or the file is truncated.

    Example:
    ```python
    from aiservice_kit.datasets import load_idx
    images = load_idx("mnist/t10k-images-idx3-ubyte.gz")  # (10000, 28, 28)
    ```
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No IDX file at path={str(path)!r}.")
    try:
        with _open_maybe_gzip(path) as stream:
            data = stream.read()
    except (OSError, EOFError) as error:
        raise ValueError(
            f"Could not read the IDX file at path={str(path)!r}: {error}. "
            "The file is truncated or not gzip data."
        ) from error
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(
            f"Not an IDX file: path={str(path)!r} starts with "
            f"{data[:4].hex() or 'nothing'}, expected the magic number "
            "00 00 <type> <rank> (for example 00000803 for images)."
        )
    type_code, rank = data[2], data[3]
    if type_code not in _IDX_DTYPES or rank == 0:
        raise ValueError(
            f"Not an IDX file: path={str(path)!r} has the magic number "
            f"{data[:4].hex()}; the type byte must be one of "
            f"{sorted(hex(code) for code in _IDX_DTYPES)} and the rank >= 1."
        )
    header_end = 4 + 4 * rank
    if len(data) < header_end:
        raise ValueError(f"The IDX file path={str(path)!r} is truncated.")
    shape = tuple(
        int.from_bytes(data[4 + 4 * axis : 8 + 4 * axis], "big")
        for axis in range(rank)
    )
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(shape)) * dtype.itemsize
    available = len(data) - header_end
    if available != expected:
        raise ValueError(
            f"The IDX file path={str(path)!r} is truncated or padded: its "
            f"header promises shape {shape} ({expected} bytes of data) but "
            f"it holds {available} bytes."
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_end)
    return array.reshape(shape).astype(dtype.newbyteorder("="))


def load_mnist(
    directory: str | os.PathLike, kind: str = "t10k"
) -> tuple[np.ndarray, np.ndarray]:
    """Reads MNIST images and labels from a directory of IDX files.

    Args:
        directory: str or PathLike. Holds `{kind}-images-idx3-ubyte[.gz]`
            and `{kind}-labels-idx1-ubyte[.gz]`.
        kind: str. `"train"` or `"t10k"` (the official test set).

    Returns:
        `(images, labels)`: uint8 arrays of shape (n, 28, 28) and (n,).

    Raises:
        FileNotFoundError: if the files are missing.
        ValueError: if they are corrupt or their counts differ.

    Example:
    ```python
    from aiservice_kit.datasets import load_mnist
    images, labels = load_mnist("data/mnist", kind="t10k")
    ```
    """
    if kind not in ("train", "t10k"):
        raise ValueError(
            f"`kind` must be 'train' or 't10k'. Received: kind={kind!r}"
        )
    directory = Path(directory)

    def find(stem: str) -> Path:
        for candidate in (directory / f"{stem}.gz", directory / stem):
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(
            f"No {stem}[.gz] in directory={str(directory)!r}."
        )

    images = load_idx(find(f"{kind}-images-idx3-ubyte"))
    labels = load_idx(find(f"{kind}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"MNIST files in directory={str(directory)!r} disagree: images "
            f"have shape {images.shape}, labels {labels.shape}."
        )
    return images, labels


def load_digits_images(
    test_size: float = 0.2, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Returns scikit-learn's 8x8 digits as uint8 images, split stratified.

    The digits ship inside scikit-learn, so this works offline. Their 0-16
    intensities are scaled to 0-255 so they look like ordinary pixels.

    Args:
        test_size: float. Fraction of images held out for testing, in (0, 1).
        seed: int. Seed of the stratified split.

    Returns:
        `((x_train, y_train), (x_test, y_test))` with images of shape
        (n, 8, 8, 1), dtype uint8, and integer labels 0-9.

    Example:
    ```python
    from aiservice_kit.datasets import load_digits_images
    (x_train, y_train), (x_test, y_test) = load_digits_images()
    ```
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    test_size = check_fraction("test_size", test_size)
    if test_size == 0:
        raise ValueError(
            f"`test_size` must be in (0, 1). Received: test_size={test_size}"
        )
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    images = images[..., np.newaxis]
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        digits.target.astype(np.int64),
        test_size=test_size,
        stratify=digits.target,
        random_state=seed,
    )
    return (x_train, y_train), (x_test, y_test)
