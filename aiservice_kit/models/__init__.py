"""Model builders: each returns a Functional, compiled `keras.Model`."""

from aiservice_kit.models.vision import build_cnn

__all__ = ["build_cnn"]
