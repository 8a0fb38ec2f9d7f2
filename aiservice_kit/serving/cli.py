"""The `serve`, `keys` and `usage` commands of `aiservice-kit`.

`aiservice_kit.cli` (the one command line) registers `add_serve_parser`,
`add_keys_parser` and `add_usage_parser`; each sets `handler(args) -> int`.
Arguments that do not fit raise `aiservice_kit.cli.UsageError`, which
`aiservice_kit.cli.main` reports as `aiservice-kit <command>: error: ...`
with status 2, never a traceback. `python -m aiservice_kit.serving.cli`
runs `aiservice_kit.cli.main`.
"""

import argparse
import datetime
import ipaddress
import json
import logging
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

from aiservice_kit import _backend
from aiservice_kit._layout import is_version_name
from aiservice_kit._layout import list_versions
from aiservice_kit.cli import UsageError
from aiservice_kit.serving._db import SQLITE_PRIVATE_NAMES
from aiservice_kit.serving._db import database_url
from aiservice_kit.serving._db import is_postgres
from aiservice_kit.serving._db import open_database
from aiservice_kit.serving.auth import ADMIN_SCOPE
from aiservice_kit.serving.auth import SCOPES
from aiservice_kit.serving.config import DEFAULT_BODY_TIMEOUT_S
from aiservice_kit.serving.config import DEFAULT_DB_ENV
from aiservice_kit.serving.config import DEFAULT_DB_FILE
from aiservice_kit.serving.config import DEFAULT_GRPC_PORT
from aiservice_kit.serving.config import DEFAULT_HEADER_TIMEOUT_S
from aiservice_kit.serving.config import DEFAULT_HOST
from aiservice_kit.serving.config import DEFAULT_KEEP_ALIVE_S
from aiservice_kit.serving.config import DEFAULT_KEEP_VERSIONS
from aiservice_kit.serving.config import DEFAULT_MAX_BATCH_SIZE
from aiservice_kit.serving.config import DEFAULT_MAX_BODY_BYTES
from aiservice_kit.serving.config import DEFAULT_MAX_CONNECTIONS
from aiservice_kit.serving.config import DEFAULT_MAX_HEADER_BYTES
from aiservice_kit.serving.config import DEFAULT_MAX_HEADER_COUNT
from aiservice_kit.serving.config import DEFAULT_MAX_INSTANCES_PER_REQUEST
from aiservice_kit.serving.config import DEFAULT_MAX_WAIT_MS
from aiservice_kit.serving.config import DEFAULT_POLL_INTERVAL_S
from aiservice_kit.serving.config import DEFAULT_PORT
from aiservice_kit.serving.config import DEFAULT_RUNTIME
from aiservice_kit.serving.config import DEFAULT_WORKERS
from aiservice_kit.serving.config import GRPC_PORT
from aiservice_kit.serving.config import RUNTIME_CHOICES
from aiservice_kit.serving.config import default_db_path
from aiservice_kit.serving.config import load_config

LOOPBACK_NAMES = ("localhost", "ip6-localhost")


