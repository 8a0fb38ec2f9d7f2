"""Recommenders: nearest-neighbour models, interaction data and metrics.

`CosineRecommender` is also exported from the top-level package.
"""

from aiservice_kit.recommenders import interactions
from aiservice_kit.recommenders import metrics
from aiservice_kit.recommenders.cosine import CosineRecommender

__all__ = ["CosineRecommender", "interactions", "metrics"]
