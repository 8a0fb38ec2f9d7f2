"""A loaded signature called the short way (`_call_flat`) answers as the
keyword call would: inputs matched by name, TF's errors for the rest."""

import numpy as np
import pytest
import tensorflow as tf

from aiservice_kit.serving._errors import ServingError
from aiservice_kit.serving._servable import Signature
from aiservice_kit.serving.batching import BatchingConfig


@pytest.fixture(scope="module")
def signature(tmp_path_factory):
    class Difference(tf.Module):
        # arguments not in name order: the flat call must match by name
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, 2], tf.float32, name="zeta"),
                tf.TensorSpec([None, 2], tf.int32, name="alpha"),
            ]
        )
        def serve(self, zeta, alpha):
            return {"difference": zeta - tf.cast(alpha, tf.float32)}

    path = tmp_path_factory.mktemp("difference")
    module = Difference()
    tf.saved_model.save(
        module, str(path), signatures={"serving_default": module.serve}
    )
    fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    signature = Signature("serving_default", fn, BatchingConfig(), "t", None)
    yield signature
    signature.close()


def test_flat_call_matches_inputs_by_name(signature):
    assert signature._flat_order == ("alpha", "zeta")  # the short call is on
    zeta = np.array([[5.0, 7.0]], np.float32)
    alpha = np.array([[1, 2]], np.int32)
    outputs = signature.run({"zeta": zeta, "alpha": alpha})
    np.testing.assert_array_equal(outputs["difference"], [[4.0, 5.0]])


def test_inputs_the_signature_does_not_take_get_tensorflows_error(signature):
    zeta = np.array([[5.0, 7.0]], np.float64)  # not float32
    alpha = np.array([[1, 2]], np.int32)
    with pytest.raises(ServingError) as error:
        signature.run({"zeta": zeta, "alpha": alpha})
    assert error.value.status_code == 400