def is_loopback(host: str) -> bool:
    """Whether `host` only listens on this machine."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a positive integer, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"must be a positive integer, got {text!r}"
        )
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be in 1..65535, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a number >= 0, got {text!r}"
        ) from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def _model_spec(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path or "/" in name or ":" in name:
        raise argparse.ArgumentTypeError(
            f"must be NAME=BASE_PATH (a name without '/' or ':'), got {text!r}"
        )
    return name, path


def _date(text: str) -> datetime.datetime:
    try:
        value = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an ISO-8601 date or time like 2026-11-01, got {text!r}"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        type=str,
        default=None,
        help="SQLite file (or sqlite:///PATH URL), or a postgresql:// URL, "
        "with API keys, the usage ledger and the shared quota and rate "
        f"state (default: ${DEFAULT_DB_ENV} or ./{DEFAULT_DB_FILE})",
    )


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML or JSON file with prices, plans and model settings "
        "(default: the built-in prices and plans)",
    )


def _config(args: argparse.Namespace):
    try:
        return load_config(args.config)
    except ValueError as error:
        raise UsageError(f"--config: {error}") from None


def _db(args: argparse.Namespace, must_exist: bool = False) -> Path | str:
    db = os.environ.get(DEFAULT_DB_ENV) if args.db is None else args.db
    if is_postgres(db):
        return db  # reached (and refused if unreachable) when opened
    try:
        path = default_db_path() if args.db is None else database_url(args.db)
    except ValueError as error:
        raise UsageError(f"--db: {error}") from None
    if path.is_dir():
        raise UsageError(
            f"--db: {str(path)!r} is a directory; pass a SQLite file path "
            f"(such as {str(path / DEFAULT_DB_FILE)!r}) or a postgresql:// URL"
        )
    if must_exist and not path.is_file():
        raise UsageError(
            f"--db: no database at {str(path)!r}; create a key or start the "
            "server first, or pass the right --db"
        )
    if not path.parent.is_dir():
        raise UsageError(f"--db: directory {str(path.parent)!r} not found")
    return path


def _check_base_path(name: str, path: str) -> None:
    """Refuses a version directory given where the base path belongs.

    `base/1/` holds `saved_model.pb` and no version directories, so serving
    it would load nothing and answer /readyz 503 forever.
    """
    base = Path(path)
    if (
        is_version_name(base.name)
        and (base / "saved_model.pb").is_file()
        and not list_versions(base)
    ):
        raise UsageError(
            f"--model {name}={path}: {str(base)!r} is a version directory "
            "(it holds saved_model.pb); give the model's base path, the "
            f"directory of its versions: --model {name}={base.parent}"
        )


def _one_line(error: BaseException) -> str:
    """`error`'s message on one line (drivers add hints on new lines)."""
    return " ".join(str(error).split()) or type(error).__name__


def _open(kind: Any, db: Path | str) -> Any:
    """`kind(db)` (KeyStore, DatabaseMeter); a database error is --db's."""
    try:
        return kind(db)
    except (RuntimeError, ValueError) as error:
        raise UsageError(f"--db: {_one_line(error)}") from None
    except (sqlite3.Error, OSError) as error:
        raise UsageError(
            f"--db: {str(db)!r} is not a usable SQLite database "
            f"({_one_line(error)}); pass the file `aiservice-kit serve` and "
            "`keys create` use, or a postgresql:// URL"
        ) from None


def build_app(args: argparse.Namespace) -> Any:
    """The app `serve` runs, from its parsed arguments (loads no model).

    Raises:
        UsageError: naming the argument that does not fit.
    """
    config = _config(args)
    if not args.model and not config.models:
        raise UsageError(
            "--model NAME=BASE_PATH is required (or models in --config)"
        )
    if args.grpc_port is not None and args.grpc_port == args.port:
        raise UsageError(
            "--grpc-port must differ from --port (REST). "
            f"Received: --grpc-port {args.grpc_port} --port {args.port}"
        )
    seen: dict[str, str] = {}
    for name, path in args.model:
        if name in seen:
            raise UsageError(
                f"--model: the name {name!r} is given twice "
                f"(--model {name}={seen[name]} and --model {name}={path}); "
                "each served model needs its own name"
            )
        seen[name] = path
        _check_base_path(name, path)
    db = _db(args)
    if args.workers > 1 and str(db) in SQLITE_PRIVATE_NAMES:
        raise UsageError(
            f"--workers {args.workers} needs a database the workers share "
            "(a SQLite file or a postgresql:// URL), and SQLite's "
            f"{str(db)!r} is private to each connection. Received: --db "
            f"{str(db)!r}; pass a file path, or --workers 1"
        )
    from aiservice_kit.serving._admission import AdmissionLimits
    from aiservice_kit.serving.app import create_app
    from aiservice_kit.serving.batching import BatchingConfig
    from aiservice_kit.serving.registry import ModelConfig

    try:
        batching = BatchingConfig(args.max_batch_size, args.max_wait_ms)
        per_request = args.max_instances_per_request
        limits = AdmissionLimits(
            max_instances_per_request=per_request,
            max_inflight_instances=max(
                per_request, AdmissionLimits().max_inflight_instances
            ),
        )
        models = {
            name: ModelConfig(
                Path(path),
                batching,
                args.keep_versions,
                limits=limits,
                runtime=args.runtime,
            )
            for name, path in args.model
        }
        return create_app(
            models,
            db=db,
            config=config,
            auth=_auth(args),
            batching=batching,
            max_body_bytes=args.max_body_bytes,
            poll_interval_s=args.poll_interval,
            access_log=args.access_log == "on",
            grpc_port=args.grpc_port,
            grpc_host=args.host,
            grpc_reuse_port=args.workers > 1,
        )
    except (ValueError, TypeError, ImportError) as error:
        raise UsageError(str(error)) from None


