"""Bad export arguments: refused up front, naming the argument."""

import zipfile

import numpy as np
import pytest

from aiservice_kit import build_cnn
from aiservice_kit.export import export_onnx
from aiservice_kit.export import export_saved_model
from aiservice_kit.export import export_tflite
from aiservice_kit.export import load_model
from aiservice_kit.export import save_model
from aiservice_kit.export import write_versioned_saved_model
from aiservice_kit.models._heads import check_class_names


@pytest.fixture(scope="module")
def cnn():
    return build_cnn((8, 8, 1), num_classes=3, filters=(4,), dense_units=8)


@pytest.mark.parametrize("where", ["base", "parent"])
def test_a_base_path_that_is_a_file_is_refused(cnn, tmp_path, where):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    base = a_file if where == "base" else a_file / "model"

    with pytest.raises(ValueError, match="`base_path` must be a directory"):
        export_saved_model(cnn, base, verify=False)
    with pytest.raises(ValueError, match=f"Received: base_path='{base}'"):
        write_versioned_saved_model(
            base, None, lambda tmp: None, {"task": "tensor"}
        )
    assert a_file.read_text() == "x"


def test_a_base_path_of_the_wrong_type_is_refused(cnn):
    with pytest.raises(TypeError, match="`base_path` must be a directory"):
        export_saved_model(cnn, 3, verify=False)


@pytest.mark.parametrize("dtype", ["complex64x", "complex64", "string", 7])
def test_input_dtypes_must_be_numeric_dtype_names(cnn, tmp_path, dtype):
    with pytest.raises(ValueError, match=r"`input_dtypes\['image'\]` must"):
        export_saved_model(
            cnn, tmp_path, input_dtypes={"image": dtype}, verify=False
        )
    assert not list(tmp_path.iterdir())


def test_input_dtypes_accept_numpy_and_tf_spellings(cnn, tmp_path):
    import tensorflow as tf

    for dtype in (np.float32, tf.float32, "float32"):
        version = export_saved_model(
            cnn, tmp_path, input_dtypes={"image": dtype}, verify=False
        )
        assert (version / "saved_model.pb").is_file()


def test_duplicate_class_names_are_refused_as_the_builders_do(cnn, tmp_path):
    with pytest.raises(ValueError, match="at least 2 distinct labels"):
        export_saved_model(cnn, tmp_path, class_names=["a", "a", "b"])
    with pytest.raises(ValueError, match="at least 2 distinct labels"):
        check_class_names(None, ["a", "a", "b"])  # what builders run
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "exporter", [export_saved_model, export_tflite, export_onnx]
)
def test_non_numeric_sample_inputs_are_refused_before_writing(
    cnn, tmp_path, exporter
):
    target = {
        export_saved_model: tmp_path / "m",
        export_tflite: tmp_path / "m.tflite",
        export_onnx: tmp_path / "m.onnx",
    }[exporter]
    strings = np.array([["a"] * 8] * 8)[None, ..., None].repeat(2, 0)

    with pytest.raises(ValueError) as caught:
        exporter(cnn, target, sample_inputs=strings)

    message = str(caught.value)
    assert "`sample_inputs['image']` must be numeric" in message
    assert "dtype <U1" in message and "ufunc" not in message
    assert not target.exists()


def test_object_arrays_of_numbers_still_verify(cnn, tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1))
    version = export_saved_model(
        cnn, tmp_path, sample_inputs=pixels.astype(object)
    )
    assert (version / "saved_model.pb").is_file()


@pytest.mark.parametrize("content", ["text", "zip_without_model"])
def test_load_model_says_a_corrupt_file_is_not_a_keras_archive(
    tmp_path, content
):
    path = tmp_path / "broken.keras"
    if content == "text":
        path.write_text("not a zip\n")
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("readme.txt", "hello")

    with pytest.raises(ValueError, match="not a readable .keras archive"):
        load_model(path)


def test_load_model_still_loads_a_saved_model(cnn, tmp_path):
    path = save_model(cnn, tmp_path / "cnn.keras")
    assert load_model(path, compile=False).count_params() == cnn.count_params()
