"""Where the serving latency goes: before/after figures and a p99 breakdown.

Serves the MNIST `build_cnn` of `benchmarks/serving.py` (one 28x28 image
per request, API keys on, the key on that script's metered plan: every
call takes a rate token, reserves its instances and settles them in the
SQLite ledger) and
drives it with that script's client (`serving.drive`) at concurrency 1, 8
and 32. Two kinds of run:

- Figures: `aiservice-kit serve` from each source tree given with `--tree`
  (e.g. `git archive` copies of the base commit and of this one), the
  trees taking turns `--rounds` times on the same box, so the ratios are
  comparable. `--variant` adds rows of the last tree with extra `serve`
  flags (e.g. `--workers 2`).
- Breakdown (`--trace`): one server of this tree with timers wrapped around
  the pipeline's steps (decode, the rate and quota ask, batch queue wait,
  model run, the hand-off back to the event loop, encode, ledger commit)
  and a
  `gc.callbacks` clock; it prints, for the c=32 calls at the median and in
  the slowest 1%, how long each step took. The timers are installed by
  this script in the server process; the product code is unchanged.

    .venv/bin/python benchmarks/serving_tail.py --tree /tmp/base --tree .
    .venv/bin/python benchmarks/serving_tail.py --trace
"""

import argparse
import contextvars
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import serving as bench  # noqa: E402  (benchmarks/serving.py, read only)

STEPS = ("rate", "decode", "admit", "queue", "run", "hop", "encode", "ledger")


def _install_timers(out: Path) -> None:
    """Wraps the pipeline's steps with timers (in the server process)."""
    from aiservice_kit.serving import _predict
    from aiservice_kit.serving import batching
    from aiservice_kit.serving.metering import GroupCommitter
    from aiservice_kit.serving.ratelimit import RateLimiter

    current: contextvars.ContextVar = contextvars.ContextVar("trace")
    calls: list = []
    pauses: list = []
    clock = time.perf_counter

    def timed_async(owner, name, step):
        original = getattr(owner, name)

        async def wrapper(*args, **kwargs):
            started = clock()
            try:
                return await original(*args, **kwargs)
            finally:
                trace = current.get(None)
                if trace is not None:
                    trace[step] = trace.get(step, 0.0) + clock() - started

        setattr(owner, name, wrapper)

    original_predict = _predict.predict

    async def predict(*args, **kwargs):
        trace = {"start": clock()}
        current.set(trace)
        try:
            return await original_predict(*args, **kwargs)
        finally:
            trace["end"] = clock()
            calls.append(trace)

    _predict.predict = predict
    timed_async(RateLimiter, "acheck_rate", "rate")  # bad requests
    timed_async(RateLimiter, "admit", "admit")
    timed_async(GroupCommitter, "record", "ledger")
    timed_async(_predict, "decode_json", "decode")
    original_encode = _predict.encode_predict_json

    def encode(*args, **kwargs):
        started = clock()
        try:
            return original_encode(*args, **kwargs)
        finally:
            current.get()["encode"] = clock() - started

    _predict.encode_predict_json = encode
    original_enqueue = batching.Batcher._enqueue

    def enqueue(self, inputs, future):
        trace = current.get(None)
        if trace is not None:
            trace["future"] = future
            future.submitted_at = clock()
        return original_enqueue(self, inputs, future)

    batching.Batcher._enqueue = enqueue
    original_group = batching.Batcher._run_group

    def run_group(self, group):
        now = clock()
        for item in group:
            item.future.started_at = now
        return original_group(self, group)

    batching.Batcher._run_group = run_group
    original_resolve = batching._resolve

    def resolve(future, result=None, error=None):
        future.resolved_at = clock()
        return original_resolve(future, result, error)

    batching._resolve = resolve
    from aiservice_kit.serving import _servable

    async def signature_predict(self, inputs, **options):
        started = clock()
        outputs = await self._batcher.run(inputs, **options)
        trace = current.get(None)
        if trace is not None:
            trace["resumed_at"] = clock()
            if "future" not in trace:  # run on the event loop (alone)
                trace["run"] = trace["resumed_at"] - started
        return outputs

    _servable.Signature.predict = signature_predict

    def on_gc(phase, info):
        if phase == "start":
            pauses.append([clock(), None, info["generation"]])
        elif pauses:
            pauses[-1][1] = clock()

    gc.callbacks.append(on_gc)

    def dump():
        rows = []
        for trace in calls:
            future = trace.pop("future", None)
            row = {k: v for k, v in trace.items() if isinstance(v, float)}
            if future is not None and hasattr(future, "resolved_at"):
                row["queue"] = future.started_at - future.submitted_at
                row["run"] = future.resolved_at - future.started_at
                row["hop"] = trace.get("resumed_at", future.resolved_at) - (
                    future.resolved_at
                )
            rows.append(row)
        out.write_text(json.dumps({"calls": rows, "gc": pauses}))

    # uvicorn re-raises SIGTERM after its shutdown (no atexit then): dump
    # when the lifespan closes the ledger writer.
    close = GroupCommitter.close

    def close_and_dump(self):
        close(self)
        dump()

    GroupCommitter.close = close_and_dump


