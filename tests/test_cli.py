"""The `aiservice-kit` command line: export, errors, command registration."""

import subprocess
import sys

import keras
import numpy as np
import pytest

from aiservice_kit import build_cnn
from aiservice_kit import cli
from aiservice_kit.export import load_artifact
from aiservice_kit.export import read_export_metadata
from aiservice_kit.export import save_model
from aiservice_kit.models.sequence import build_lstm


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A trained tiny CNN saved as .keras, and real-looking pixel arrays."""
    directory = tmp_path_factory.mktemp("cli")
    keras.utils.set_random_seed(0)
    model = build_cnn((8, 8), num_classes=3, filters=(8,), dense_units=64)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 8, 8)).astype(np.uint8)
    model.fit(images, rng.integers(0, 3, 64), epochs=1, verbose=0)
    save_model(model, directory / "tiny.keras")
    np.save(directory / "images.npy", images)
    return directory


def run(argv, capsys):
    status = cli.main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_export_saved_model_publishes_a_version(workdir, tmp_path, capsys):
    model_path = workdir / "tiny.keras"
    argv = ["export", model_path, "-f", "saved_model", "-o", tmp_path / "m"]
    status, out, err = run([*argv, "--class-names", "a, b,c"], capsys)
    assert status == 0, err
    assert "wrote" in out and "passed" in out
    meta = read_export_metadata(tmp_path / "m" / "1")
    assert meta["class_names"] == ["a", "b", "c"]
    status, out, _ = run([*argv, "--version", "7", "--no-verify"], capsys)
    assert status == 0
    assert "not verified" in out
    assert (tmp_path / "m" / "7" / "saved_model.pb").is_file()
    status, _, err = run([*argv, "--version", "7"], capsys)
    assert status == 1
    assert "already exists" in err and "Traceback" not in err


def test_export_tflite_and_onnx_run_in_their_runtimes(workdir, capsys):
    images = np.load(workdir / "images.npy")
    status, out, err = run(
        [
            "export",
            workdir / "tiny.keras",
            "--format",
            "tflite",
            "--quantization",
            "int8",
            "--representative-data",
            workdir / "images.npy",
        ],
        capsys,
    )
    assert status == 0, err
    int8_path = workdir / "tiny.int8.tflite"  # default output beside MODEL
    assert f"wrote {int8_path}" in out
    status, _, err = run(
        ["export", workdir / "tiny.keras", "-f", "onnx"], capsys
    )
    assert status == 0, err
    model = keras.saving.load_model(workdir / "tiny.keras")
    expected = model.predict(images, verbose=0).argmax(-1)
    for path in (int8_path, workdir / "tiny.onnx"):
        predicted = load_artifact(path)(image=images)["predicted_class"]
        assert np.mean(predicted == expected) >= 0.9


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["export", "{w}/missing.keras", "-f", "onnx"], 1, "no file at"),
        (["export", "{w}/images.npy", "-f", "onnx"], 2, "must be a .keras"),
        (["export", "{w}/tiny.keras", "-f", "pb"], 2, "invalid choice"),
        (
            [
                "export",
                "{w}/tiny.keras",
                "-f",
                "tflite",
                "--quantization",
                "int8",
            ],
            2,
            "needs --representative-data",
        ),
        (
            ["export", "{w}/tiny.keras", "-f", "tflite", "--opset", "13"],
            2,
            "--opset applies to --format onnx only",
        ),
        (
            ["export", "{w}/tiny.keras", "-f", "saved_model", "--version", "0"],
            1,
            "`version` must be an integer >= 1",
        ),
        (
            [
                "export",
                "{w}/tiny.keras",
                "-f",
                "tflite",
                "--quantization",
                "int8",
                "--representative-data",
                "{w}/nothing.npy",
            ],
            1,
            "no file at",
        ),
    ],
)
def test_bad_input_exits_non_zero_with_a_clear_message(
    workdir, capsys, argv, status, message
):
    argv = [arg.replace("{w}", str(workdir)) for arg in argv]
    got, out, err = run(argv, capsys)
    assert got == status
    assert message in err
    assert "Traceback" not in err + out


def test_preflight_failure_names_the_layer(tmp_path, capsys):
    model = build_lstm((10, 3), num_classes=2, units=4, compile=False)
    save_model(model, tmp_path / "lstm.keras")
    status, _, err = run(
        ["export", tmp_path / "lstm.keras", "--format", "tflite"], capsys
    )
    assert status == 1
    assert "LSTM" in err and "unroll=True" in err
    assert not (tmp_path / "lstm.tflite").exists()


def _add_hello(subparsers, name):
    parser = subparsers.add_parser(name, help="say hello")
    parser.add_argument("--who", default="world")
    parser.set_defaults(handler=lambda args: print(f"hello {args.who}") or 0)
    return parser


def test_other_modules_can_register_commands(monkeypatch, capsys):
    monkeypatch.setattr(
        cli, "COMMANDS", [*cli.COMMANDS, ("hello", f"{__name__}:_add_hello")]
    )
    status, out, _ = run(["hello", "--who", "serving"], capsys)
    assert (status, out) == (0, "hello serving\n")
    status, out, _ = run(["--help"], capsys)
    assert status == 0
    assert "export" in out and "hello" in out


def test_module_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "aiservice_kit.cli", "export", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "--format" in result.stdout and "saved_model" in result.stdout


def test_int8_tflite_export_prints_only_its_own_lines(workdir, tmp_path):
    # TensorFlow's converter and LiteRT interpreter write info lines straight
    # to stderr ("fully_quantize: ...", "Created TensorFlow Lite XNNPACK
    # delegate"); a command must not pass them on to the user.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "aiservice_kit.cli",
            "export",
            str(workdir / "tiny.keras"),
            "--format",
            "tflite",
            "--quantization",
            "int8",
            "--representative-data",
            str(workdir / "images.npy"),
            "--output",
            str(tmp_path / "tiny.tflite"),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines()[0].startswith("tflite: wrote")


def test_every_option_of_every_command_has_help():
    # Parses the real parsers, so commands and options others add are held
    # to it too.
    parsers = cli.iter_parsers(cli.build_parser())
    progs = {parser.prog for parser in parsers}
    for command in ("export", "serve", "keys create", "keys list", "usage"):
        assert f"aiservice-kit {command}" in progs
    missing = [
        f"{parser.prog} {action.option_strings or action.dest}"
        for parser in parsers
        for action in parser._actions
        if not (action.help or "").strip()
    ]
    assert missing == []


@pytest.mark.parametrize(
    "argv",
    [[], ["export"], ["serve"], ["keys"], ["keys", "create"], ["usage"]],
)
def test_help_shows_the_defaults(argv, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one line per option
    status, out, _ = run([*argv, "--help"], capsys)
    assert status == 0
    if argv == ["serve"]:
        assert "(default: 8501)" in out  # --port
        assert "(default: info)" in out  # --log-level
        assert "(default: None)" not in out


def test_version_prints_the_package_version(capsys):
    from aiservice_kit import __version__

    status, out, _ = run(["--version"], capsys)
    assert (status, out) == (0, f"aiservice-kit {__version__}\n")


def test_a_corrupt_keras_file_is_named_as_one(tmp_path, capsys):
    junk = tmp_path / "junk.keras"
    junk.write_text("not a zip\n")

    status, out, err = run(
        ["export", junk, "-f", "saved_model", "-o", tmp_path / "m"], capsys
    )

    assert status == 1
    assert err.startswith("aiservice-kit export: error: MODEL: ")
    assert "not a readable .keras archive" in err and str(junk) in err
    assert "File not found" not in err and "Traceback" not in err + out
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("fmt", ["saved_model", "onnx"])
def test_non_numeric_sample_data_names_the_option(
    workdir, tmp_path, capsys, fmt
):
    strings = tmp_path / "strings.npy"
    np.save(strings, np.array([["a"] * 8] * 8))
    output = tmp_path / ("m" if fmt == "saved_model" else "m.onnx")

    status, out, err = run(
        ["export", workdir / "tiny.keras", "-f", fmt, "-o", output,
         "--sample-data", strings],
        capsys,
    )  # fmt: skip

    assert status == 1
    assert err.startswith("aiservice-kit export: error: --sample-data: ")
    assert "must be numeric" in err and "'image'" in err
    assert "ufunc" not in err and "Traceback" not in err + out
    assert not output.exists()


@pytest.mark.parametrize(
    ("fmt", "output", "message"),
    [
        ("saved_model", "a_file.txt", "is an existing file"),
        ("saved_model", "a_file.txt/m", "is under"),
        ("tflite", "out.onnx", "must end in .tflite"),
        ("onnx", "a_dir.onnx", "is a directory"),
    ],
)
def test_a_bad_output_names_the_option(
    workdir, tmp_path, capsys, fmt, output, message
):
    (tmp_path / "a_file.txt").write_text("x")
    (tmp_path / "a_dir.onnx").mkdir()

    status, out, err = run(
        ["export", workdir / "tiny.keras", "-f", fmt, "-o", tmp_path / output],
        capsys,
    )

    assert status == 1
    assert err.startswith("aiservice-kit export: error: `--output` ")
    assert message in err and f"--output='{tmp_path / output}'" in err
    assert "Errno" not in err and "Traceback" not in err + out
