"""The `aiservice-kit` command line: `export` (and the commands others add).

Each subcommand is registered in `COMMANDS` as `(name, "module:function")`.
The function is `add_parser(subparsers, name) -> argparse.ArgumentParser`:
it adds its parser and sets `handler=callable(args) -> int` as a default.
Adding a command is one line in `COMMANDS`, for example::

    ("serve", "aiservice_kit.serving.cli:add_serve_parser"),

The module holding `add_parser` is imported whenever the parser is built,
so keep it light: import heavy modules (the web server, ...) inside the
handler, and `aiservice-kit export` never loads them.

One error policy for every command: arguments that do not fit (which
argparse cannot check alone) raise `UsageError`, reported here as
`aiservice-kit <command>: error: ...` with status 2, as argparse reports
its own usage errors; errors a user can fix otherwise (bad paths, bad
values, a failed export check) print the same one line and exit with
status 1 (set `AISERVICE_KIT_DEBUG=1` for the full traceback). A command
never calls `parser.error` or `sys.exit` itself. Run it as
`aiservice-kit ...` or `python -m aiservice_kit.cli ...`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiservice_kit._version import __version__

PROG = "aiservice-kit"

#: Registered subcommands: (name, "module:add_parser_function"), in the
#: order `--help` lists them.
COMMANDS: list[tuple[str, str]] = [
    ("export", "aiservice_kit.cli:add_export_parser"),
    ("serve", "aiservice_kit.serving.cli:add_serve_parser"),
    ("keys", "aiservice_kit.serving.cli:add_keys_parser"),
    ("usage", "aiservice_kit.serving.cli:add_usage_parser"),
]

#: Errors a user can act on: reported in one line, without a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    OSError,
    ImportError,
    RuntimeError,  # ExportError and ExportMismatchError subclass it
)


class UsageError(ValueError):
    """A command's arguments do not fit together (reported like argparse).

    Raised by a subcommand's handler; `main` prints
    `aiservice-kit <command>: error: <message>` and returns 2.

    Example:
    ```python
    raise UsageError("--opset applies to --format onnx only")
    ```
    """


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default after its help, when it has one.

    Unlike `argparse.ArgumentDefaultsHelpFormatter`, it leaves out
    defaults that say nothing (None, False, an empty list) and help texts
    that already state theirs.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if (
            "default" in help_text
            or action.default in (None, False, [], argparse.SUPPRESS)
            or not action.option_strings
        ):
            return help_text
        return super()._get_help_string(action)


def iter_parsers(
    parser: argparse.ArgumentParser,
) -> list[argparse.ArgumentParser]:
    """Returns `parser` and every (nested) subcommand parser under it.

    Args:
        parser: argparse.ArgumentParser. A parser, e.g. `build_parser()`.

    Returns:
        The parsers, `parser` first.

    Example:
    ```python
    from aiservice_kit.cli import build_parser, iter_parsers
    [p.prog for p in iter_parsers(build_parser())]
    ```
    """
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found.extend(iter_parsers(sub))
    return found


def _resolve(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def build_parser() -> argparse.ArgumentParser:
    """Builds the `aiservice-kit` parser with every registered subcommand.

    Returns:
        The top-level `argparse.ArgumentParser`.

    Example:
    ```python
    from aiservice_kit.cli import build_parser
    build_parser().print_help()
    ```
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "aiservice_kit: export trained Keras models and serve them."
        ),
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {__version__}",
        help="print the version and exit",
    )
    subparsers = parser.add_subparsers(
        dest="command",
        metavar="COMMAND",
        required=True,
        help="what to do; aiservice-kit COMMAND --help lists its options",
    )
    for name, target in COMMANDS:
        _resolve(target)(subparsers, name)
    for each in iter_parsers(parser):  # subcommands others add, too
        each.formatter_class = HelpFormatter
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the `aiservice-kit` command line.

    Args:
        argv: list of str or None. The arguments (without the program
            name); None reads `sys.argv[1:]`.

    Returns:
        The exit status: 0 on success, 1 when the command failed (the
        reason is printed on stderr), 2 for usage errors.

    Example:
    ```python
    from aiservice_kit.cli import main
    main(["export", "mnist.keras", "--format", "tflite"])
    ```
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2)
        return int(exit_.code or 0)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
    except UsageError as error:
        print(f"{PROG} {args.command}: error: {error}", file=sys.stderr)
        return 2
    except USER_ERRORS as error:
        if os.environ.get("AISERVICE_KIT_DEBUG"):
            raise  # the full traceback, for bug reports
        message = str(error) or type(error).__name__
        print(f"{PROG} {args.command}: error: {message}", file=sys.stderr)
        return 1


# --------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------

EXPORT_FORMATS = ("saved_model", "tflite", "onnx")


