"""aiservice_kit: from data to a served Keras model in a few lines.

The public API is listed in `__all__`. Serving is an optional extra,
imported explicitly: `from aiservice_kit.serving import create_app`.
"""

from aiservice_kit import _backend

_backend.check_backend(quiet=_backend.quiet_tensorflow_logs())

from aiservice_kit.distribute import describe_strategy  # noqa: E402
from aiservice_kit.distribute import get_strategy  # noqa: E402
from aiservice_kit.exceptions import ExportError  # noqa: E402
from aiservice_kit.exceptions import ExportMismatchError  # noqa: E402
from aiservice_kit.exceptions import NotFittedError  # noqa: E402
from aiservice_kit.export import ExportReport  # noqa: E402
from aiservice_kit.export import export_onnx  # noqa: E402
from aiservice_kit.export import export_saved_model  # noqa: E402
from aiservice_kit.export import export_tflite  # noqa: E402
from aiservice_kit.export import verify_export  # noqa: E402
from aiservice_kit.models import PositionalEmbedding  # noqa: E402
from aiservice_kit.models import TransformerEncoder  # noqa: E402
from aiservice_kit.models import build_cnn  # noqa: E402
from aiservice_kit.models import build_lstm  # noqa: E402
from aiservice_kit.models import build_text_classifier  # noqa: E402
from aiservice_kit.pipelines import make_dataset  # noqa: E402
from aiservice_kit.recommenders import CosineRecommender  # noqa: E402
from aiservice_kit.training import default_callbacks  # noqa: E402
from aiservice_kit.training import evaluate  # noqa: E402
from aiservice_kit.training import plot_history  # noqa: E402
from aiservice_kit.training import train  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "CosineRecommender",
    "ExportError",
    "ExportMismatchError",
    "ExportReport",
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
    "export_onnx",
    "export_saved_model",
    "export_tflite",
    "get_strategy",
    "make_dataset",
    "plot_history",
    "train",
    "verify_export",
]
