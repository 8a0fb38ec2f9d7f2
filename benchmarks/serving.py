"""Serving benchmark: aiservice_kit vs `model.predict` per request vs BentoML.

Serves the same MNIST `build_cnn` model (default architecture, 28x28 uint8
input) three ways, one server at a time on 127.0.0.1, and drives each with
the same asyncio/httpx clients at concurrency 1, 8 and 32 (one image per
request, bounded request counts and time):

- `aiservice_kit`: `aiservice-kit serve` with API keys ON and every call
  metered in the SQLite ledger before its response (the full product path),
  dynamic batching on the SavedModel signature.
- `aiservice_kit_grpc`: the same server process, called over TF Serving's
  gRPC API (`--grpc-port`, `PredictionServiceStub.Predict` from
  `tensorflow-serving-api`, key as metadata, one channel per client);
  skipped with the reason when `grpc`/`tensorflow_serving` are absent.
- `baseline`: the tutorial server, FastAPI calling `model.predict` on the
  loaded `.keras` model per request.
- `bentoml`: BentoML with adaptive batching (`batchable=True`) calling the
  same SavedModel signature. It runs from a SEPARATE venv
  (`benchmarks/.venv-bentoml`, created with `--setup-bentoml`), never the
  project's `.venv`; it is skipped with the reason when that venv is absent.

With `--postgres`, two more rows, for a key on a plan with a rate limit and
a monthly quota (so every call takes a shared token, reserves its instances
and settles them with its ledger record):

- `sqlite quota`: one `aiservice-kit serve` on a SQLite file.
- `pg 2 replicas`: two `aiservice-kit serve` processes on one PostgreSQL
  database (a throwaway server from `tests/postgres_server.py`, or
  `--postgres-url`), the clients split between them.

Prints p50/p99 latency and requests/s per server and concurrency, the ratio
to the baseline's throughput, and the acceptance checks (>= 5x the baseline
at concurrency 32, p50 <= 5 ms at concurrency 1).

    .venv/bin/python benchmarks/serving.py            # ~3-4 minutes here
    .venv/bin/python benchmarks/serving.py --quick    # ~1-2 minutes
    .venv/bin/python benchmarks/serving.py --setup-bentoml   # once
    .venv/bin/python benchmarks/serving.py --skip-bentoml --postgres
"""

import argparse
import asyncio
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

BASELINE_APP = """
import os
import keras
import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

model = keras.saving.load_model(os.environ["MODEL_PATH"])
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

    def __init__(self, host, port, path, body, headers):
        head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        head += [f"Content-Length: {len(body)}", "", ""]
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


def serve_ours(work, name, db, config=None):
    """Starts `aiservice-kit serve` on `db`; returns (handle, port)."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "aiservice_kit.cli",
        "serve",
        "--model",
        f"mnist={work / 'mnist'}",
        "--port",
        str(port),
        "--db",
        str(db),
        "--auth",
        "on",
        "--access-log",
        "off",
        "--log-level",
        "warning",
    ]
    if config is not None:
        command += ["--config", str(config)]
    handle = start(
        command,
        REPO,
        {},
        f"http://127.0.0.1:{port}/readyz",
        work / f"{name}.log",
    )
    return handle, port


#: The plan of the `--postgres` rows: every shared check runs, none refuses.
METERED_CONFIG = {
    "plans": {
        "metered": {
            "requests_per_second": 1_000_000,
            "burst": 1_000_000,
            "monthly_instances": 1_000_000_000,
        }
    }
}


