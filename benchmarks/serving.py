"""Serving benchmark: aiservice_kit vs `model.predict` per request vs BentoML.

Serves the same MNIST `build_cnn` model (default architecture, 28x28 uint8
input) several ways, one server at a time on 127.0.0.1, and drives each
with the same asyncio clients at concurrency 1, 8 and 32 (one image per
request, bounded request counts and time):

- `SERVER_ROWS`: `aiservice-kit serve` rows, one line each: (row name,
  extra `serve` arguments). Every row runs with API keys ON, quotas and
  metering ON: the key is on a plan with a rate limit and a monthly quota
  (large enough never to refuse), so every call takes a shared token,
  reserves its instances and settles them with its ledger record in the
  SQLite ledger before its response. The version is exported with LiteRT
  and ONNX artifacts; one row per runtime (`--runtime tensorflow`,
  `litert`, `onnx`: the server proves each equal to the SavedModel before
  it serves on it) and one with `--workers 2`.
- `aiservice_kit_grpc`: the first row's server, called over TF Serving's
  gRPC API (`--grpc-port`, `PredictionServiceStub.Predict` from
  `tensorflow-serving-api`, key as metadata, one channel per client);
  skipped with the reason when `grpc`/`tensorflow_serving` are absent.
- `aiservice_kit mixed`: the first row's settings, plus a recommender, while
  hostile clients run beside the normal ones at concurrency 32: bad JSON,
  a lone surrogate, arrays nested 960 deep, 2,000-instance batches, bodies
  over `--max-body-bytes`, 60,000-row recommender requests, non-ASCII
  version digits, unknown keys, and slow-loris connections sending a header
  line a second. The normal clients' figures are reported with the rest;
  the hostile answers are counted by status (all must be 4xx, the server
  must stay up and `/metrics` must count no 5xx).
- `baseline`: the tutorial server, FastAPI calling `model.predict` on the
  loaded `.keras` model per request.
- `bentoml`: BentoML with adaptive batching (`batchable=True`) calling the
  same SavedModel signature. It runs from a SEPARATE venv
  (`benchmarks/.venv-bentoml`, created with `--setup-bentoml`), never the
  project's `.venv`; it is skipped with the reason when that venv is absent.

With `--postgres`, a `pg 2 replicas` row: two `aiservice-kit serve`
processes on one PostgreSQL database (a throwaway server from
`tests/postgres_server.py`, or `--postgres-url`), the clients split
between them, the same metered plan.

Prints p50/p99 latency and requests/s per server and concurrency, the ratio
to the baseline's throughput, and the acceptance checks (>= 5x the baseline
at concurrency 32, >= 2x BentoML at concurrency 32 with quotas and metering
on, p50 <= 5 ms at concurrency 1, no 5xx under hostile load).

    .venv/bin/python benchmarks/serving.py            # ~6 minutes here
    .venv/bin/python benchmarks/serving.py --quick    # ~3-4 minutes
    .venv/bin/python benchmarks/serving.py --setup-bentoml   # once
    .venv/bin/python benchmarks/serving.py --postgres
"""

import argparse
import asyncio
import collections
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
BENTO_VENV = REPO / "benchmarks" / ".venv-bentoml"
CONCURRENCY = (1, 8, 32)

#: The aiservice_kit server rows: (row name, extra `aiservice-kit serve`
#: arguments). Each runs alone, on the SQLite ledger, keys on, with the
#: metered key (`METERED_CONFIG`). The first row also serves gRPC and sets
#: up the mixed hostile/normal row.
SERVER_ROWS: list[tuple[str, list[str]]] = [
    ("aiservice_kit tensorflow", ["--runtime", "tensorflow"]),
    ("aiservice_kit litert", ["--runtime", "litert"]),
    ("aiservice_kit onnx", ["--runtime", "onnx"]),
    (
        "aiservice_kit litert 2 workers",
        ["--runtime", "litert", "--workers", "2"],
    ),
]

#: The plan of every aiservice_kit row: a rate limit and a monthly quota,
#: so every call takes a shared token, reserves its instances and settles
#: them; large enough that none is refused.
METERED_CONFIG = {
    "plans": {
        "metered": {
            "requests_per_second": 1_000_000,
            "burst": 1_000_000,
            "monthly_instances": 1_000_000_000,
        }
    }
}

