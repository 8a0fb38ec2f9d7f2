"""Session fixtures for the serving tests: the exported models."""

import json
from pathlib import Path

import pytest
from serving_helpers import CONFIG
from serving_helpers import export_bytes_echo
from serving_helpers import export_cnn
from serving_helpers import export_half_plus_three
from serving_helpers import export_multi_input
from serving_helpers import export_recommender
from serving_helpers import export_text_classifier


@pytest.fixture(scope="session")
def model_root(tmp_path_factory) -> Path:
    """Every served model, exported once per session."""
    root = tmp_path_factory.mktemp("models")
    export_cnn(root / "mnist", 1, seed=1)
    export_cnn(root / "mnist", 2, seed=2)
    export_half_plus_three(root / "half_plus_three")
    export_multi_input(root / "multi")
    export_bytes_echo(root / "echo")
    export_text_classifier(root / "text")
    export_recommender(root / "recommender")
    (root / "config.json").write_text(json.dumps(CONFIG))
    return root