def bench_shared(work, body, counts, max_seconds, postgres_url):
    """The `--postgres` rows: SQLite, one replica; PostgreSQL, two."""
    from aiservice_kit.serving import KeyStore

    config = work / "metered.json"
    config.write_text(json.dumps(METERED_CONFIG))
    results = {}
    for name, db, replicas in (
        ("sqlite quota", work / "metered.db", 1),
        ("pg 2 replicas", postgres_url, 2),
    ):
        store = KeyStore(db)
        key = store.create(f"bench-{replicas}", "metered")[0]
        store.close()
        handles, urls = [], []
        try:
            for index in range(replicas):
                handle, port = serve_ours(
                    work, f"{name.split()[0]}{index}", db, config
                )
                handles.append(handle)
                urls.append(f"http://127.0.0.1:{port}/v1/models/mnist:predict")
            results[name] = bench(
                name,
                urls,
                {"Authorization": f"Bearer {key}"},
                body,
                counts,
                max_seconds,
            )
        finally:
            for handle in handles:
                stop(handle)
    return results


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls")
    parser.add_argument(
        "--setup-bentoml",
        action="store_true",
        help=f"create {BENTO_VENV.relative_to(REPO)} and exit",
    )
    parser.add_argument(
        "--skip-bentoml", action="store_true", help="only ours vs baseline"
    )
    parser.add_argument("--json", type=Path, help="also write results here")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="add a metered SQLite row and a two-replica PostgreSQL row",
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
    version_dir = export_saved_model(model, work / "mnist")
    images = np.random.default_rng(0).integers(0, 256, (1, 28, 28))
    body = json.dumps({"instances": images.tolist()}).encode()
    store = KeyStore(work / "service.db")
    key = store.create("bench", "unlimited")[0]
    store.close()
    print(
        f"MNIST build_cnn ({model.count_params():,} params), one 28x28 image "
        f"per request, {os.cpu_count()} CPUs, requests per level: {counts}"
    )
    results = {}
    grpc_note = _grpc_missing()
    grpc_args = (
        [] if grpc_note else ["--grpc-port", str(grpc_port := free_port())]
    )

    port = free_port()
    handle = start(
        [
            sys.executable,
            "-m",
            "aiservice_kit.cli",
            "serve",
            "--model",
            f"mnist={work / 'mnist'}",
            "--port",
            str(port),
            *grpc_args,
            "--db",
            str(work / "service.db"),
            "--auth",
            "on",
            "--access-log",
            "off",
            "--log-level",
            "warning",
        ],
        REPO,
        {},
        f"http://127.0.0.1:{port}/readyz",
        work / "ours.log",
    )
    try:
        results["aiservice_kit"] = bench(
            "aiservice_kit",
            f"http://127.0.0.1:{port}/v1/models/mnist:predict",
            {"Authorization": f"Bearer {key}"},
            body,
            counts,
            max_seconds,
        )
        if not grpc_note:
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
            results.update(
                bench_shared(work, body, counts, max_seconds, args.postgres_url)
            )
        else:
            sys.path.insert(0, str(REPO / "tests"))
            from postgres_server import postgres_server

            with postgres_server() as url:
                results.update(
                    bench_shared(work, body, counts, max_seconds, url)
                )

    bento_note = None
    bentoml_bin = BENTO_VENV / "bin" / "bentoml"
    if args.skip_bentoml:
        bento_note = "skipped (--skip-bentoml)"
    elif not bentoml_bin.exists():
        bento_note = (
            f"skipped: {BENTO_VENV.relative_to(REPO)} not found; run "
            "`python benchmarks/serving.py --setup-bentoml` once"
        )
    else:
        (work / "service.py").write_text(BENTO_SERVICE)
        port = free_port()
        try:
            handle = start(
                [
                    str(bentoml_bin),
                    "serve",
                    "service:Mnist",
                    "--port",
                    str(port),
                ],
                work,
                {
                    "MODEL_PATH": str(version_dir),
                    "BENTOML_DO_NOT_TRACK": "true",
                },
                f"http://127.0.0.1:{port}/readyz",
                work / "bentoml.log",
            )
        except RuntimeError as error:
            bento_note = f"failed to start: {str(error)[-300:]}"
        else:
            try:
                results["bentoml"] = bench(
                    "bentoml",
                    f"http://127.0.0.1:{port}/predict",
                    {"Content-Type": "application/json"},
                    body,
                    counts,
                    max_seconds,
                )
            finally:
                stop(handle)

    base = results["baseline"]
    print()
    print(
        "| server | concurrency | requests | req/s | p50 ms | p99 ms "
        "| x baseline req/s |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, per_level in results.items():
        for concurrency, r in per_level.items():
            ratio = r["rps"] / base[concurrency]["rps"]
            print(
                f"| {name} | {concurrency} | {r['requests']} | {r['rps']:.1f} "
                f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {ratio:.1f}x |"
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
                / results["aiservice_kit"][concurrency]["rps"]
            )
            print(f"gRPC / REST throughput at c={concurrency}: {ratio:.2f}x")
    ours = results["aiservice_kit"]
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
        print(f"aiservice_kit / BentoML throughput at c=32: {ratio:.2f}x")
    errors = sum(r["errors"] for per in results.values() for r in per.values())
    checks.append((f"no failed requests ({errors})", errors == 0))
    print()
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"results": results, "bentoml": bento_note, "grpc": grpc_note},
                indent=2,
            )
        )
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