def _serve_traced(out: str, argv: list[str]) -> int:
    _install_timers(Path(out))
    from aiservice_kit.cli import main

    return main(argv)


def _model(work: Path) -> tuple[bytes, str]:
    import keras

    from aiservice_kit import build_cnn
    from aiservice_kit.export import export_saved_model
    from aiservice_kit.serving import KeyStore

    keras.utils.set_random_seed(0)
    model = build_cnn((28, 28), num_classes=10)
    # The converted artifacts ride in the version, as in serving.py, so
    # `--extra=--runtime --extra=litert` traces the LiteRT path.
    export_saved_model(
        model, work / "mnist", verify=False, runtimes=("litert", "onnx")
    )
    images = np.random.default_rng(0).integers(0, 256, (1, 28, 28))
    # The plan of benchmarks/serving.py: every call takes a rate token,
    # reserves its instances and settles them.
    (work / "config.json").write_text(json.dumps(bench.METERED_CONFIG))
    store = KeyStore(work / "service.db")
    key = store.create("bench", "metered")[0]
    store.close()
    return json.dumps({"instances": images.tolist()}).encode(), key


def _start(work, tree, name, extra=(), trace=None):
    port = bench.free_port()
    serve = [
        "serve",
        "--model",
        f"mnist={work / 'mnist'}",
        "--port",
        str(port),
        "--db",
        str(work / "service.db"),
        "--config",
        str(work / "config.json"),
        "--auth",
        "on",
        "--access-log",
        "off",
        "--log-level",
        "warning",
        *extra,
    ]
    if trace is None:
        command = [sys.executable, "-m", "aiservice_kit.cli", *serve]
    else:
        command = [
            sys.executable,
            __file__,
            "--_serve-traced",
            str(trace),
            "--",
            *serve,
        ]
    handle = bench.start(
        command,
        tree,
        {"PYTHONPATH": str(tree)},
        f"http://127.0.0.1:{port}/readyz",
        work / f"{name}.log",
    )
    time.sleep(3 if "--workers" in extra else 0)  # the other workers load
    return handle, f"http://127.0.0.1:{port}/v1/models/mnist:predict"


def _levels(url, key, body, counts, seconds):
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {key}",
    }
    bench._run(bench.drive(url, body, headers, 4, 40, 30))  # warm-up
    return {
        c: bench._run(bench.drive(url, body, headers, c, counts[c], seconds))
        for c in bench.CONCURRENCY
    }


