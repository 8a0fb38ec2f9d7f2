"""An exported MatrixFactorization served over REST by the real server."""

import httpx
import numpy as np
from serving_helpers import Server

from aiservice_kit import MatrixFactorization
from aiservice_kit._layout import RATING_SIGNATURE
from aiservice_kit.recommenders import interactions


def test_served_top_k_and_ratings_equal_the_python_object(tmp_path):
    rng = np.random.default_rng(5)
    n = 600
    ratings = interactions.Ratings(
        np.array([f"user-{u}" for u in rng.integers(0, 30, n)]),
        np.array([f"item-{i}" for i in rng.zipf(1.4, n) % 50]),
        rng.integers(1, 6, n).astype(np.float32),
    )
    model = MatrixFactorization(
        n_factors=4, epochs=3, batch_size=128, rating_scale=(1, 5)
    ).fit(ratings)
    model.export(tmp_path / "mf", top_k=5)
    args = ["--host", "127.0.0.1", "--model", f"mf={tmp_path / 'mf'}"]
    args += ["--db", str(tmp_path / "db.sqlite")]
    server = Server(args, tmp_path / "server.log").start()
    try:
        users = ["user-1", "user-2", "stranger"]
        with httpx.Client(base_url=server.url, timeout=60) as http:
            top = http.post(
                "/v1/models/mf:predict",
                json={
                    "inputs": {
                        "user_ids": users,
                        "item_ids": [[""], [""], [""]],
                    }
                },
            )
            rated = http.post(
                "/v1/models/mf:predict",
                json={
                    "signature_name": RATING_SIGNATURE,
                    "inputs": {
                        "user_ids": users,
                        "item_ids": ["item-1", "item-2", "item-3"],
                    },
                },
            )
    finally:
        server.stop()
    assert top.status_code == 200, top.text
    outputs = top.json()["outputs"]
    want_ids, want_scores = model.recommend(users, top_k=5)
    assert outputs["item_ids"] == want_ids.tolist()
    # The stranger is back-filled by popularity: NaN scores, as served
    # by TF Serving's JSON (a bare NaN).
    np.testing.assert_allclose(
        np.array(outputs["scores"], np.float64), want_scores, rtol=1e-5
    )
    assert rated.status_code == 200, rated.text
    np.testing.assert_allclose(
        rated.json()["outputs"],
        model.predict(
            users, ["item-1", "item-2", "item-3"], unknown="baseline"
        ),
        rtol=1e-6,
    )
