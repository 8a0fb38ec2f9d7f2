"""Model builders: each returns a Functional, compiled `keras.Model`.

`PROBABILITIES`, `PREDICTIONS`, `get_class_names` and `split_text_model`
are the model contract (`models._contract`) that export and training rely
on; a builder of your own meets it by naming its output layer
`PROBABILITIES` or `PREDICTIONS` (checked by
`aiservice_kit.testing.check_builder`).
"""

from aiservice_kit.models._contract import PREDICTIONS
from aiservice_kit.models._contract import PROBABILITIES
from aiservice_kit.models._contract import get_class_names
from aiservice_kit.models._contract import split_text_model
from aiservice_kit.models.layers import PositionalEmbedding
from aiservice_kit.models.layers import TransformerEncoder
from aiservice_kit.models.sequence import build_lstm
from aiservice_kit.models.text import build_text_classifier
from aiservice_kit.models.vision import build_cnn

__all__ = [
    "PREDICTIONS",
    "PROBABILITIES",
    "PositionalEmbedding",
    "TransformerEncoder",
    "build_cnn",
    "build_lstm",
    "build_text_classifier",
    "get_class_names",
    "split_text_model",
]