#: Requests per second of each hostile kind in the mixed row (paced, so
#: the row measures normal clients beside a steady stream of bad calls,
#: not a flood that only measures the CPU left over).
HOSTILE_RATE = 20

#: Slow-loris connections of the mixed row (each sends a header line a
#: second until the server's header timeout answers 408).
SLOW_LORIS = 16

BASELINE_APP = """
import os
import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

# The builders' model class is registered when aiservice_kit loads it.
from aiservice_kit.export import load_model

model = load_model(os.environ["MODEL_PATH"])
app = FastAPI()


class PredictRequest(BaseModel):
    instances: list


@app.get("/readyz")
def ready():
    return {"status": "ready"}


@app.post("/v1/models/mnist:predict")
def predict(request: PredictRequest):
    x = np.array(request.instances, dtype="float32")
    return {"predictions": model.predict(x, verbose=0).tolist()}
"""

BENTO_SERVICE = """
import os
import bentoml
import numpy as np
import tensorflow as tf


@bentoml.service(workers=1)
class Mnist:
    def __init__(self):
        loaded = tf.saved_model.load(os.environ["MODEL_PATH"])
        self.fn = loaded.signatures["serving_default"]

    @bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=10000)
    def predict(self, instances: np.ndarray) -> np.ndarray:
        outputs = self.fn(image=tf.constant(instances.astype(np.uint8)))
        return outputs["probabilities"].numpy()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command, cwd, env, ready_url, log_path, timeout=180):
    log = open(log_path, "wb")  # noqa: SIM115 - closed by stop()
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{command[0]} exited:\n" + Path(log_path).read_text()[-3000:]
            )
        try:
            if httpx.get(ready_url, timeout=2).status_code == 200:
                return process, log
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    stop((process, log))
    raise RuntimeError("server not ready:\n" + Path(log_path).read_text())


def stop(handle) -> None:
    process, log = handle
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    log.close()


class _Connection:
    """One keep-alive HTTP/1.1 connection on raw asyncio streams.

    A light client (httpx's async pool costs more CPU per call than the
    servers under test on a 2-core machine), the same for every server.
    """

    def __init__(self, host, port, path, body, headers, length=None):
        head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        length = len(body) if length is None else length
        head += [f"Content-Length: {length}", "", ""]
        self.request = "\r\n".join(head).encode() + body
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def call(self):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(
                self.host, self.port
            )
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if "content-length" in fields:
            await self.reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding") == "chunked":
            while True:
                size = int((await self.reader.readline()).strip(), 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        if fields.get("connection") == "close":
            self.close()
        return status

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


async def drive(url, body, headers, concurrency, requests, max_seconds):
    """`concurrency` clients send `requests` calls in all (or stop at time).

    `url` may be a list: the clients are spread over the URLs (replicas).
    """
    urls = [httpx.URL(u) for u in ([url] if isinstance(url, str) else url)]
    latencies: list[float] = []
    errors = 0
    remaining = requests
    deadline = time.perf_counter() + max_seconds

    async def worker(parsed):
        nonlocal remaining, errors
        connection = _Connection(
            parsed.host, parsed.port, parsed.raw_path.decode(), body, headers
        )
        try:
            while remaining > 0 and time.perf_counter() < deadline:
                remaining -= 1
                started = time.perf_counter()
                status = await connection.call()
                if status == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1
        finally:
            connection.close()

    began = time.perf_counter()
    await asyncio.gather(
        *(worker(urls[i % len(urls)]) for i in range(concurrency))
    )
    elapsed = time.perf_counter() - began
    lat = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
    }


async def drive_grpc(
    address, request, metadata, concurrency, requests, seconds
):
    """`drive` for gRPC: `concurrency` clients, one channel each."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    latencies: list[float] = []
    errors = 0
    remaining = requests
    deadline = time.perf_counter() + seconds

    async def worker():
        nonlocal remaining, errors
        async with grpc.aio.insecure_channel(address) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            while remaining > 0 and time.perf_counter() < deadline:
                remaining -= 1
                started = time.perf_counter()
                try:
                    await stub.Predict(request, metadata=metadata, timeout=60)
                except grpc.aio.AioRpcError:
                    errors += 1
                else:
                    latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    lat = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
    }


