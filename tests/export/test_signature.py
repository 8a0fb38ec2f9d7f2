"""Each public export call plans the model once and hands the plan on."""

import keras
import numpy as np
import pytest

from aiservice_kit.export import _signature
from aiservice_kit.export import export_onnx
from aiservice_kit.export import export_saved_model
from aiservice_kit.export import export_tflite
from aiservice_kit.export import preflight_onnx
from aiservice_kit.export import preflight_tflite
from aiservice_kit.export import verify_export


def tiny_classifier(output_name="probabilities"):
    inputs = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Dense(3, activation="softmax", name=output_name)(
        hidden
    )
    return keras.Model(inputs, outputs)


@pytest.fixture
def plan_calls(monkeypatch):
    """Counts calls of the real `_signature.plan` (it still runs)."""
    calls = []
    real = _signature.plan

    def counted(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(_signature, "plan", counted)
    return calls


def test_export_saved_model_plans_once(plan_calls, tmp_path):
    version_dir = export_saved_model(tiny_classifier(), tmp_path)
    assert (version_dir / "saved_model.pb").is_file()
    assert len(plan_calls) == 1


def test_export_tflite_plans_once_for_preflight_and_verify(
    plan_calls, tmp_path
):
    sample = np.random.default_rng(0).standard_normal((5, 4))
    model = tiny_classifier()
    path = export_tflite(model, tmp_path / "m.tflite", sample_inputs=sample)
    assert path.is_file()
    assert len(plan_calls) == 1
    # An explicit task is planned once too, and reaches the preflight.
    export_tflite(model, tmp_path / "n.tflite", task="classification")
    assert len(plan_calls) == 2


def test_export_onnx_plans_once(plan_calls, tmp_path):
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    path = export_onnx(tiny_classifier(), tmp_path / "m.onnx")
    assert path.is_file()
    assert len(plan_calls) == 1


def test_public_checks_plan_once_each(plan_calls, tmp_path):
    model = tiny_classifier()
    path = export_tflite(model, tmp_path / "m.tflite", verify=False)
    assert len(plan_calls) == 1
    assert verify_export(model, path).passed
    assert len(plan_calls) == 2
    assert preflight_tflite(model) == []
    assert preflight_onnx(model) == []
    assert len(plan_calls) == 4


def test_a_softmax_output_of_any_name_plans_as_a_classifier():
    # The output's name tells no task; its softmax does, and `task=`
    # overrides it.
    model = tiny_classifier(output_name="scores")
    assert preflight_tflite(model) == []
    assert preflight_onnx(model) == []
    assert _signature.plan(model).task == "classification"
    assert _signature.plan(model, "regression").task == "regression"
    with pytest.raises(ValueError, match="task"):
        _signature.plan(model, "ranking")
