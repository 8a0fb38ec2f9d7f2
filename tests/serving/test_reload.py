"""Hot reload under load: a new version switches in with zero failures."""

import threading
import time

import httpx
import numpy as np
import pytest
from serving_helpers import Server
from serving_helpers import export_cnn
from serving_helpers import run_signature

MAX_REQUESTS = 1500
MAX_SECONDS = 90


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    base = tmp_path_factory.mktemp("reload") / "mnist"
    export_cnn(base, 1, seed=11)
    return base


@pytest.fixture(scope="module")
def server(base, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reload-server")
    args = ["--model", f"mnist={base}", "--db", str(tmp / "db.sqlite")]
    args += ["--poll-interval", "0.2", "--keep-versions", "1"]
    running = Server(args, tmp / "server.log").start()
    yield running
    running.stop()


def test_new_version_switches_in_under_load_with_zero_errors(server, base):
    images = np.random.default_rng(0).integers(0, 256, (2, 28, 28))
    body = {"instances": images.tolist()}
    results = []
    stop = threading.Event()

    def load():
        with httpx.Client(base_url=server.url, timeout=30) as client:
            deadline = time.monotonic() + MAX_SECONDS
            while not stop.is_set() and time.monotonic() < deadline:
                if len(results) >= MAX_REQUESTS:
                    break
                response = client.post("/v1/models/mnist:predict", json=body)
                results.append(
                    (
                        response.status_code,
                        response.headers.get("x-model-version"),
                        response.content,
                    )
                )

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    while len(results) < 50:
        time.sleep(0.05)
    version_two = export_cnn(base, 2, seed=22)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if sum(1 for r in results[-20:] if r[1] == "2") == 20:
            break
        time.sleep(0.1)
    stop.set()
    for worker in workers:
        worker.join()

    assert [r for r in results if r[0] != 200] == []
    versions = [r[1] for r in results]
    assert versions[0] == "1" and versions[-1] == "2"
    assert versions.count("1") >= 50 and versions.count("2") >= 20
    expected = run_signature(version_two, image=images.astype("uint8"))
    answer = httpx.post(server.url + "/v1/models/mnist:predict", json=body)
    np.testing.assert_allclose(
        answer.json()["predictions"],
        expected["probabilities"],
        rtol=1e-5,
    )
    status = httpx.get(server.url + "/v1/models/mnist").json()
    assert [row["version"] for row in status["model_version_status"]] == ["2"]


def test_a_version_that_fails_to_load_is_reported_and_2_keeps_serving(
    server, base
):
    broken = base / ".tmp-3-broken"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    broken.rename(base / "3")

    deadline = time.monotonic() + 30
    rows = []
    while time.monotonic() < deadline:
        status = httpx.get(server.url + "/v1/models/mnist").json()
        rows = status["model_version_status"]
        if any(row["version"] == "3" for row in rows):
            break
        time.sleep(0.2)

    failed = next(row for row in rows if row["version"] == "3")
    assert failed["state"] == "END"
    assert failed["status"]["error_code"] == "UNKNOWN"
    assert "Failed to load" in failed["status"]["error_message"]
    images = np.zeros((1, 28, 28), dtype=int).tolist()
    response = httpx.post(
        server.url + "/v1/models/mnist:predict", json={"instances": images}
    )
    assert response.status_code == 200
    assert response.headers["x-model-version"] == "2"
    assert httpx.get(server.url + "/readyz").status_code == 200
    assert "version 3 failed to load" in server.log()