def bench_grpc(name, address, key, images, counts, max_seconds):
    """`bench` over gRPC Predict (asyncio's loop: grpc.aio's own)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist"
    request.inputs["image"].CopyFrom(
        tf.make_tensor_proto(images.astype("uint8"))
    )
    metadata = (("authorization", f"Bearer {key}"),)
    asyncio.run(drive_grpc(address, request, metadata, 4, 40, 30))  # warm-up
    results = {}
    for concurrency in CONCURRENCY:
        results[concurrency] = r = asyncio.run(
            drive_grpc(
                address,
                request,
                metadata,
                concurrency,
                counts[concurrency],
                max_seconds,
            )
        )
        print(
            f"  {name:14s} c={concurrency:<3d} {r['rps']:8.1f} req/s  "
            f"p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms",
            flush=True,
        )
    return results


def _grpc_missing() -> str | None:
    try:
        import grpc  # noqa: F401
        from tensorflow_serving.apis import predict_pb2  # noqa: F401
    except ImportError as error:
        return (
            f"skipped: {error}; install the grpc extra and "
            "`pip install --no-deps tensorflow-serving-api`"
        )
    return None


def _run(coroutine):
    try:
        import uvloop

        return uvloop.run(coroutine)
    except ImportError:
        return asyncio.run(coroutine)


def bench(name, url, headers, body, counts, max_seconds):
    results = {}
    headers = {"Content-Type": "application/json", **headers}
    _run(drive(url, body, headers, 4, 40, 30))  # warm-up
    for concurrency in CONCURRENCY:
        results[concurrency] = _run(
            drive(
                url,
                body,
                headers,
                concurrency,
                counts[concurrency],
                max_seconds,
            )
        )
        r = results[concurrency]
        print(
            f"  {name:14s} c={concurrency:<3d} {r['rps']:8.1f} req/s  "
            f"p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms",
            flush=True,
        )
    return results


def serve_ours(work, name, db, config, extra=(), models=None):
    """Starts `aiservice-kit serve` on `db`; returns (handle, port).

    Args:
        work: Path. The benchmark's folder (logs go there).
        name: str. The row's name, for the log file.
        db: Path or str. The ledger (SQLite file or PostgreSQL URL).
        config: Path. The config file with the metered plan.
        extra: list of str. More `serve` arguments (a row's flags).
        models: dict or None. name -> base path; default: mnist only.
    """
    port = free_port()
    models = models or {"mnist": work / "mnist"}
    command = [sys.executable, "-m", "aiservice_kit.cli", "serve"]
    for model, path in models.items():
        command += ["--model", f"{model}={path}"]
    command += ["--port", str(port), "--db", str(db), "--auth", "on"]
    command += ["--config", str(config), "--access-log", "off"]
    command += ["--log-level", "warning", *extra]
    slug = "".join(c if c.isalnum() else "-" for c in name)
    handle = start(
        command,
        REPO,
        {},
        f"http://127.0.0.1:{port}/readyz",
        work / f"{slug}.log",
    )
    return handle, port


def _deep(depth: int, leaf: bytes) -> bytes:
    return b'{"instances": ' + b"[" * depth + leaf + b"]" * depth + b"}"


def hostile_requests(key, normal_body):
    """Kind -> (path, body, headers, declared length or None)."""
    auth = {
        "Authorization": f"Bearer {key}",
        "Content-Type": "application/json",
    }
    mnist = "/v1/models/mnist:predict"
    rows = json.dumps({"inputs": {"item_ids": [["-1"]] * 60000}}).encode()
    return {
        "bad JSON": (mnist, b'{"instances": [[1, 2', auth, None),
        "lone surrogate": (mnist, b'{"instances": ["\\ud800"]}', auth, None),
        "nested 960 deep": (mnist, _deep(960, b"1"), auth, None),
        "2,000 instances": (
            mnist,
            json.dumps({"instances": [0] * 2000}).encode(),
            auth,
            None,
        ),
        "body over the limit": (mnist, b"", auth, 17 * 1024 * 1024),
        "60,000 recommender rows": (
            "/v1/models/recommender:predict",
            rows,
            auth,
            None,
        ),
        "version digits '²'": (
            "/v1/models/mnist/versions/%C2%B2:predict",
            normal_body,
            auth,
            None,
        ),
        "unknown key": (
            mnist,
            normal_body,
            {**auth, "Authorization": "Bearer ask_000000000000_forged"},
            None,
        ),
    }


async def _hostile(parsed, kind, request, stop, statuses):
    """One kind of hostile request, HOSTILE_RATE a second, until `stop`."""
    path, body, headers, length = request
    connection = None
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    while not stop.is_set():
        next_at += 1 / HOSTILE_RATE
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        if connection is None:
            connection = _Connection(
                parsed.host, parsed.port, path, body, headers, length
            )
        try:
            status = await connection.call()
        except (asyncio.IncompleteReadError, ConnectionError):
            statuses[kind]["closed without an answer"] += 1
            connection.close()
            connection = None
            continue
        statuses[kind][status] += 1
        if length is not None:  # the body was never sent: a new connection
            connection.close()
            connection = None
    if connection is not None:
        connection.close()


async def _slow_loris(parsed, stop, statuses):
    """A header line a second, until the server answers or `stop`."""
    kind = "slow-loris headers"
    while not stop.is_set():
        reader, writer = await asyncio.open_connection(parsed.host, parsed.port)
        writer.write(b"POST /v1/models/mnist:predict HTTP/1.1\r\nHost: x\r\n")
        try:
            while not stop.is_set():
                try:
                    head = await asyncio.wait_for(
                        reader.readuntil(b"\r\n\r\n"), 1.0
                    )
                except TimeoutError:
                    writer.write(b"X-Slow: 1\r\n")
                    continue
                statuses[kind][int(head.split()[1])] += 1
                break
        except (asyncio.IncompleteReadError, ConnectionError):
            statuses[kind]["closed without an answer"] += 1
        finally:
            writer.close()


async def drive_mixed(url, body, headers, requests, max_seconds, hostile):
    """`drive` at concurrency 32 with hostile clients beside it."""
    parsed = httpx.URL(url)
    stop = asyncio.Event()
    statuses = collections.defaultdict(collections.Counter)
    tasks = [
        asyncio.ensure_future(_hostile(parsed, kind, request, stop, statuses))
        for kind, request in hostile.items()
    ]
    tasks += [
        asyncio.ensure_future(_slow_loris(parsed, stop, statuses))
        for _ in range(SLOW_LORIS)
    ]
    await asyncio.sleep(0.5)  # the hostile clients are running
    began = time.perf_counter()
    result = await drive(url, body, headers, 32, requests, max_seconds)
    result["seconds"] = time.perf_counter() - began
    stop.set()
    await asyncio.gather(*tasks)
    return result, {kind: dict(counts) for kind, counts in statuses.items()}


def bench_mixed(work, db, config, extra, key, admin, body, seconds):
    """The mixed row, `seconds` long: (result at c=32, hostile statuses).

    Time-bound rather than a request count, so the slow-loris connections
    reach the server's header timeout (10 s) within the window.
    """
    from aiservice_kit.recommenders import CosineRecommender

    users = ["u1", "u1", "u2", "u2", "u3", "u3", "u4"]
    items = ["a", "b", "a", "c", "b", "c", "d"]
    recommender = CosineRecommender(n_neighbors=3).fit((users, items))
    recommender.export(work / "recommender", 1, top_k=2)
    models = {"mnist": work / "mnist", "recommender": work / "recommender"}
    handle, port = serve_ours(work, "mixed", db, config, extra, models)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    try:
        _run(drive(base + "/v1/models/mnist:predict", body,
                   {"Content-Type": "application/json", **headers}, 4, 40,
                   30))  # fmt: skip
        result, statuses = _run(
            drive_mixed(
                base + "/v1/models/mnist:predict",
                body,
                {"Content-Type": "application/json", **headers},
                10**9,
                seconds,
                hostile_requests(key, body),
            )
        )
        alive = httpx.get(base + "/healthz", timeout=10).status_code == 200
        metrics = httpx.get(
            base + "/metrics",
            headers={"Authorization": f"Bearer {admin}"},
            timeout=10,
        ).text
    finally:
        stop(handle)
    counted_5xx = [
        line
        for line in metrics.splitlines()
        if line.startswith("aiservice_kit_predict_errors_total")
        and 'status="5' in line
    ]
    r = result
    print(
        f"  {'mixed':14s} c=32  {r['rps']:8.1f} req/s  "
        f"p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  "
        f"(normal clients; {r['errors']} failed)",
        flush=True,
    )
    return result, statuses, alive, counted_5xx


def bench_postgres(work, config, body, counts, max_seconds, postgres_url):
    """The `--postgres` row: two replicas on one PostgreSQL database."""
    from aiservice_kit.serving import KeyStore

    store = KeyStore(postgres_url)
    key = store.create("bench-pg", "metered")[0]
    store.close()
    handles, urls = [], []
    try:
        for index in range(2):
            handle, port = serve_ours(work, f"pg{index}", postgres_url, config)
            handles.append(handle)
            urls.append(f"http://127.0.0.1:{port}/v1/models/mnist:predict")
        return bench(
            "pg 2 replicas",
            urls,
            {"Authorization": f"Bearer {key}"},
            body,
            counts,
            max_seconds,
        )
    finally:
        for handle in handles:
            stop(handle)


def setup_bentoml() -> None:
    """Creates benchmarks/.venv-bentoml with BentoML and the same TF/Keras."""
    import keras
    import tensorflow as tf

    subprocess.run([sys.executable, "-m", "venv", str(BENTO_VENV)], check=True)
    subprocess.run(
        [
            str(BENTO_VENV / "bin" / "pip"),
            "install",
            "bentoml>=1.4",
            f"tensorflow-cpu=={tf.__version__}",
            f"keras=={keras.__version__}",
        ],
        check=True,
    )


def _start_bentoml(work, version_dir):
    """(handle, port), or (None, why not)."""
    bentoml_bin = BENTO_VENV / "bin" / "bentoml"
    if not bentoml_bin.exists():
        return None, (
            f"skipped: {BENTO_VENV.relative_to(REPO)} not found; run "
            "`python benchmarks/serving.py --setup-bentoml` once"
        )
    (work / "service.py").write_text(BENTO_SERVICE)
    port = free_port()
    try:
        handle = start(
            [str(bentoml_bin), "serve", "service:Mnist", "--port", str(port)],
            work,
            {"MODEL_PATH": str(version_dir), "BENTOML_DO_NOT_TRACK": "true"},
            f"http://127.0.0.1:{port}/readyz",
            work / "bentoml.log",
        )
    except RuntimeError as error:
        return None, f"failed to start: {str(error)[-300:]}"
    return handle, port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls")
    parser.add_argument(
        "--setup-bentoml",
        action="store_true",
        help=f"create {BENTO_VENV.relative_to(REPO)} and exit",
    )
    parser.add_argument(
        "--skip-bentoml", action="store_true", help="no BentoML row"
    )
    parser.add_argument(
        "--skip-mixed", action="store_true", help="no hostile/normal row"
    )
    parser.add_argument("--json", type=Path, help="also write results here")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="add a two-replica PostgreSQL row",
    )
    parser.add_argument(
        "--postgres-url",
        help="the PostgreSQL database for --postgres (default: a "
        "throwaway server started from tests/postgres_server.py)",
    )
    args = parser.parse_args()
    if args.setup_bentoml:
        setup_bentoml()
        return 0

    import keras

    from aiservice_kit import build_cnn
    from aiservice_kit.export import export_saved_model
    from aiservice_kit.serving import KeyStore

    if args.quick:
        counts, max_seconds = {1: 100, 8: 200, 32: 400}, 10
    else:
        counts, max_seconds = {1: 300, 8: 600, 32: 1200}, 20
    work = Path(tempfile.mkdtemp(prefix="serving-bench-"))
    keras.utils.set_random_seed(0)
    model = build_cnn((28, 28), num_classes=10)
    model.save(work / "mnist.keras")
    # The converted artifacts ride in the version (the server proves them
    # equal to the SavedModel before a row runs on them).
    version_dir = export_saved_model(
        model, work / "mnist", runtimes=("litert", "onnx")
    )
    images = np.random.default_rng(0).integers(0, 256, (1, 28, 28))
    body = json.dumps({"instances": images.tolist()}).encode()
    config = work / "metered.json"
    config.write_text(json.dumps(METERED_CONFIG))
    db = work / "service.db"
    store = KeyStore(db)
    key = store.create("bench", "metered")[0]
    admin = store.create("prometheus", "metered", scopes=["admin"])[0]
    store.close()
    auth = {"Authorization": f"Bearer {key}"}
    print(
        f"MNIST build_cnn ({model.count_params():,} params), one 28x28 image "
        f"per request, {os.cpu_count()} CPUs, requests per level: {counts}; "
        f"aiservice_kit rows on plan {METERED_CONFIG['plans']['metered']}"
    )
    results = {}
    grpc_note = _grpc_missing()

    for index, (name, extra) in enumerate(SERVER_ROWS):
        grpc = []
        if index == 0 and not grpc_note:
            grpc = ["--grpc-port", str(grpc_port := free_port())]
        handle, port = serve_ours(work, name, db, config, [*extra, *grpc])
        try:
            results[name] = bench(
                name,
                f"http://127.0.0.1:{port}/v1/models/mnist:predict",
                auth,
                body,
                counts,
                max_seconds,
            )
            if grpc:
                results["aiservice_kit_grpc"] = bench_grpc(
                    "aiservice_kit_grpc",
                    f"127.0.0.1:{grpc_port}",
                    key,
                    images,
                    counts,
                    max_seconds,
                )
        finally:
            stop(handle)

    mixed = None
    if not args.skip_mixed:
        result, statuses, alive, counted_5xx = bench_mixed(
            work,
            db,
            config,
            SERVER_ROWS[0][1],
            key,
            admin,
            body,
            max(max_seconds, 15),
        )
        results["aiservice_kit mixed"] = {32: result}
        mixed = {"hostile": statuses, "alive": alive, "5xx": counted_5xx}

    (work / "baseline_app.py").write_text(BASELINE_APP)
    port = free_port()
    handle = start(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "baseline_app:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        work,
        {"MODEL_PATH": str(work / "mnist.keras")},
        f"http://127.0.0.1:{port}/readyz",
        work / "baseline.log",
    )
    try:
        results["baseline"] = bench(
            "baseline",
            f"http://127.0.0.1:{port}/v1/models/mnist:predict",
            {},
            body,
            counts,
            max_seconds,
        )
    finally:
        stop(handle)

    if args.postgres:
        if args.postgres_url:
            results["pg 2 replicas"] = bench_postgres(
                work, config, body, counts, max_seconds, args.postgres_url
            )
        else:
            sys.path.insert(0, str(REPO / "tests"))
            from postgres_server import postgres_server

            with postgres_server() as url:
                results["pg 2 replicas"] = bench_postgres(
                    work, config, body, counts, max_seconds, url
                )

    bento_note = None
    if args.skip_bentoml:
        bento_note = "skipped (--skip-bentoml)"
    else:
        handle, port = _start_bentoml(work, version_dir)
        if handle is None:
            bento_note = port
        else:
            try:
                results["bentoml"] = bench(
                    "bentoml",
                    f"http://127.0.0.1:{port}/predict",
                    {},
                    body,
                    counts,
                    max_seconds,
                )
            finally:
                stop(handle)

    return report(results, mixed, bento_note, grpc_note, args.json)


def report(results, mixed, bento_note, grpc_note, json_path) -> int:
    """Prints the table and the checks; returns the exit status."""
    base = results["baseline"]
    print()
    print(
        "| server | concurrency | requests | failed | req/s | p50 ms "
        "| p99 ms | x baseline req/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, per_level in results.items():
        for concurrency, r in per_level.items():
            ratio = r["rps"] / base[concurrency]["rps"]
            print(
                f"| {name} | {concurrency} | {r['requests']} | {r['errors']} "
                f"| {r['rps']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
                f"| {ratio:.1f}x |"
            )
    if bento_note:
        print(f"\nBentoML: {bento_note}")
    if grpc_note:
        print(f"\ngRPC: {grpc_note}")
    else:
        print()
        for concurrency in CONCURRENCY:
            ratio = (
                results["aiservice_kit_grpc"][concurrency]["rps"]
                / results[SERVER_ROWS[0][0]][concurrency]["rps"]
            )
            print(f"gRPC / REST throughput at c={concurrency}: {ratio:.2f}x")
    rows = [name for name, _ in SERVER_ROWS if name in results]
    best = max(rows, key=lambda name: results[name][32]["rps"])
    ours = results[best]
    print(f"\nFastest aiservice_kit row at c=32: {best}")
    speedup = ours[32]["rps"] / base[32]["rps"]
    checks = [
        (f"throughput at c=32 >= 5x baseline ({speedup:.1f}x)", speedup >= 5),
        (
            f"p50 at c=1 <= 5 ms ({ours[1]['p50_ms']:.2f} ms)",
            ours[1]["p50_ms"] <= 5,
        ),
    ]
    if "bentoml" in results:
        ratio = ours[32]["rps"] / results["bentoml"][32]["rps"]
        print(
            f"aiservice_kit (quotas, metering) / BentoML at c=32: {ratio:.2f}x"
        )
        checks.append(
            (
                "throughput at c=32 >= 2x BentoML's with quotas and metering "
                f"on ({ratio:.2f}x)",
                ratio >= 2,
            )
        )
        checks.append(
            (
                f"fast path: throughput at c=32 >= 4x BentoML's ({ratio:.2f}x)",
                ratio >= 4,
            )
        )
    fastest_c1 = min(rows, key=lambda name: results[name][1]["p50_ms"])
    p50_c1 = results[fastest_c1][1]["p50_ms"]
    tail = ours[32]["p99_ms"] / ours[32]["p50_ms"]
    failed = sum(r["errors"] for name in rows for r in results[name].values())
    checks += [
        (
            f"fast path: p50 at c=1 <= 1.0 ms ({p50_c1:.2f} ms, {fastest_c1})",
            p50_c1 <= 1.0,
        ),
        (f"fast path: p99 at c=32 <= 3x its p50 ({tail:.1f}x)", tail <= 3),
        (f"no failed request in the server rows ({failed})", failed == 0),
    ]
    if mixed is not None:
        print("\nHostile clients beside the normal ones (answers by status):")
        print("\n| hostile request | answers |\n|---|---|")
        wrong = 0
        for kind, counts in mixed["hostile"].items():
            text = ", ".join(f"{n} x {status}" for status, n in counts.items())
            print(f"| {kind} | {text} |")
            wrong += sum(
                n
                for status, n in counts.items()
                if not (isinstance(status, int) and 400 <= status < 500)
            )
        clean = results[SERVER_ROWS[0][0]][32]["rps"]
        loaded = results["aiservice_kit mixed"][32]
        sent = sum(sum(c.values()) for c in mixed["hostile"].values())
        print(
            f"normal clients' throughput beside {sent} hostile answers "
            f"({HOSTILE_RATE}/s per kind, {SLOW_LORIS} slow-loris "
            f"connections) in ~{loaded['seconds']:.0f} s: "
            f"{loaded['rps']:.1f} req/s, {loaded['rps'] / clean:.2f}x the "
            "clean c=32 row"
        )
        checks.append(
            (f"every hostile answer is a 4xx ({wrong} not)", not wrong)
        )
        checks.append(
            (f"server alive after ({mixed['alive']})", mixed["alive"])
        )
        checks.append(
            (
                f"/metrics counts no 5xx ({len(mixed['5xx'])} lines)",
                not mixed["5xx"],
            )
        )
    errors = sum(r["errors"] for per in results.values() for r in per.values())
    checks.append((f"no failed normal requests ({errors})", errors == 0))
    print()
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    if json_path:
        json_path.write_text(
            json.dumps(
                {
                    "results": results,
                    "mixed": mixed,
                    "bentoml": bento_note,
                    "grpc": grpc_note,
                },
                indent=2,
                default=str,
            )
        )
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
