"""Model builders: each returns a Functional, compiled `keras.Model`."""

from aiservice_kit.models.layers import PositionalEmbedding
from aiservice_kit.models.layers import TransformerEncoder
from aiservice_kit.models.sequence import build_lstm
from aiservice_kit.models.text import build_text_classifier
from aiservice_kit.models.vision import build_cnn

__all__ = [
    "PositionalEmbedding",
    "TransformerEncoder",
    "build_cnn",
    "build_lstm",
    "build_text_classifier",
]
