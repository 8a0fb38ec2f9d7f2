"""Export for the cloud and the edge, each artifact checked against Keras.

Three formats, one contract, one module each (as in `keras/src/export`):

- `export_saved_model` (`saved_model.py`) writes the versioned
  `base_path/<N>/` layout that TensorFlow Serving (and
  `aiservice_kit.serving`) loads, atomically, with `serving_default` and
  `predict` signatures that take raw inputs (uint8 pixels, strings) and
  return named outputs, TF Serving's `classification` or `regression`
  signature over serialized `tf.Example`s, and a metadata file beside it
  (the layout and the signature names are `_layout`'s).
- `export_tflite` (`litert.py`) writes a LiteRT (TFLite) flatbuffer with
  builtin ops only, after a preflight (`_preflight.py`) that names any
  layer that would need the Flex delegate.
- `export_onnx` (`onnx.py`) writes an ONNX graph (the `onnx` extra),
  refusing graphs the converter cannot express.

Any Keras model exports: the task is inferred from its output (a softmax
or sigmoid: a classifier; one value per example: a regressor; anything
else, several outputs included: a `tensor` model served under its own
output names) or stated with `task=`. Every exporter plans the model's
signatures once (`_signature.plan`) and
calls `verify` on a small sample by default: the artifact runs in its own
runtime (TensorFlow, the LiteRT interpreter, onnxruntime) and its outputs
are compared with the Keras model's (`verify.py`).

All three share one serving function: the model called with
`training=False` (so `Random*` augmentation layers never act at inference),
raw inputs cast inside, and outputs `probabilities` + `predicted_class` for
classifiers, `predictions` for regressors (`models._contract`), or a tensor
model's own output names.
With `explain=True`, `export_saved_model` adds an `explain` signature
(`explain.py`) to image and sequence models: integrated gradients beside
the predictions, the same math as `aiservice_kit.explain`.
`keras_file.py` saves and loads `.keras` files; `recommender.py` builds the
TensorFlow graph of a fitted `CosineRecommender`, `factorization.py` that of
a `MatrixFactorization`.
"""

from aiservice_kit._layout import ATTRIBUTIONS
from aiservice_kit._layout import CLASSIFY_SIGNATURE
from aiservice_kit._layout import EXPLAIN_SIGNATURE
from aiservice_kit._layout import FORMAT_VERSION
from aiservice_kit._layout import METADATA_DIR
from aiservice_kit._layout import METADATA_FILE
from aiservice_kit._layout import PREDICT_SIGNATURE
from aiservice_kit._layout import REGRESS_SIGNATURE
from aiservice_kit._layout import SERVING_SIGNATURE
from aiservice_kit._layout import TASKS
from aiservice_kit._layout import TMP_PREFIX
from aiservice_kit._layout import list_versions
from aiservice_kit._layout import publish_version as write_versioned_saved_model
from aiservice_kit._layout import read_metadata as read_export_metadata
from aiservice_kit.export._preflight import preflight_onnx
from aiservice_kit.export._preflight import preflight_tflite
from aiservice_kit.export._signature import iter_layers
from aiservice_kit.export.keras_file import load_model
from aiservice_kit.export.keras_file import save_model
from aiservice_kit.export.litert import MAX_CALIBRATION_SAMPLES
from aiservice_kit.export.litert import QUANTIZATIONS
from aiservice_kit.export.litert import export_tflite
from aiservice_kit.export.onnx import export_onnx
from aiservice_kit.export.saved_model import export_saved_model
from aiservice_kit.export.verify import DEFAULT_VERIFY_SAMPLES
from aiservice_kit.export.verify import FLOAT_TOLERANCE
from aiservice_kit.export.verify import FORMATS
from aiservice_kit.export.verify import QUANTIZED_MIN_CLASS_AGREEMENT
from aiservice_kit.export.verify import ExportReport
from aiservice_kit.export.verify import load_artifact
from aiservice_kit.export.verify import verify_export
from aiservice_kit.models._contract import PREDICTED_CLASS
from aiservice_kit.models._contract import PREDICTIONS
from aiservice_kit.models._contract import PROBABILITIES

__all__ = [
    "CLASSIFY_SIGNATURE",
    "ATTRIBUTIONS",
    "EXPLAIN_SIGNATURE",
    "DEFAULT_VERIFY_SAMPLES",
    "FLOAT_TOLERANCE",
    "FORMATS",
    "FORMAT_VERSION",
    "MAX_CALIBRATION_SAMPLES",
    "METADATA_DIR",
    "METADATA_FILE",
    "PREDICTED_CLASS",
    "PREDICTIONS",
    "PREDICT_SIGNATURE",
    "PROBABILITIES",
    "QUANTIZATIONS",
    "QUANTIZED_MIN_CLASS_AGREEMENT",
    "REGRESS_SIGNATURE",
    "SERVING_SIGNATURE",
    "TASKS",
    "TMP_PREFIX",
    "ExportReport",
    "export_onnx",
    "export_saved_model",
    "export_tflite",
    "iter_layers",
    "list_versions",
    "load_artifact",
    "load_model",
    "preflight_onnx",
    "preflight_tflite",
    "read_export_metadata",
    "save_model",
    "verify_export",
    "write_versioned_saved_model",
]