def figures(args, work, body, key) -> None:
    rows = [(Path(t).resolve(), ()) for t in args.tree]
    last = rows[-1][0] if rows else REPO  # variants: of the last tree
    rows += [(last, tuple(v.split())) for v in args.variant]
    results: dict = {}
    for round_ in range(args.rounds):
        for tree, extra in rows:
            label = f"{tree.name} {' '.join(extra)}".strip()
            handle, url = _start(work, tree, f"r{round_}", extra)
            try:
                got = _levels(url, key, body, args.counts, args.seconds)
            finally:
                bench.stop(handle)
            results.setdefault(label, []).append(got)
            for c, r in got.items():
                print(
                    f"  round {round_} {label:28s} c={c:<3d} "
                    f"{r['rps']:7.1f} req/s  p50 {r['p50_ms']:6.2f} ms  "
                    f"p99 {r['p99_ms']:6.2f} ms",
                    flush=True,
                )
    print("\nmedian over rounds:")
    for label, runs in results.items():
        for c in bench.CONCURRENCY:
            med = {
                m: float(np.median([run[c][m] for run in runs]))
                for m in ("rps", "p50_ms", "p99_ms")
            }
            print(
                f"  {label:28s} c={c:<3d} {med['rps']:7.1f} req/s  "
                f"p50 {med['p50_ms']:6.2f} ms  p99 {med['p99_ms']:6.2f} ms"
            )


def breakdown(args, work, body, key) -> None:
    trace = work / "trace.json"
    handle, url = _start(work, REPO, "traced", tuple(args.extra), trace)
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {key}",
    }
    try:
        bench._run(bench.drive(url, body, headers, 4, 40, 30))
        result = bench._run(
            bench.drive(
                url,
                body,
                headers,
                args.concurrency,
                args.counts[args.concurrency],
                args.seconds,
            )
        )
    finally:
        bench.stop(handle)
    data = json.loads(trace.read_text())
    calls = data["calls"][40:]  # after the warm-up
    pauses = [p for p in data["gc"] if p[1] is not None]
    total = np.array([c["end"] - c["start"] for c in calls])
    order = np.argsort(total)
    median = [
        calls[i] for i in order[len(order) * 2 // 5 : len(order) * 3 // 5]
    ]
    tail = [calls[i] for i in order[-max(1, len(order) // 100) :]]

    def gc_in(call):
        return sum(
            max(0.0, min(e, call["end"]) - max(s, call["start"]))
            for s, e, _ in pauses
        )

    print(
        f"c={args.concurrency} client: {result['rps']:.1f} req/s, p50 "
        f"{result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms; "
        f"in the server: p50 {np.percentile(total, 50) * 1e3:.2f} ms, "
        f"p99 {np.percentile(total, 99) * 1e3:.2f} ms over {len(calls)} "
        "calls; outside predict at the median: "
        f"{result['p50_ms'] - np.percentile(total, 50) * 1e3:.2f} ms"
    )
    print(f"{'step (ms)':12s} {'median calls':>13s} {'slowest 1%':>11s}")
    for step in (*STEPS, "gc"):

        def value(call, step=step):
            return gc_in(call) if step == "gc" else call.get(step, 0.0)

        m = np.mean([value(c) for c in median]) * 1e3
        t = np.mean([value(c) for c in tail]) * 1e3
        print(f"{step:12s} {m:13.2f} {t:11.2f}")
    m = np.mean([c["end"] - c["start"] for c in median]) * 1e3
    t = np.mean([c["end"] - c["start"] for c in tail]) * 1e3
    print(f"{'total':12s} {m:13.2f} {t:11.2f}")
    gens = [p[2] for p in pauses]
    longest = max((e - s for s, e, _ in pauses), default=0) * 1e3
    print(
        f"gc pauses: {len(pauses)} (gen2: {gens.count(2)}), longest "
        f"{longest:.2f} ms"
    )


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--_serve-traced":
        return _serve_traced(sys.argv[2], sys.argv[4:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        help="a source tree to serve from (repeat)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="extra serve flags for a row of this tree, "
        "e.g. '--workers 2' (repeat)",
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--trace",
        action="store_true",
        help="the p99 breakdown instead of figures",
    )
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        help="serve flags for the traced server",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        choices=(1, 8, 32),
        default=32,
        help="the client concurrency of the --trace run",
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    args.counts = (
        {1: 100, 8: 200, 32: 400} if args.quick else {1: 300, 8: 600, 32: 1200}
    )
    args.seconds = 10 if args.quick else 20
    work = Path(tempfile.mkdtemp(prefix="serving-tail-"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    body, key = _model(work)
    print(f"{os.cpu_count()} CPUs; requests per level: {args.counts}")
    if args.trace:
        breakdown(args, work, body, key)
    else:
        figures(args, work, body, key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
