"""aiservice_kit: from data to a served Keras model in a few lines.

The public API is listed in `__all__`. Its names load on first use, so
`import aiservice_kit` is cheap and the recommenders never load TensorFlow
(about 650 MB and 4 s) unless they export; the first model builder, export
or training helper you touch imports it. Whoever imports TensorFlow first
(the library, Keras or you), its start-up notices stay hidden unless you
set `TF_CPP_MIN_LOG_LEVEL=0`. On x86-64 CPUs where TensorFlow would
leave its oneDNN kernels off (AVX2 servers), importing `aiservice_kit`
before TensorFlow turns them on (faster training; `aiservice-kit serve`
keeps them off, as one-request calls were slower); set
`TF_ENABLE_ONEDNN_OPTS` yourself to decide. Serving is an optional extra,
imported explicitly: `from aiservice_kit.serving import create_app`.

The model classes and layers of the builders are registered with Keras as
soon as Keras is loaded in a process that has imported `aiservice_kit`
(whichever comes first), so a `.keras` file the builders saved reloads
with `keras.models.load_model` and no `custom_objects`.

Raises:
    ImportError: on import, when Keras is configured (by `KERAS_BACKEND` or
        `~/.keras/keras.json`) for a backend other than TensorFlow.
"""

import importlib
import typing

from aiservice_kit import _backend
from aiservice_kit._version import __version__

_backend.check_configured_backend()
_backend.hide_tensorflow_start_up_notices()
_backend.enable_onednn_kernels()

#: Imported to register the builders' Keras classes (models, layers).
_REGISTERING_MODULE = "aiservice_kit.models"


#: Public name -> the module that defines it, imported on first access.
_LAZY = {
    "CosineRecommender": "aiservice_kit.recommenders",
    "ExportError": "aiservice_kit.exceptions",
    "ExportMismatchError": "aiservice_kit.exceptions",
    "ExportReport": "aiservice_kit.export",
    "KNNRatingPredictor": "aiservice_kit.recommenders",
    "MatrixFactorization": "aiservice_kit.recommenders",
    "NotFittedError": "aiservice_kit.exceptions",
    "PositionalEmbedding": "aiservice_kit.models",
    "TransformerEncoder": "aiservice_kit.models",
    "build_cnn": "aiservice_kit.models",
    "build_lstm": "aiservice_kit.models",
    "build_text_classifier": "aiservice_kit.models",
    "default_callbacks": "aiservice_kit.training",
    "describe_strategy": "aiservice_kit.distribute",
    "evaluate": "aiservice_kit.training",
    "explain": "aiservice_kit.explaining",
    "export_onnx": "aiservice_kit.export",
    "export_saved_model": "aiservice_kit.export",
    "export_tflite": "aiservice_kit.export",
    "get_strategy": "aiservice_kit.distribute",
    "make_dataset": "aiservice_kit.pipelines",
    "plot_explanation": "aiservice_kit.explaining",
    "plot_history": "aiservice_kit.training",
    "train": "aiservice_kit.training",
    "tune": "aiservice_kit.tuning",
    "verify_export": "aiservice_kit.export",
}

__all__ = [
    "CosineRecommender",
    "ExportError",
    "ExportMismatchError",
    "ExportReport",
    "KNNRatingPredictor",
    "MatrixFactorization",
    "NotFittedError",
    "PositionalEmbedding",
    "TransformerEncoder",
    "__version__",
    "build_cnn",
    "build_lstm",
    "build_text_classifier",
    "default_callbacks",
    "describe_strategy",
    "evaluate",
    "explain",
    "export_onnx",
    "export_saved_model",
    "export_tflite",
    "get_strategy",
    "make_dataset",
    "plot_explanation",
    "plot_history",
    "train",
    "tune",
    "verify_export",
]

# For IDEs and type checkers only: nothing here is imported at run time.
if typing.TYPE_CHECKING:
    from aiservice_kit.distribute import describe_strategy
    from aiservice_kit.distribute import get_strategy
    from aiservice_kit.exceptions import ExportError
    from aiservice_kit.exceptions import ExportMismatchError
    from aiservice_kit.exceptions import NotFittedError
    from aiservice_kit.explaining import explain
    from aiservice_kit.explaining import plot_explanation
    from aiservice_kit.export import ExportReport
    from aiservice_kit.export import export_onnx
    from aiservice_kit.export import export_saved_model
    from aiservice_kit.export import export_tflite
    from aiservice_kit.export import verify_export
    from aiservice_kit.models import PositionalEmbedding
    from aiservice_kit.models import TransformerEncoder
    from aiservice_kit.models import build_cnn
    from aiservice_kit.models import build_lstm
    from aiservice_kit.models import build_text_classifier
    from aiservice_kit.pipelines import make_dataset
    from aiservice_kit.recommenders import CosineRecommender
    from aiservice_kit.training import default_callbacks
    from aiservice_kit.training import evaluate
    from aiservice_kit.training import plot_history
    from aiservice_kit.training import train
    from aiservice_kit.tuning import tune


def __getattr__(name: str) -> typing.Any:
    if name not in _LAZY:
        raise AttributeError(
            f"module 'aiservice_kit' has no attribute {name!r}"
        )
    try:
        module = importlib.import_module(_LAZY[name])
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] != "tensorflow":
            raise
        raise ModuleNotFoundError(
            _backend.MISSING_TENSORFLOW, name="tensorflow"
        ) from error
    value = getattr(module, name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


_backend.register_keras_classes_when_keras_loads(_REGISTERING_MODULE)
