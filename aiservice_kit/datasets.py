"""Dataset fetchers and loaders for standard dataset formats.

The package ships no third-party data. `load_digits_images` reads
scikit-learn's digits, which ship with scikit-learn. The `fetch_*`
functions download a dataset once from its original public URL into a
cache folder (`data_home=`, else `$AISERVICE_KIT_DATA`, else
`~/.aiservice_kit/datasets`), check the pinned sha256 of what they
downloaded, and read it with the matching `load_*` function. The loaders
read files the user already has (MNIST's IDX files, the UCR/UEA `.ts`
archive, tab-separated text).

Offline, put the files in the cache folder by hand, laid out as the
fetchers would (see the Data page of the docs); they are then used as is.
"""

import csv
import gzip
import os
from pathlib import Path

import numpy as np

from aiservice_kit._dataset_sources import MNIST as _MNIST
from aiservice_kit._dataset_sources import MOVIELENS as _MOVIELENS
from aiservice_kit._dataset_sources import ONLINE_SHOPPING as _ONLINE_SHOPPING
from aiservice_kit._dataset_sources import SKTIME_DATA_URL as _SKTIME_DATA_URL
from aiservice_kit._dataset_sources import SMS_SPAM as _SMS_SPAM
from aiservice_kit._dataset_sources import UCR_UEA as _UCR_UEA
from aiservice_kit._download import ChecksumMismatchError
from aiservice_kit._download import DownloadError
from aiservice_kit._download import RemoteFile
from aiservice_kit._download import fetch_dataset
from aiservice_kit._download import get_data_home
from aiservice_kit._ts_format import load_ts
from aiservice_kit._validation import check_fraction

__all__ = [
    "ChecksumMismatchError",
    "DownloadError",
    "fetch_mnist",
    "fetch_movielens",
    "fetch_online_shopping_zh",
    "fetch_sms_spam",
    "fetch_ucr_uea",
    "get_data_home",
    "load_digits_images",
    "load_idx",
    "load_labelled_text",
    "load_mnist",
    "load_ts",
]

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


def load_labelled_text(
    path: str | os.PathLike,
    *,
    delimiter: str = "\t",
    label_first: bool = True,
    encoding: str = "utf-8",
) -> tuple[np.ndarray, np.ndarray]:
    """Reads labelled texts, one `label<TAB>text` pair per line.

    This is the layout of the SMS Spam Collection and of many corpora
    exported from spreadsheets. Each line is split on the first delimiter
    only, and quotes are kept as they are (no CSV quoting). Blank lines
    are skipped.

    Args:
        path: str or PathLike. The text file.
        delimiter: str. What separates the label from the text.
        label_first: bool. True for `label<TAB>text`, False for
            `text<TAB>label` (then split on the last delimiter).
        encoding: str. The file's text encoding.

    Returns:
        `(texts, labels)`: two 1-D numpy arrays of Python `str` (dtype
        object, which Keras' `fit` accepts).

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if a line has no delimiter, an empty label, or the
            file holds no lines.

    Example:
    ```python
    from aiservice_kit.datasets import load_labelled_text
    texts, labels = load_labelled_text("sms-spam-collection/SMSSpamCollection")
    ```
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No text file at path={str(path)!r}.")
    if not isinstance(delimiter, str) or not delimiter:
        raise ValueError(
            "`delimiter` must be a non-empty string. "
            f"Received: delimiter={delimiter!r}"
        )
    texts: list[str] = []
    labels: list[str] = []
    with open(path, encoding=encoding) as stream:
        for line_number, line in enumerate(stream, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            if delimiter not in line:
                raise ValueError(
                    f"Line {line_number} of path={str(path)!r} has no "
                    f"delimiter {delimiter!r}: {line[:60]!r}"
                )
            if label_first:
                label, text = line.split(delimiter, 1)
            else:
                text, label = line.rsplit(delimiter, 1)
            label = label.strip()
            if not label:
                raise ValueError(
                    f"Line {line_number} of path={str(path)!r} has an empty "
                    "label."
                )
            texts.append(text)
            labels.append(label)
    if not texts:
        raise ValueError(f"The file path={str(path)!r} holds no lines.")
    return np.asarray(texts, dtype=object), np.asarray(labels, dtype=object)


# ---------------------------------------------------------------------------
# Fetchers: the URLs and pins live in `_dataset_sources.py`.


def fetch_mnist(
    kind: str = "train",
    *,
    data_home: str | os.PathLike | None = None,
    base_url: str | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Downloads MNIST once (official IDX files) and reads one split.

    The files come from Google's mirror of the official MNIST files,
    `https://storage.googleapis.com/cvdf-datasets/mnist/`, into
    `<data_home>/mnist/`. Licence: CC BY-SA 3.0 (Y. LeCun, C. Cortes).

    Args:
        kind: str. `"train"` (60,000 images) or `"t10k"` (the official
            10,000 test images).
        data_home: str, PathLike or None. The cache folder; by default
            `$AISERVICE_KIT_DATA`, else `~/.aiservice_kit/datasets`.
        base_url: str or None. A mirror laid out like the cache, used
            instead of the original URL (default:
            `$AISERVICE_KIT_DATA_MIRROR`).
        progress: bool. Show a progress bar while downloading.

    Returns:
        `(images, labels)` as `load_mnist` returns them: uint8 arrays of
        shape (n, 28, 28) and (n,).

    Raises:
        ValueError: if `kind` is not `"train"` or `"t10k"`.
        DownloadError: if a file cannot be downloaded; the message names
            the URL and the folder to put it in by hand.
        ChecksumMismatchError: if a download has the wrong sha256.

    Example:
    ```python
    from aiservice_kit.datasets import fetch_mnist
    x_train, y_train = fetch_mnist("train")
    x_test, y_test = fetch_mnist("t10k")
    ```
    """
    if kind not in _MNIST:
        raise ValueError(
            f"`kind` must be 'train' or 't10k'. Received: kind={kind!r}"
        )
    folder = fetch_dataset(
        _MNIST[kind],
        "mnist",
        data_home=data_home,
        base_url=base_url,
        progress=progress,
    )
    return load_mnist(folder, kind=kind)


