"""aiservice_kit: from data to a served Keras model in a few lines.

The public API is listed in `__all__`. Serving is an optional extra,
imported explicitly: `from aiservice_kit.serving import create_app`.
"""

from aiservice_kit import _backend

_backend.check_backend(quiet=_backend.quiet_tensorflow_logs())

from aiservice_kit.exceptions import ExportError  # noqa: E402
from aiservice_kit.exceptions import ExportMismatchError  # noqa: E402
from aiservice_kit.exceptions import NotFittedError  # noqa: E402
from aiservice_kit.models import build_cnn  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "ExportError",
    "ExportMismatchError",
    "NotFittedError",
    "__version__",
    "build_cnn",
]
