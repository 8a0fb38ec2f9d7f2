"""The server config file and every serving default, in one place.

Every default the server, the CLI and the config file share (address,
batching, reload polling, the database, body and cache limits, plans) is
defined here once; the other serving modules import it. The module imports
no other serving module at import time (the types it builds are imported
where they are built), so every room can import its defaults from here.

The config file (TOML or JSON) holds the price list, the plans and,
optionally, per-model serving settings:

```toml
currency = "USD"

[prices]            # per 1,000 instances of a successful call
mnist = 0.40
"*" = 0.10          # any other model
"*:explain" = 5.0   # `:explain` calls, priced apart ("mnist:explain": one)

[plans.free]
requests_per_second = 5
burst = 10
monthly_instances = 10000

[models.mnist]      # optional: `serve --model` can give the path instead
base_path = "exports/mnist"
max_batch_size = 64
max_wait_ms = 0
keep_versions = 2
version_labels = { stable = 1, canary = 2 }   # /labels/stable:predict
max_instances_per_request = 1024   # admission limits (docs/serving.md)
max_inflight_instances = 4096
max_inflight_bytes = 33554432
runtime = "auto"    # or "tensorflow", "litert", "onnx" (docs/serving.md)
```
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from aiservice_kit._layout import STALE_TMP_SECONDS

if TYPE_CHECKING:
    from aiservice_kit.serving.pricing import PriceList
    from aiservice_kit.serving.ratelimit import Plan
    from aiservice_kit.serving.registry import ModelConfig

# -- Address ----------------------------------------------------------------

#: Host `serve` listens on (loopback: API keys are optional there).
DEFAULT_HOST = "127.0.0.1"
#: Port `serve` listens on (TF Serving's REST port).
DEFAULT_PORT = 8501
#: The name a single model gets, as in TensorFlow Serving's --model_name.
DEFAULT_MODEL_NAME = "default"
#: Port of TF Serving's gRPC API (`--grpc-port`): None, off by default;
#: TF Serving's own is `GRPC_PORT`. Needs the `grpc` extra.
DEFAULT_GRPC_PORT = None
#: TF Serving's gRPC port, the one its clients expect.
GRPC_PORT = 8500
#: Seconds running gRPC calls get to finish when the server stops.
GRPC_GRACE_S = 5.0
#: gRPC calls handled at once; more are answered RESOURCE_EXHAUSTED. Each
#: message (up to `--max-body-bytes`) is received whole before its
#: handler runs, so this bounds their memory as `max_inflight_bytes`
#: bounds REST bodies'.
GRPC_MAX_CONCURRENT_RPCS = 128
#: Values a TensorProto sent with fewer values than its shape may be
#: filled to (TF repeats the last value): a 40-byte message could declare
#: gigabytes otherwise.
MAX_FILLED_VALUES = 1 << 20
#: Worker processes `serve --workers` starts on one host (one: no
#: supervisor, the server is the process).
DEFAULT_WORKERS = 1

# -- Models -----------------------------------------------------------------

#: Most instances run in one call of a signature.
DEFAULT_MAX_BATCH_SIZE = 64
#: Milliseconds a batch waits for more requests (0: only those waiting).
DEFAULT_MAX_WAIT_MS = 0.0
#: A call alone on the server runs its model on the event loop (no hand-off
#: to the batcher's thread and back) while the model's runs take at most
#: this many milliseconds on average; slower models always use the thread.
INLINE_RUN_LIMIT_MS = 1.0
#: Largest accepted `max_wait_ms`.
MAX_WAIT_MS_LIMIT = 10_000
#: Newest loadable versions kept loaded per model.
DEFAULT_KEEP_VERSIONS = 2
#: What runs a version's `serving_default` and `predict` signatures:
#: "auto" runs the fastest converted artifact the version carries (LiteRT,
#: then ONNX; `export_saved_model(..., runtimes=...)`) once proven equal to
#: TensorFlow, else TensorFlow; "litert"/"onnx" require that artifact (a
#: version without it fails to load); "tensorflow" never converts.
DEFAULT_RUNTIME = "auto"
#: Accepted values of a model's `runtime`.
RUNTIME_CHOICES = ("auto", "tensorflow", "litert", "onnx")
#: Rows of generated inputs a version's runtime is proven on when its
#: metadata holds no proof inputs (batch sizes 1 and this are both run).
PROOF_ROWS = 8
#: Seconds between scans of the base paths for new versions.
DEFAULT_POLL_INTERVAL_S = 1.0
#: Seconds an old version stays loaded after it stops being served, so the
#: requests that already hold it finish normally.
RETIRE_GRACE_S = 30.0
#: Age (seconds) after which a writer's `.tmp-*` directory in a base path
#: is taken as abandoned and removed on the next scan.
STALE_TMP_S = STALE_TMP_SECONDS

# -- Requests ---------------------------------------------------------------

#: Request body limit (bytes); larger bodies get 413.
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
#: Serialized size of a Classify/Regress call's examples once its
#: `context` is copied into each (413 beyond): what the largest body
#: could carry itself.
MAX_MERGED_EXAMPLES_BYTES = DEFAULT_MAX_BODY_BYTES
#: Predict bodies larger than this are decoded off the event loop.
OFFLOAD_BYTES = 64 * 1024
# -- Admission (per model; see `_admission` and docs/serving.md) -----------
# Sized for a 2-core, 4 GB box: decoding JSON costs ~30-50x its bytes in
# Python objects, so 32 MiB in flight per model stays near 1.5 GB.

#: Most instances in one predict call; more get 413.
DEFAULT_MAX_INSTANCES_PER_REQUEST = 1024
#: Most instances of one model's calls being decoded or run at once; more
#: get 429.
DEFAULT_MAX_INFLIGHT_INSTANCES = 4096
#: Most request bytes of one model's predict calls being read or decoded
#: at once; more get 429 (one body over it alone: 413).
DEFAULT_MAX_INFLIGHT_BYTES = 32 * 1024 * 1024
#: Most nested lists (axes) an input may have; numpy holds 64, and deeper
#: JSON only costs recursion.
MAX_INPUT_AXES = 32

# -- Connections (`_http.guarded_http`) -------------------------------------

#: Seconds a client has for the request line and headers (from the
#: connection or the request's first byte); then 408 and closed.
DEFAULT_HEADER_TIMEOUT_S = 10.0
#: Seconds a client has for the body once the headers are in; then 408.
DEFAULT_BODY_TIMEOUT_S = 60.0
#: Most headers in one request; more get 431.
DEFAULT_MAX_HEADER_COUNT = 100
#: Most bytes of request line and headers; more get 431.
DEFAULT_MAX_HEADER_BYTES = 16 * 1024
#: Most open connections; uvicorn answers 503 beyond.
DEFAULT_MAX_CONNECTIONS = 1000
#: Seconds an idle keep-alive connection stays open.
DEFAULT_KEEP_ALIVE_S = 5

# -- Keys and ledger ----------------------------------------------------------

#: Environment variable naming the database when none is given.
DEFAULT_DB_ENV = "AISERVICE_KIT_DB"
#: The database file used when neither `db` nor `$AISERVICE_KIT_DB` is set.
DEFAULT_DB_FILE = "aiservice_kit.db"
#: Seconds SQLite waits for a lock before it reports the database busy.
DB_BUSY_TIMEOUT_S = 30.0
#: Seconds a verified API key is trusted before it is looked up again.
KEY_CACHE_TTL_S = 1.0
#: Verified keys cached at most (the cache is cleared beyond).
KEY_CACHE_SIZE = 10_000
#: Records committed together at most by the ledger writer.
LEDGER_MAX_GROUP = 256
#: Seconds between the WAL checkpoints a server's SQLite ledger runs on a
#: thread of its own (its commits then never run one: SQLite's automatic
#: checkpoint, with its fsync, stalled 0.7% of the commits by 5-15 ms).
WAL_CHECKPOINT_S = 0.2
#: WAL pages (SQLite's automatic checkpoint size) past which the WAL is
#: started over, with the commits held for the last pages
#: (`_db.SQLiteDatabase.checkpoint_in_background`).
WAL_RESTART_FRAMES = 1000
#: Milliseconds that start-over waits at most for other processes.
WAL_RESTART_WAIT_MS = 10
#: Connections a server keeps at most in its PostgreSQL pool.
PG_POOL_SIZE = 8
#: Seconds a server waits to open its first PostgreSQL connection.
PG_CONNECT_TIMEOUT_S = 10
#: Threads that run a server's database calls (never the event loop).
DB_THREADS = 8
#: Seconds a call waits for a rate or quota check before it gets 503
#: with Retry-After (the database is locked or unreachable).
DB_WAIT_S = 5.0
#: `Retry-After` (seconds) of a 503 caused by a busy database.
DB_RETRY_AFTER_S = 1
#: Seconds between a server's heartbeats; each also releases the
#: reservations of servers whose heartbeat stopped.
HEARTBEAT_S = 2.0
#: Seconds without a heartbeat after which a server counts as dead and its
#: reservations (calls in flight when it died) are released.
SERVER_TTL_S = 10.0

# -- Prices and plans ---------------------------------------------------------

#: Currency shown on bills when the config names none.
DEFAULT_CURRENCY = "USD"
#: Plans available when the config names none: name -> Plan fields.
DEFAULT_PLAN_FIELDS: dict[str, dict[str, Any]] = {
    "free": {
        "requests_per_second": 5,
        "burst": 10,
        "monthly_instances": 10_000,
    },
    "standard": {
        "requests_per_second": 50,
        "burst": 100,
        "monthly_instances": 1_000_000,
    },
    "unlimited": {},
}


def default_db_path() -> Path:
    """`$AISERVICE_KIT_DB`, else `./aiservice_kit.db`.

    Returns:
        The database path used when none is given (the variable may hold
        a path or a `sqlite:///...` URL).

    Raises:
        ValueError: when the variable holds a URL of another scheme.

    Example:
    ```python
    from aiservice_kit.serving.config import default_db_path
    default_db_path()  # PosixPath('aiservice_kit.db')
    ```
    """
    from aiservice_kit.serving._db import sqlite_path

    return sqlite_path(os.environ.get(DEFAULT_DB_ENV, DEFAULT_DB_FILE))


def _default_prices() -> PriceList:
    from aiservice_kit.serving.pricing import PriceList

    return PriceList()


def _default_plans() -> dict[str, Plan]:
    from aiservice_kit.serving.ratelimit import DEFAULT_PLANS

    return dict(DEFAULT_PLANS)


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """Everything the config file sets.

    Attributes:
        prices: PriceList. Prices per model.
        plans: dict of name -> Plan.
        models: dict of name -> ModelConfig (may be empty).
    """

    prices: PriceList = dataclasses.field(default_factory=_default_prices)
    plans: dict[str, Plan] = dataclasses.field(default_factory=_default_plans)
    models: dict[str, ModelConfig] = dataclasses.field(default_factory=dict)


_PLAN_FIELDS = ("requests_per_second", "burst", "monthly_instances")
_MODEL_FIELDS = (
    "base_path",
    "max_batch_size",
    "max_wait_ms",
    "keep_versions",
    "version_labels",
    "max_instances_per_request",
    "max_inflight_instances",
    "max_inflight_bytes",
    "runtime",
)


def _table(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError(f"`{where}` in the config must be a table/object.")
    return data


def parse_config(
    data: dict[str, Any], root: Path | None = None
) -> ServerConfig:
    """Builds a ServerConfig from the parsed config file.

    Args:
        data: dict. The parsed TOML/JSON.
        root: Path or None. Relative model paths are resolved from here.

    Returns:
        The ServerConfig.

    Raises:
        ValueError: naming the entry that is wrong.

    Example:
    ```python
    parse_config({"prices": {"mnist": 0.4}}).prices.price_per_1000("mnist")
    ```
    """
    from aiservice_kit.serving._admission import LIMIT_FIELDS
    from aiservice_kit.serving._admission import AdmissionLimits
    from aiservice_kit.serving.batching import BatchingConfig
    from aiservice_kit.serving.pricing import PriceList
    from aiservice_kit.serving.ratelimit import Plan
    from aiservice_kit.serving.registry import ModelConfig

    data = _table(data, "config")
    unknown = set(data) - {"currency", "prices", "plans", "models"}
    if unknown:
        raise ValueError(
            "The config may only have the keys currency, prices, plans, "
            f"models. Received unknown keys: {sorted(unknown)}"
        )
    prices = PriceList(
        _table(data.get("prices", {}), "prices"),
        currency=data.get("currency", DEFAULT_CURRENCY),
    )
    plans = _default_plans()
    if "plans" in data:
        plans = {}
        for name, fields in _table(data["plans"], "plans").items():
            fields = _table(fields, f"plans.{name}")
            extra = set(fields) - set(_PLAN_FIELDS)
            if extra:
                raise ValueError(
                    f"`plans.{name}` accepts {', '.join(_PLAN_FIELDS)}. "
                    f"Received unknown keys: {sorted(extra)}"
                )
            plans[name] = Plan(name, **fields)
    models = {}
    for name, fields in _table(data.get("models", {}), "models").items():
        fields = _table(fields, f"models.{name}")
        extra = set(fields) - set(_MODEL_FIELDS)
        if extra or "base_path" not in fields:
            raise ValueError(
                f"`models.{name}` needs base_path and accepts "
                f"{', '.join(_MODEL_FIELDS)}. Received: {sorted(fields)}"
            )
        base_path = Path(fields["base_path"])
        if root is not None and not base_path.is_absolute():
            base_path = root / base_path
        try:
            batching = BatchingConfig(
                max_batch_size=fields.get(
                    "max_batch_size", DEFAULT_MAX_BATCH_SIZE
                ),
                max_wait_ms=fields.get("max_wait_ms", DEFAULT_MAX_WAIT_MS),
            )
            models[name] = ModelConfig(
                base_path,
                batching,
                fields.get("keep_versions", DEFAULT_KEEP_VERSIONS),
                fields.get("version_labels", {}),
                AdmissionLimits(
                    **{k: fields[k] for k in LIMIT_FIELDS if k in fields}
                ),
                runtime=fields.get("runtime", DEFAULT_RUNTIME),
            )
        except (TypeError, ValueError) as error:
            raise ValueError(f"`models.{name}`: {error}") from None
    return ServerConfig(prices=prices, plans=plans, models=models)


def load_config(path: str | os.PathLike | None) -> ServerConfig:
    """Reads a TOML (`.toml`) or JSON config file; None gives the defaults.

    Args:
        path: str or PathLike or None. The config file.

    Returns:
        The ServerConfig.

    Raises:
        ValueError: for a missing file or a wrong entry.

    Example:
    ```python
    from aiservice_kit.serving import load_config
    config = load_config("serving.toml")
    sorted(config.plans)
    ```
    """
    if path is None:
        return ServerConfig()
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"`config` must be an existing TOML or JSON file. "
            f"Received: config={str(path)!r}"
        )
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as error:  # TOMLDecodeError and JSONDecodeError
        raise ValueError(f"Cannot parse config file {path}: {error}") from None
    return parse_config(data, root=path.parent)