def fetch_sms_spam(
    *,
    data_home: str | os.PathLike | None = None,
    base_url: str | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Downloads the SMS Spam Collection v.1 once and reads it.

    5,574 English SMS labelled `ham` or `spam`, from the UCI Machine
    Learning Repository (CC BY 4.0; cite Almeida, Gómez Hidalgo and
    Yamakami, 2011). The zip is kept in `<data_home>/sms-spam-collection/`
    beside the extracted `SMSSpamCollection`.

    Args:
        data_home: str, PathLike or None. The cache folder (see
            `fetch_mnist`).
        base_url: str or None. A mirror laid out like the cache.
        progress: bool. Show a progress bar while downloading.

    Returns:
        `(texts, labels)` as `load_labelled_text` returns them.

    Raises:
        DownloadError: if the file cannot be downloaded.
        ChecksumMismatchError: if the download has the wrong sha256.

    Example:
    ```python
    from aiservice_kit.datasets import fetch_sms_spam
    texts, labels = fetch_sms_spam()
    ```
    """
    folder = fetch_dataset(
        (_SMS_SPAM,),
        "sms-spam-collection",
        data_home=data_home,
        base_url=base_url,
        progress=progress,
    )
    return load_labelled_text(folder / "SMSSpamCollection")


def fetch_ucr_uea(
    name: str,
    *,
    data_home: str | os.PathLike | None = None,
    base_url: str | None = None,
    progress: bool = True,
) -> tuple[
    tuple[np.ndarray | list[np.ndarray], np.ndarray],
    tuple[np.ndarray | list[np.ndarray], np.ndarray],
]:
    """Downloads a UCR/UEA time-series classification problem once.

    The `.ts` files come from the sktime repository's copy of the archive
    (at a fixed commit, so their sha256s are pinned) into
    `<data_home>/<name in lower case>/`. The archive states no licence:
    free for research, cite it (Dau et al. 2019; Bagnall et al. 2018).

    Args:
        name: str. The problem's name, any case: `"ArrowHead"`,
            `"BasicMotions"`, `"GunPoint"` or `"ItalyPowerDemand"`.
        data_home: str, PathLike or None. The cache folder (see
            `fetch_mnist`).
        base_url: str or None. A mirror laid out like the cache.
        progress: bool. Show a progress bar while downloading.

    Returns:
        `((x_train, y_train), (x_test, y_test))`, each pair as `load_ts`
        returns it: series channels-last, labels as strings.

    Raises:
        ValueError: if `name` is not a known problem.
        DownloadError: if a file cannot be downloaded.
        ChecksumMismatchError: if a download has the wrong sha256.

    Example:
    ```python
    from aiservice_kit.datasets import fetch_ucr_uea
    (x_train, y_train), (x_test, y_test) = fetch_ucr_uea("GunPoint")
    x_train.shape  # (50, 150, 1)
    ```
    """
    canonical = {key.lower(): key for key in _UCR_UEA}
    if not isinstance(name, str) or name.lower() not in canonical:
        raise ValueError(
            f"`name` must be one of {sorted(_UCR_UEA)} (any case). "
            f"Received: name={name!r}"
        )
    name = canonical[name.lower()]
    remotes = tuple(
        RemoteFile(
            f"{_SKTIME_DATA_URL}{name}/{name}_{split}.ts", sha256, size=size
        )
        for split, (sha256, size) in zip(
            ("TRAIN", "TEST"), _UCR_UEA[name], strict=True
        )
    )
    folder = fetch_dataset(
        remotes,
        name.lower(),
        data_home=data_home,
        base_url=base_url,
        progress=progress,
    )
    return (
        load_ts(folder / f"{name}_TRAIN.ts"),
        load_ts(folder / f"{name}_TEST.ts"),
    )


def fetch_movielens(
    variant: str = "latest-small",
    *,
    data_home: str | os.PathLike | None = None,
    base_url: str | None = None,
    progress: bool = True,
) -> Path:
    """Downloads a MovieLens dataset from GroupLens once.

    The zip from `https://files.grouplens.org/datasets/movielens/` is kept
    in `<data_home>/movielens-<variant>/` and its files are extracted
    beside it. GroupLens' terms: research use, no commercial use without
    permission, cite Harper and Konstan (2015), redistribute only under
    the same terms.

    Args:
        variant: str. `"latest-small"` (100,836 ratings, `ratings.csv`),
            `"100k"` (100,000 ratings, tab-separated `u.data`) or `"1m"`
            (1,000,209 ratings, `::`-separated `ratings.dat`).
        data_home: str, PathLike or None. The cache folder (see
            `fetch_mnist`).
        base_url: str or None. A mirror laid out like the cache.
        progress: bool. Show a progress bar while downloading.

    Returns:
        The folder holding the extracted files. For `"latest-small"` pass
        it to `aiservice_kit.recommenders.interactions.
        load_movielens_ratings`.

    Raises:
        ValueError: if `variant` is not one of the above.
        DownloadError: if the file cannot be downloaded.
        ChecksumMismatchError: if the download has the wrong sha256.

    Example:
    ```python
    from aiservice_kit.datasets import fetch_movielens
    from aiservice_kit.recommenders.interactions import (
        load_movielens_ratings,
    )
    ratings = load_movielens_ratings(fetch_movielens(), min_rating=4.0)
    ```
    """
    if variant not in _MOVIELENS:
        raise ValueError(
            f"`variant` must be one of {sorted(_MOVIELENS)}. "
            f"Received: variant={variant!r}"
        )
    return fetch_dataset(
        (_MOVIELENS[variant],),
        f"movielens-{variant}",
        data_home=data_home,
        base_url=base_url,
        progress=progress,
    )


def fetch_online_shopping_zh(
    target: str = "sentiment",
    *,
    data_home: str | os.PathLike | None = None,
    base_url: str | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Downloads the Chinese online-shopping reviews once and reads them.

    62,773 product reviews in 10 categories with a sentiment label, from
    the `SophonPlus/ChineseNlpCorpus` repository on GitHub (at a fixed
    commit) into `<data_home>/online-shopping-zh/`. The corpus states no
    licence: use it for research; it is downloaded from its original
    public URL, never shipped. One row with an empty review is skipped.

    Args:
        target: str. `"sentiment"` (labels `"0"` negative, `"1"` positive)
            or `"category"` (the 10 product categories, in Chinese).
        data_home: str, PathLike or None. The cache folder (see
            `fetch_mnist`).
        base_url: str or None. A mirror laid out like the cache.
        progress: bool. Show a progress bar while downloading.

    Returns:
        `(texts, labels)`: 1-D numpy arrays of `str` (dtype object).

    Raises:
        ValueError: if `target` is not `"sentiment"` or `"category"`.
        DownloadError: if the file cannot be downloaded.
        ChecksumMismatchError: if the download has the wrong sha256.

    Example:
    ```python
    from aiservice_kit.datasets import fetch_online_shopping_zh
    texts, labels = fetch_online_shopping_zh(target="category")
    ```
    """
    columns = {"sentiment": 1, "category": 0}
    if target not in columns:
        raise ValueError(
            "`target` must be 'sentiment' or 'category'. "
            f"Received: target={target!r}"
        )
    folder = fetch_dataset(
        (_ONLINE_SHOPPING,),
        "online-shopping-zh",
        data_home=data_home,
        base_url=base_url,
        progress=progress,
    )
    texts: list[str] = []
    labels: list[str] = []
    path = folder / "online_shopping_10_cats.csv"
    with open(path, newline="", encoding="utf-8-sig") as stream:
        rows = csv.reader(stream)
        next(rows)  # cat,label,review
        for row in rows:
            if len(row) == 3 and row[2].strip():
                texts.append(row[2])
                labels.append(row[columns[target]])
    return np.asarray(texts, dtype=object), np.asarray(labels, dtype=object)