def add_export_parser(subparsers: Any, name: str) -> argparse.ArgumentParser:
    """Adds the `export` subcommand.

    Args:
        subparsers: the object `ArgumentParser.add_subparsers()` returned.
        name: str. The command's name.

    Returns:
        The subcommand's parser.
    """
    parser = subparsers.add_parser(
        name,
        help="export a .keras model to SavedModel, TFLite or ONNX",
        description=(
            "Export a .keras model and check the artifact against the model "
            "in its own runtime. saved_model writes OUTPUT/<version>/ "
            "atomically (TF Serving's layout); tflite and onnx write one "
            "file."
        ),
    )
    parser.add_argument("model", help="the .keras file to export")
    parser.add_argument(
        "--format",
        "-f",
        required=True,
        choices=EXPORT_FORMATS,
        help="the artifact format",
    )
    parser.add_argument(
        "--output",
        "-o",
        help=(
            "saved_model: the base directory (default: MODEL without "
            ".keras); tflite/onnx: the file (default: MODEL with the "
            "format's suffix)"
        ),
    )
    parser.add_argument(
        "--version",
        type=int,
        help="saved_model: the version to publish (default: the next one)",
    )
    parser.add_argument(
        "--quantization",
        choices=("dynamic", "float16", "int8"),
        help="tflite: quantize weights (dynamic, float16) or everything (int8)",
    )
    parser.add_argument(
        "--representative-data",
        metavar="FILE",
        help=(
            "tflite int8: real inputs to calibrate with, a .npy array or a "
            ".npz keyed by input name"
        ),
    )
    parser.add_argument(
        "--allow-flex",
        action="store_true",
        help="tflite: allow TensorFlow (Flex) ops; the runtime must link them",
    )
    parser.add_argument(
        "--opset", type=int, help="onnx: the ONNX opset (default: tf2onnx's)"
    )
    parser.add_argument(
        "--class-names",
        metavar="NAMES",
        help="saved_model: comma-separated class names for the metadata",
    )
    parser.add_argument(
        "--sample-data",
        metavar="FILE",
        help=(
            "inputs to verify with (.npy or .npz); default: a synthetic "
            "sample (int8: the representative data)"
        ),
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="skip the check against the Keras model (not recommended)",
    )
    parser.set_defaults(handler=run_export)
    return parser


def _load_array_file(path: str, option: str) -> Any:
    import numpy as np

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{option}: no file at {file}")
    if file.suffix == ".npy":
        return np.load(file, allow_pickle=False)
    if file.suffix == ".npz":
        with np.load(file, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    raise UsageError(
        f"{option} must be a .npy or .npz file. Received: {path!r}"
    )


def _renamed(error: Exception, argument: str) -> Exception:
    """`error` (a ValueError or TypeError) led by the argument it is about."""
    kind = TypeError if isinstance(error, TypeError) else ValueError
    return kind(f"{argument}: {error}")


def run_export(args: argparse.Namespace) -> int:
    """Handles `aiservice-kit export` (see `add_export_parser`)."""
    model_path = Path(args.model)
    if model_path.suffix.lower() != ".keras":
        raise UsageError(
            f"MODEL must be a .keras file. Received: {args.model!r}"
        )
    if not model_path.is_file():
        raise FileNotFoundError(f"MODEL: no file at {model_path}")
    fmt = args.format
    only = {
        "version": ("saved_model", args.version is not None),
        "class-names": ("saved_model", args.class_names is not None),
        "quantization": ("tflite", args.quantization is not None),
        "representative-data": ("tflite", args.representative_data),
        "allow-flex": ("tflite", args.allow_flex),
        "opset": ("onnx", args.opset is not None),
    }
    for option, (needs, given) in only.items():
        if given and fmt != needs:
            raise UsageError(f"--{option} applies to --format {needs} only")
    if args.quantization == "int8" and not args.representative_data:
        raise UsageError(
            "--quantization int8 needs --representative-data FILE: a few "
            "hundred real inputs saved with numpy.save"
        )
    if args.representative_data and args.quantization != "int8":
        raise UsageError(
            "--representative-data applies to --quantization int8 only"
        )
    if args.no_verify and args.sample_data:
        raise UsageError("--sample-data and --no-verify contradict each other")
    # Validate every file argument before the (slow) model load.
    representative = (
        _load_array_file(args.representative_data, "--representative-data")
        if args.representative_data
        else None
    )
    sample = (
        _load_array_file(args.sample_data, "--sample-data")
        if args.sample_data
        else None
    )

    # And the output, named as the option, before the load too.
    from aiservice_kit._layout import check_base_path
    from aiservice_kit.export._files import check_output_path

    if fmt == "saved_model":
        default = model_path.with_suffix("")
        output = check_base_path(args.output or default, "--output")
    else:
        suffix = f".{args.quantization}.tflite" if args.quantization else ""
        default = model_path.with_suffix(suffix or f".{fmt}")
        output = check_output_path(
            args.output or default, (f".{fmt}",), "--output"
        )

    from aiservice_kit import export

    try:
        model = export.load_model(model_path, compile=False)
    except (ValueError, TypeError) as error:
        raise _renamed(error, "MODEL") from None
    if sample is not None:
        from aiservice_kit.export._signature import plan
        from aiservice_kit.export.verify import as_samples

        planned = plan(model)
        try:
            as_samples(planned, sample)
        except (ValueError, TypeError) as error:
            raise _renamed(error, "--sample-data") from None
    verify = not args.no_verify
    if fmt == "saved_model":
        class_names = (
            [name.strip() for name in args.class_names.split(",")]
            if args.class_names
            else None
        )
        written = export.export_saved_model(
            model,
            output,
            args.version,
            verify=verify,
            sample_inputs=sample,
            class_names=class_names,
        )
    elif fmt == "tflite":
        written = export.export_tflite(
            model,
            output,
            args.quantization,
            representative,
            allow_flex=args.allow_flex,
            verify=verify,
            sample_inputs=sample,
        )
    else:
        written = export.export_onnx(
            model,
            output,
            opset=args.opset,
            verify=verify,
            sample_inputs=sample,
        )
    print(f"{fmt}: wrote {written}")
    if verify:
        # The exporter checked the artifact before publishing it; run the
        # check once more on the published artifact to show its figures.
        sample = representative if sample is None else sample
        report = export.verify_export(model, written, sample)
        print(f"verified: {report}")
    else:
        print("not verified (--no-verify)")
    return 0


if __name__ == "__main__":  # python -m aiservice_kit.cli
    # Run the imported module, not this `__main__` copy: the commands raise
    # `aiservice_kit.cli.UsageError`, which is not `__main__.UsageError`.
    from aiservice_kit.cli import main as _main

    sys.exit(_main())