def _auth(args: argparse.Namespace) -> bool:
    return {"on": True, "off": False}.get(args.auth, not is_loopback(args.host))


def http_protocol(args: argparse.Namespace) -> Any:
    """uvicorn's HTTP protocol class with `serve`'s connection limits."""
    from aiservice_kit.serving._http import guarded_http

    return guarded_http(
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        max_header_count=DEFAULT_MAX_HEADER_COUNT,
        max_header_bytes=DEFAULT_MAX_HEADER_BYTES,
    )


def setup_process(args: argparse.Namespace) -> None:
    """Logging and the GIL hand-over interval of a serving process."""
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(message)s",
        stream=sys.stderr,
    )
    # The event loop and the batching threads share the GIL: hand it over
    # every 1 ms instead of Python's 5 ms so a request never waits on it.
    sys.setswitchinterval(0.001)


def _serve(args: argparse.Namespace) -> int:
    # Before the models load TensorFlow (its workers inherit the setting).
    _backend.keep_onednn_kernels_off()
    app = build_app(args)  # checks every argument before anything starts
    # Reach --db now: a database the server cannot open is one line here,
    # not a traceback from the server's startup.
    _open(open_database, _db(args)).close()
    import uvicorn

    setup_process(args)
    if not _auth(args) and not is_loopback(args.host):
        logging.getLogger("aiservice_kit.serving").warning(
            "API keys are OFF on %s: anyone who reaches it can call it",
            args.host,
        )
    options = dict(
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        timeout_graceful_shutdown=10,
        limit_concurrency=DEFAULT_MAX_CONNECTIONS,
        timeout_keep_alive=DEFAULT_KEEP_ALIVE_S,
        h11_max_incomplete_event_size=DEFAULT_MAX_HEADER_BYTES,
    )
    if args.workers == 1:
        uvicorn.run(app, http=http_protocol(args), **options)
        return 0
    from aiservice_kit.serving import _workers

    del app  # each worker builds its own from the same arguments
    os.environ[_workers.ARGS_ENV] = _workers.encode_args(args)
    uvicorn.run(
        f"{_workers.__name__}:app",
        factory=True,
        workers=args.workers,
        http=f"{_workers.__name__}:http",
        **options,
    )
    return 0


def _print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [
        max(len(str(row[i])) for row in [header, *rows])
        for i in range(len(header))
    ]
    for row in [header, *rows]:
        print(
            "  ".join(str(cell).ljust(width) for cell, width in zip(
                row, widths, strict=True
            )).rstrip()
        )  # fmt: skip


