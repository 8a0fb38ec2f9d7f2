"""Backend checks and log hygiene, run once when `aiservice_kit` is imported.

TensorFlow prints a wall of C++ log lines at import. We silence the info and
warning levels unless the user chose a level themselves, and we refuse to run
on a Keras backend other than TensorFlow, naming the fix.
"""

import contextlib
import json
import os
import sys

#: The Keras backend this library is written for.
REQUIRED_BACKEND = "tensorflow"
#: TF_CPP_MIN_LOG_LEVEL we set when the user chose none (errors only).
_QUIET_LEVEL = "2"
#: Marks a TF_CPP_MIN_LOG_LEVEL that we set, not the user.
_QUIET_MARKER = "AISERVICE_KIT_QUIET_TF"


def quiet_tensorflow_logs() -> bool:
    """Hides TensorFlow's info and warning log lines unless the user chose.

    A value the user set in `TF_CPP_MIN_LOG_LEVEL` is respected. A value we
    set ourselves is marked, so child processes (a server started from a
    notebook, say) stay quiet too instead of taking it for the user's.

    Returns:
        True when info lines are to be hidden (our default, or the user's
        level of 1 or more), so TensorFlow's start-up notices, which it
        prints before reading the level, should be hidden too.
    """
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    ours = os.environ.get(_QUIET_MARKER) == "1" and level == _QUIET_LEVEL
    if level is not None and not ours:
        return level.strip() not in ("", "0")
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = _QUIET_LEVEL
    os.environ[_QUIET_MARKER] = "1"
    return True


@contextlib.contextmanager
def _stderr_silenced():
    """Sends file descriptor 2 to /dev/null for the duration.

    TensorFlow's C++ start-up notices (oneDNN, absl) are written before its
    log level is read, so only a redirect of the descriptor hides them.
    Python exceptions still propagate normally.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real descriptor (some notebooks)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def native_logs_hidden() -> bool:
    """Whether TF_CPP_MIN_LOG_LEVEL asks to hide info lines (1 or more)."""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0").strip() not in ("", "0")


@contextlib.contextmanager
def quiet_native_logs():
    """Hides lines TensorFlow's C++ code writes straight to stderr.

    The LiteRT converter and interpreter print info lines ("Created
    TensorFlow Lite XNNPACK delegate", quantization settings) that ignore
    the log level; they are hidden while the level asks for quiet.
    """
    if not native_logs_hidden():
        yield
        return
    with _stderr_silenced():
        yield


def import_tensorflow(quiet: bool) -> None:
    """Imports TensorFlow once, hiding its start-up notices when `quiet`."""
    if "tensorflow" in sys.modules or not quiet:
        import tensorflow  # noqa: F401

        return
    with _stderr_silenced():
        import tensorflow  # noqa: F401


def configured_backend() -> str:
    """Returns the backend Keras will use, read the way Keras reads it.

    Read without importing Keras, because importing Keras on a backend whose
    framework is missing fails with an unhelpful ModuleNotFoundError.
    """
    if "keras" in sys.modules:
        return sys.modules["keras"].config.backend()
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    keras_home = os.environ.get(
        "KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras")
    )
    try:
        with open(os.path.join(keras_home, "keras.json")) as config:
            return str(json.load(config).get("backend", REQUIRED_BACKEND))
    except (OSError, ValueError, AttributeError):
        return REQUIRED_BACKEND


def check_backend(quiet: bool = False) -> None:
    """Fails early when Keras runs on a backend other than TensorFlow.

    Args:
        quiet: bool. Hide TensorFlow's start-up notices while importing it.

    Raises:
        ImportError: if TensorFlow is not installed, or Keras was configured
            (by `KERAS_BACKEND` or `~/.keras/keras.json`) for another backend.
    """
    backend = configured_backend()
    if backend != REQUIRED_BACKEND:
        raise ImportError(_wrong_backend_message(backend))
    try:
        import_tensorflow(quiet)
    except ImportError as error:
        raise ImportError(
            "aiservice_kit needs TensorFlow, which is not installed. Install "
            "the build for your hardware: `pip install 'aiservice_kit[cpu]'` "
            "(CPU), `pip install 'aiservice_kit[gpu]'` (NVIDIA GPU) or "
            "`pip install 'aiservice_kit[tpu]'` (Cloud TPU VM)."
        ) from error
    import keras

    if keras.config.backend() != REQUIRED_BACKEND:
        raise ImportError(_wrong_backend_message(keras.config.backend()))


def _wrong_backend_message(backend: str) -> str:
    return (
        "aiservice_kit runs on Keras' TensorFlow backend, but Keras is "
        f"configured for backend={backend!r}. Set the environment variable "
        "KERAS_BACKEND=tensorflow before importing keras (or set "
        '"backend": "tensorflow" in ~/.keras/keras.json).'
    )
