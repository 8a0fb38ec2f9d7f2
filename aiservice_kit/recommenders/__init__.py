"""Recommenders: neighbour and factor models, interaction data, metrics.

`CosineRecommender` is also exported from the top-level package. None of
these import TensorFlow; `MatrixFactorization` loads it in `fit` for its
Keras objectives.
"""

from aiservice_kit.recommenders import interactions
from aiservice_kit.recommenders import metrics
from aiservice_kit.recommenders.cosine import CosineRecommender
from aiservice_kit.recommenders.factorization import MatrixFactorization
from aiservice_kit.recommenders.neighbours import KNNRatingPredictor

__all__ = [
    "CosineRecommender",
    "KNNRatingPredictor",
    "MatrixFactorization",
    "interactions",
    "metrics",
]