def _keys_create(args: argparse.Namespace) -> int:
    from aiservice_kit.serving.auth import KeyStore

    config = _config(args)
    if args.plan not in config.plans:
        raise UsageError(
            f"--plan must be one of {', '.join(config.plans)} (plans of "
            f"{'--config' if args.config else 'the default config'}), "
            f"got {args.plan!r}"
        )
    models = None
    if args.models:
        models = [name.strip() for name in args.models.split(",") if name]
    store = _open(KeyStore, _db(args))
    try:
        key, record = store.create(
            args.name, args.plan, models, [ADMIN_SCOPE] if args.admin else []
        )
    except ValueError as error:
        raise UsageError(str(error)) from None
    finally:
        store.close()
    if args.json:
        print(json.dumps({"key": key, **record.to_json()}))
    else:
        print(key)
        scopes = f" with scopes {', '.join(record.scopes)}"
        print(
            f"API key {record.id} for {record.name!r} on plan "
            f"{record.plan!r}{scopes if record.scopes else ''}. Store it "
            "now: it cannot be shown again.",
            file=sys.stderr,
        )
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    from aiservice_kit.serving.auth import KeyStore

    store = _open(KeyStore, _db(args, must_exist=True))
    keys = store.list(include_revoked=args.all)
    store.close()
    if args.json:
        print(json.dumps([key.to_json() for key in keys], indent=2))
        return 0
    _print_table(
        [
            [
                key.id,
                key.name,
                key.plan,
                "all" if key.models is None else ",".join(key.models),
                ",".join(key.scopes) or "-",
                key.created_at,
                key.revoked_at or "",
            ]
            for key in keys
        ],
        ["ID", "NAME", "PLAN", "MODELS", "SCOPES", "CREATED", "REVOKED"],
    )
    return 0


def _keys_scope(args: argparse.Namespace) -> int:
    from aiservice_kit.serving.auth import KeyStore

    store = _open(KeyStore, _db(args, must_exist=True))
    change = store.grant if args.keys_command == "grant" else store.withdraw
    try:
        record = change(args.key, args.scope)
    except ValueError as error:
        raise UsageError(str(error)) from None
    finally:
        store.close()
    print(
        f"API key {record.id} ({record.name}) scopes: "
        f"{', '.join(record.scopes) or 'none'}."
    )
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    from aiservice_kit.serving.auth import KeyStore

    store = _open(KeyStore, _db(args, must_exist=True))
    try:
        record = store.revoke(args.key)
    except ValueError as error:
        raise UsageError(str(error)) from None
    finally:
        store.close()
    print(f"Revoked API key {record.id} ({record.name}).")
    return 0


def _usage(args: argparse.Namespace) -> int:
    from aiservice_kit.serving.auth import KeyStore
    from aiservice_kit.serving.metering import DatabaseMeter

    config = _config(args)
    if (
        args.since is not None
        and args.until is not None
        and args.since >= args.until
    ):
        raise UsageError(
            "--since must be before --until (--until is excluded). "
            f"Received: --since {args.since.isoformat()} --until "
            f"{args.until.isoformat()}"
        )
    path = _db(args, must_exist=True)
    key_id = None
    if args.key:
        store = _open(KeyStore, path)
        try:
            key_id = store.find(args.key).id
        except ValueError as error:
            raise UsageError(f"--key: {error}") from None
        finally:
            store.close()
    meter = _open(DatabaseMeter, path)
    rows = meter.summarize(key_id, args.since, args.until)
    meter.close()
    bill = config.prices.bill(rows)
    if args.json:
        data = bill.to_json()
        data["since"] = None if args.since is None else args.since.isoformat()
        data["until"] = None if args.until is None else args.until.isoformat()
        print(json.dumps(data, indent=2))
        return 0
    _print_table(
        [
            [
                line.key_name or "(anonymous)",
                line.model,
                line.api,
                str(line.requests),
                str(line.errors),
                str(line.instances),
                f"{line.price_per_1000:.4f}",
                f"{line.amount:.4f}",
            ]
            for line in bill.lines
        ]
        + [["TOTAL", "", "", "", "", "", bill.currency, f"{bill.total:.4f}"]],
        [
            "KEY",
            "MODEL",
            "API",
            "REQUESTS",
            "ERRORS",
            "INSTANCES",
            "PER 1K",
            "AMOUNT",
        ],
    )
    return 0


