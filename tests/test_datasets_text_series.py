"""Tests for the `.ts` and labelled-text loaders in `aiservice_kit.datasets`."""

import numpy as np
import pytest

from aiservice_kit.datasets import load_labelled_text
from aiservice_kit.datasets import load_ts

HEADER = """# a comment
@problemName Toy
@timeStamps false
@missing true
@univariate false
@dimensions 2
@equalLength {equal}
@classLabel true a b
@data
"""


def _write(tmp_path, text, name="toy.ts"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_real_univariate_and_multivariate_files(data_dir):
    x, y = load_ts(data_dir / "gunpoint" / "GunPoint_TRAIN.ts")
    assert x.shape == (50, 150, 1) and x.dtype == np.float32
    assert sorted(set(y)) == ["1", "2"] and (y == "1").sum() == 24
    x, y = load_ts(data_dir / "basicmotions" / "BasicMotions_TEST.ts")
    assert x.shape == (40, 100, 6)
    assert {label: (y == label).sum() for label in set(y)} == {
        "Standing": 10,
        "Running": 10,
        "Walking": 10,
        "Badminton": 10,
    }


def test_unequal_lengths_and_missing_values(tmp_path):
    path = _write(
        tmp_path,
        HEADER.format(equal="false") + "1,2,3:4,5,6:a\n1,?:2,3:b\n",
    )
    x, y = load_ts(path)
    assert isinstance(x, list) and [case.shape for case in x] == [
        (3, 2),
        (2, 2),
    ]
    np.testing.assert_array_equal(x[0][:, 1], [4, 5, 6])
    assert np.isnan(x[1][1, 0])
    assert list(y) == ["a", "b"]


def test_regression_targets_are_floats(tmp_path):
    path = _write(
        tmp_path,
        "@problemName R\n@univariate true\n@equalLength true\n"
        "@seriesLength 2\n@targetLabel true\n@data\n1,2:0.5\n3,4:1.5\n",
    )
    x, y = load_ts(path)
    assert x.shape == (2, 2, 1)
    np.testing.assert_allclose(y, [0.5, 1.5])


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("@problemName X\n1,2:a\n", "header line"),
        ("@problemName X\n@classLabel true a\n", "no @data"),
        ("@problemName X\n@bogus 1\n@data\n", "unknown header tag"),
        ("@timeStamps true\n@data\n", "time-stamped"),
        ("@dimensions 2\n@classLabel true a\n@data\n1,2:a\n", "channel"),
        ("@classLabel true a\n@data\n1,x,3:a\n", "non-numeric"),
        ("@classLabel true a\n@data\n1,2:c\n", "not declared"),
        ("@classLabel true a\n@data\n1,2:1,2,3:a\n", "different lengths"),
        (
            "@equalLength true\n@seriesLength 3\n@classLabel true a\n"
            "@data\n1,2:a\n",
            "seriesLength",
        ),
        ("@classLabel true a\n@data\n", "no cases"),
    ],
)
def test_malformed_files_raise_clear_errors(tmp_path, body, match):
    with pytest.raises(ValueError, match=match):
        load_ts(_write(tmp_path, body))


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="No .ts file"):
        load_ts("/nonexistent/file.ts")


def test_labelled_text_real_file(data_dir):
    texts, labels = load_labelled_text(
        data_dir / "sms-spam-collection" / "SMSSpamCollection"
    )
    assert len(texts) == len(labels) == 5574
    assert (labels == "spam").sum() == 747
    assert texts.dtype == object and texts[1] == "Ok lar... Joking wif u oni..."


def test_labelled_text_options_and_errors(tmp_path):
    path = _write(tmp_path, 'say "hi"\tgreet\n\nbye, now\tleave\n', "t.tsv")
    texts, labels = load_labelled_text(path, label_first=False)
    assert list(texts) == ['say "hi"', "bye, now"]
    assert list(labels) == ["greet", "leave"]
    with pytest.raises(ValueError, match="no delimiter"):
        load_labelled_text(_write(tmp_path, "no tab here\n", "bad.tsv"))
    with pytest.raises(ValueError, match="empty label"):
        load_labelled_text(_write(tmp_path, "\ttext\n", "empty.tsv"))
    with pytest.raises(ValueError, match="holds no lines"):
        load_labelled_text(_write(tmp_path, "\n", "blank.tsv"))
    with pytest.raises(ValueError, match="delimiter"):
        load_labelled_text(path, delimiter="")
