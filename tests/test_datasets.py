"""IDX / MNIST and digits loaders, on the real files and on broken ones."""

import gzip

import numpy as np
import pytest

from aiservice_kit.datasets import load_digits_images
from aiservice_kit.datasets import load_idx
from aiservice_kit.datasets import load_mnist


def test_load_mnist_reads_the_real_test_set(data_dir):
    images, labels = load_mnist(data_dir / "mnist", kind="t10k")

    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,)
    assert set(np.unique(labels)) == set(range(10))
    # The first test image of MNIST is a 7 (a fact of the published file).
    assert labels[0] == 7
    assert images.max() == 255


def test_load_idx_reads_plain_and_gzipped_files(tmp_path):
    array = np.arange(24, dtype=">i4").reshape(2, 3, 4)
    header = bytes([0, 0, 0x0C, 3]) + b"".join(
        n.to_bytes(4, "big") for n in array.shape
    )
    (tmp_path / "plain.idx").write_bytes(header + array.tobytes())
    with gzip.open(tmp_path / "zipped.idx.gz", "wb") as stream:
        stream.write(header + array.tobytes())

    for name in ("plain.idx", "zipped.idx.gz"):
        loaded = load_idx(tmp_path / name)
        np.testing.assert_array_equal(loaded, array)
        assert loaded.dtype.isnative


def test_truncated_file_is_refused(data_dir, tmp_path):
    data = gzip.decompress(
        (data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()
    )
    (tmp_path / "short.idx").write_bytes(data[:-10])

    with pytest.raises(ValueError, match="truncated"):
        load_idx(tmp_path / "short.idx")


def test_truncated_gzip_is_refused(data_dir, tmp_path):
    data = (data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()
    (tmp_path / "short.gz").write_bytes(data[: len(data) // 2])

    with pytest.raises(ValueError, match="truncated"):
        load_idx(tmp_path / "short.gz")


def test_wrong_magic_number_is_refused(tmp_path):
    (tmp_path / "text.idx").write_bytes(b"hello world, not an idx file")

    with pytest.raises(ValueError, match="magic number"):
        load_idx(tmp_path / "text.idx")


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        load_mnist(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_idx(tmp_path / "absent.idx")
    with pytest.raises(ValueError, match="kind='test'"):
        load_mnist(tmp_path, kind="test")


def test_digits_are_uint8_images_split_stratified():
    (x_train, y_train), (x_test, y_test) = load_digits_images(test_size=0.2)

    assert x_train.shape[1:] == (8, 8, 1) and x_train.dtype == np.uint8
    assert len(x_train) + len(x_test) == 1797
    assert len(x_test) == 360
    assert x_train.max() == 255
    train_share = np.bincount(y_train) / len(y_train)
    test_share = np.bincount(y_test) / len(y_test)
    np.testing.assert_allclose(train_share, test_share, atol=0.01)


def test_digits_split_is_reproducible_and_checked():
    first = load_digits_images(seed=3)[1][1]
    again = load_digits_images(seed=3)[1][1]
    np.testing.assert_array_equal(first, again)
    with pytest.raises(ValueError, match="test_size=0"):
        load_digits_images(test_size=0.0)