def add_serve_parser(subparsers: Any, name: str = "serve") -> Any:
    """Adds the `serve` command (sets `handler`; returns its parser).

    Args:
        subparsers: the object `ArgumentParser.add_subparsers()` returned.
        name: str. The command's name.

    Returns:
        The command's `argparse.ArgumentParser`.
    """
    serve = subparsers.add_parser(
        name,
        help="serve exported models over TF Serving's REST API",
        description="Serve base_path/<N>/ SavedModels with TF Serving's REST "
        "API, API keys, metering and quotas.",
    )
    serve.add_argument(
        "--model",
        action="append",
        type=_model_spec,
        default=[],
        metavar="NAME=BASE_PATH",
        help="a model to serve (repeat for more)",
    )
    serve.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to listen on (0.0.0.0: every interface)",
    )
    serve.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help="TCP port (REST API)"
    )
    serve.add_argument(
        "--grpc-port",
        type=_port,
        default=DEFAULT_GRPC_PORT,
        help="also serve TF Serving's gRPC API on this port (TF Serving "
        f"uses {GRPC_PORT}; off by default; needs the grpc extra)",
    )
    _add_db(serve)
    _add_config(serve)
    serve.add_argument(
        "--auth",
        choices=("auto", "on", "off"),
        default="auto",
        help="require API keys: auto = on unless --host is loopback",
    )
    serve.add_argument(
        "--max-batch-size",
        type=_positive_int,
        default=DEFAULT_MAX_BATCH_SIZE,
        help="most instances run in one batched call of a model",
    )
    serve.add_argument(
        "--max-wait-ms",
        type=_non_negative_float,
        default=DEFAULT_MAX_WAIT_MS,
        help="wait this long for more requests to batch "
        f"(default {DEFAULT_MAX_WAIT_MS:g})",
    )
    serve.add_argument(
        "--keep-versions",
        type=_positive_int,
        default=DEFAULT_KEEP_VERSIONS,
        help="newest loadable versions kept loaded "
        f"(default {DEFAULT_KEEP_VERSIONS})",
    )
    serve.add_argument(
        "--runtime",
        choices=RUNTIME_CHOICES,
        default=DEFAULT_RUNTIME,
        help="what runs each --model's serving_default/predict: auto = the "
        "version's LiteRT, else ONNX artifact once proven equal to "
        "TensorFlow, else TensorFlow (per model in --config; default "
        f"{DEFAULT_RUNTIME})",
    )
    serve.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="largest request body accepted (413 above it)",
    )
    serve.add_argument(
        "--max-instances-per-request",
        type=_positive_int,
        default=DEFAULT_MAX_INSTANCES_PER_REQUEST,
        help="more instances in one predict call get 413 (default "
        f"{DEFAULT_MAX_INSTANCES_PER_REQUEST}; per model in --config)",
    )
    serve.add_argument(
        "--header-timeout",
        type=_non_negative_float,
        default=DEFAULT_HEADER_TIMEOUT_S,
        help="seconds for a request's line and headers, then 408 "
        f"(default {DEFAULT_HEADER_TIMEOUT_S:g})",
    )
    serve.add_argument(
        "--body-timeout",
        type=_non_negative_float,
        default=DEFAULT_BODY_TIMEOUT_S,
        help="seconds for a request's body after its headers, then 408 "
        f"(default {DEFAULT_BODY_TIMEOUT_S:g})",
    )
    serve.add_argument(
        "--poll-interval",
        type=_non_negative_float,
        default=DEFAULT_POLL_INTERVAL_S,
        help="seconds between scans for new versions",
    )
    serve.add_argument(
        "--workers",
        type=_positive_int,
        default=DEFAULT_WORKERS,
        help="worker processes sharing the port(s) and the --db ledger; "
        "each loads the models; a worker that dies is restarted "
        f"(default {DEFAULT_WORKERS})",
    )
    serve.add_argument(
        "--access-log",
        choices=("on", "off"),
        default="on",
        help="one JSON line per request on stderr (never the API key)",
    )
    serve.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="least severe log messages printed on stderr",
    )
    serve.set_defaults(handler=_serve)
    return serve


