"""`serve --workers N`: N worker processes on one host, one port, one ledger.

uvicorn's supervisor (`uvicorn.supervisors.Multiprocess`) binds the REST
port once and starts N processes (multiprocessing's `spawn`) that accept on
it. Each worker builds the app from the same `serve` arguments, handed down
as JSON in `$AISERVICE_KIT_SERVE_ARGS` (`app` is the factory uvicorn calls,
`http` the connection-limited protocol), loads the models and runs its own
batcher and ledger writer. The supervisor restarts a worker that dies or
stops answering its health check, stops every worker on SIGTERM or SIGINT,
and gives up when a worker fails before it starts serving (a broken model
or config would fail the same way again). With `--grpc-port`, every worker
binds the gRPC port with SO_REUSEPORT and the kernel spreads connections.

Quotas and rates stay exact: every reservation and token is a transaction
on the one `--db` database (`_ledger`), the same as for replicas on several
hosts, and a killed worker's reservations are released by the others'
heartbeats.
"""

import argparse
import json
import os
from pathlib import Path
from typing import Any

#: The environment variable that hands `serve`'s arguments to the workers.
ARGS_ENV = "AISERVICE_KIT_SERVE_ARGS"


def encode_args(args: argparse.Namespace) -> str:
    """`serve`'s parsed arguments as JSON (what a worker needs).

    Args:
        args: argparse.Namespace. The parsed `serve` arguments.

    Returns:
        The JSON text.

    Example:
    ```python
    os.environ[ARGS_ENV] = encode_args(args)
    ```
    """
    fields = {
        name: value for name, value in vars(args).items() if not callable(value)
    }
    fields["model"] = [list(spec) for spec in args.model]
    fields["config"] = None if args.config is None else str(args.config)
    return json.dumps(fields)


def decode_args(text: str) -> argparse.Namespace:
    """The arguments `encode_args` wrote.

    Args:
        text: str. The JSON text.

    Returns:
        The `serve` arguments.

    Raises:
        ValueError: when the text is not what `encode_args` writes.
    """
    fields = json.loads(text)
    if not isinstance(fields, dict) or "model" not in fields:
        raise ValueError(f"${ARGS_ENV} does not hold serve's arguments.")
    fields["model"] = [tuple(spec) for spec in fields["model"]]
    if fields["config"] is not None:
        fields["config"] = Path(fields["config"])
    return argparse.Namespace(**fields)


def _args() -> argparse.Namespace:
    text = os.environ.get(ARGS_ENV)
    if text is None:
        raise RuntimeError(
            f"${ARGS_ENV} is not set: this module is imported by the "
            "workers of `aiservice-kit serve --workers N`, not run alone."
        )
    return decode_args(text)


def app() -> Any:
    """The app factory each worker process calls (uvicorn `factory=True`).

    Returns:
        The worker's app, built from `serve`'s arguments.

    Example:
    ```python
    uvicorn.run("aiservice_kit.serving._workers:app", factory=True, workers=2)
    ```
    """
    from aiservice_kit.serving import cli

    args = _args()
    cli.setup_process(args)
    return cli.build_app(args)


def __getattr__(name: str) -> Any:
    # `http`: the protocol class uvicorn imports in each worker by name
    # (a class built at run time cannot be pickled to a spawned process).
    if name == "http":
        from aiservice_kit.serving import cli

        return cli.http_protocol(_args())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