def add_keys_parser(subparsers: Any, name: str = "keys") -> Any:
    """Adds `keys create|list|revoke|grant|withdraw` (sets `handler`).

    Args:
        subparsers: the object `ArgumentParser.add_subparsers()` returned.
        name: str. The command's name.

    Returns:
        The command's `argparse.ArgumentParser`.
    """
    keys = subparsers.add_parser(name, help="create, list, revoke API keys")
    actions = keys.add_subparsers(
        dest="keys_command",
        metavar="ACTION",
        help="what to do; keys ACTION --help lists its options",
    )
    actions.required = True
    create = actions.add_parser("create", help="create a key (shown once)")
    create.add_argument("--name", required=True, help="who the key is for")
    create.add_argument("--plan", required=True, help="rate/quota plan")
    create.add_argument(
        "--models", default=None, help="comma-separated models (default: all)"
    )
    create.add_argument(
        f"--{ADMIN_SCOPE}",
        action="store_true",
        help="give the key the admin scope: with auth on, it may read "
        "/metrics, /docs, /redoc and /openapi.json",
    )
    create.add_argument(
        "--json", action="store_true", help="print the key and record as JSON"
    )
    _add_db(create)
    _add_config(create)
    create.set_defaults(handler=_keys_create)
    listing = actions.add_parser("list", help="list keys (never secrets)")
    listing.add_argument("--all", action="store_true", help="include revoked")
    listing.add_argument(
        "--json", action="store_true", help="print the keys as JSON"
    )
    _add_db(listing)
    listing.set_defaults(handler=_keys_list)
    revoke = actions.add_parser("revoke", help="revoke a key by id or name")
    revoke.add_argument("key", help="key id or name")
    _add_db(revoke)
    revoke.set_defaults(handler=_keys_revoke)
    for action, verb in (("grant", "give"), ("withdraw", "take back")):
        change = actions.add_parser(
            action, help=f"{verb} a scope (admin) of a key by id or name"
        )
        change.add_argument("key", help="key id or name")
        change.add_argument("scope", choices=SCOPES, help="the scope")
        _add_db(change)
        change.set_defaults(handler=_keys_scope)
    return keys


def add_usage_parser(subparsers: Any, name: str = "usage") -> Any:
    """Adds the `usage` command (sets `handler`; returns its parser).

    Args:
        subparsers: the object `ArgumentParser.add_subparsers()` returned.
        name: str. The command's name.

    Returns:
        The command's `argparse.ArgumentParser`.
    """
    usage = subparsers.add_parser(
        name, help="usage and charges per key and model"
    )
    usage.add_argument(
        "--key", default=None, help="key id or name (default: every key)"
    )
    usage.add_argument(
        "--since",
        type=_date,
        default=None,
        help="count from this ISO-8601 date or time, UTC unless given "
        "(default: no start)",
    )
    usage.add_argument(
        "--until",
        type=_date,
        default=None,
        help="count up to this ISO-8601 date or time, excluded (default: "
        "no end)",
    )
    usage.add_argument(
        "--json", action="store_true", help="print the bill as JSON"
    )
    _add_db(usage)
    _add_config(usage)
    usage.set_defaults(handler=_usage)
    return usage


if __name__ == "__main__":  # python -m aiservice_kit.serving.cli ...
    from aiservice_kit.cli import main

    sys.exit(main())
