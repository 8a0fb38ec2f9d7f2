"""Backend checks, logs and CPU kernels, set when `aiservice_kit` loads.

TensorFlow prints a wall of C++ log lines at import. We silence the info and
warning levels unless the user chose a level themselves, we turn on
TensorFlow's oneDNN CPU kernels where TensorFlow leaves them off, we
refuse to run on a Keras backend other than TensorFlow, naming the fix, and
we register the library's Keras classes as soon as Keras loads. The import
hooks here never import TensorFlow or Keras themselves.
"""

import contextlib
import importlib
import importlib.abc
import json
import os
import platform
import sys
import threading
import typing
import warnings

#: The Keras backend this library is written for.
REQUIRED_BACKEND = "tensorflow"
#: TF_CPP_MIN_LOG_LEVEL we set when the user chose none (errors only).
_QUIET_LEVEL = "2"
#: Marks a TF_CPP_MIN_LOG_LEVEL that we set, not the user.
_QUIET_MARKER = "AISERVICE_KIT_QUIET_TF"
#: TensorFlow's switch for its oneDNN CPU kernels ("1" on, "0" off).
ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
#: Holds the value we gave TF_ENABLE_ONEDNN_OPTS, to tell it from the user's.
_ONEDNN_MARKER = "AISERVICE_KIT_ONEDNN"
#: Machines (`platform.machine()`) whose TensorFlow wheels carry the
#: x86-64 oneDNN kernels.
_ONEDNN_MACHINES = ("x86_64", "amd64")


def _onednn_is_ours() -> bool:
    value = os.environ.get(ONEDNN_VARIABLE)
    return value is not None and os.environ.get(_ONEDNN_MARKER) == value


def _set_onednn(value: str) -> None:
    os.environ[ONEDNN_VARIABLE] = value
    os.environ[_ONEDNN_MARKER] = value


def enable_onednn_kernels(machine: str | None = None) -> bool:
    """Turns on TensorFlow's oneDNN CPU kernels unless the user chose.

    TensorFlow's x86-64 wheels carry oneDNN's convolution, matmul and
    pooling kernels but switch them on only on CPUs with AVX512-VNNI,
    AVX512-BF16, AVX-VNNI or AMX. On an AVX2 server they stay off, and
    training the textbook MNIST CNN ran 1.6x faster with them on
    (benchmarks/cnn.py; docs/image-classification.md). The results are
    the same up to floating-point rounding order, as TensorFlow notes when
    it turns them on itself. `aiservice-kit serve` turns them back off
    (`keep_onednn_kernels_off`): one-image calls were slower with them.

    A `TF_ENABLE_ONEDNN_OPTS` that is already set (by the user, or by a
    parent process) is left as it is, and nothing changes once TensorFlow
    is imported (it reads the variable at import). Child processes
    (server workers, multi-worker training) inherit the setting.

    Args:
        machine: str or None. The machine name to decide for; None reads
            `platform.machine()`.

    Returns:
        True when TensorFlow will load with the oneDNN kernels on because
        of this call or an earlier setting, False otherwise.

    Example:
    ```python
    from aiservice_kit import _backend
    _backend.enable_onednn_kernels()  # what `import aiservice_kit` does
    ```
    """
    chosen = os.environ.get(ONEDNN_VARIABLE)
    if chosen is not None:
        return chosen.strip() not in ("", "0", "false", "False")
    if "tensorflow" in sys.modules:
        return False
    machine = platform.machine() if machine is None else machine
    if machine.lower() not in _ONEDNN_MACHINES:
        return False
    _set_onednn("1")
    return True


def keep_onednn_kernels_off() -> bool:
    """Turns the oneDNN kernels `enable_onednn_kernels` set back off.

    For a serving process: with them on, one MNIST CNN call through the
    SavedModel took 0.78 ms instead of 0.54 ms, and the server's p50 at
    concurrency 1 rose from 1.38 to 1.66 ms (benchmarks/serving.py). A
    value the user set is kept, and nothing changes once TensorFlow is
    imported.

    Returns:
        True when this call turned them off.

    Example:
    ```python
    from aiservice_kit import _backend
    _backend.keep_onednn_kernels_off()  # what `aiservice-kit serve` does
    ```
    """
    if "tensorflow" in sys.modules or not _onednn_is_ours():
        return False
    _set_onednn("0")
    return True


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


MISSING_TENSORFLOW = (
    "aiservice_kit needs TensorFlow, which is not installed. Install the "
    "build for your hardware: `pip install 'aiservice_kit[cpu]'` (CPU), "
    "`pip install 'aiservice_kit[gpu]'` (NVIDIA GPU) or "
    "`pip install 'aiservice_kit[tpu]'` (Cloud TPU VM)."
)


class _QuietLoader(importlib.abc.Loader):
    """Runs one module's loader with file descriptor 2 silenced."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        _remove_tensorflow_hook()
        # Put the real loader back first, so nothing of ours stays behind.
        module.__loader__ = module.__spec__.loader = self.loader
        with _stderr_silenced():
            self.loader.exec_module(module)


class _TensorFlowImportHook(importlib.abc.MetaPathFinder):
    """Makes the first `import tensorflow`, whoever runs it, quiet.

    Sits on `sys.meta_path` until TensorFlow is imported (by Keras, by the
    library or by the user) and wraps that one import in the descriptor
    redirect, then removes itself. Finding is left to the other finders,
    so `importlib.util.find_spec("tensorflow")` answers as usual.
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        spec = _spec_from_other_finders(self, fullname, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def _spec_from_other_finders(hook, fullname, path, target):
    """The spec the finders on `sys.meta_path` other than `hook` give."""
    for finder in sys.meta_path:
        if finder is hook or not hasattr(finder, "find_spec"):
            continue
        spec = finder.find_spec(fullname, path, target)
        if spec is not None:
            return spec
    return None


def _remove_tensorflow_hook() -> None:
    sys.meta_path[:] = [
        finder
        for finder in sys.meta_path
        if not isinstance(finder, _TensorFlowImportHook)
    ]


def hide_tensorflow_start_up_notices() -> None:
    """Hides TensorFlow's start-up notices, without importing it now.

    Unless the user asked for TensorFlow's info lines (see
    `quiet_tensorflow_logs`), the first import of TensorFlow in this
    process, whenever it happens, runs with descriptor 2 silenced.
    Importing `aiservice_kit` therefore stays cheap (no TensorFlow for the
    recommenders), and `import aiservice_kit` before `import keras` still
    keeps a notebook free of TensorFlow's C++ start-up lines.
    """
    if not quiet_tensorflow_logs() or "tensorflow" in sys.modules:
        return
    if not any(isinstance(f, _TensorFlowImportHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _TensorFlowImportHook())


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


def check_configured_backend() -> None:
    """Fails early, without importing Keras, when another backend is set.

    Raises:
        ImportError: if Keras is configured (by `KERAS_BACKEND` or
            `~/.keras/keras.json`) for a backend other than TensorFlow.
    """
    backend = configured_backend()
    if backend != REQUIRED_BACKEND:
        raise ImportError(_wrong_backend_message(backend))


def _wrong_backend_message(backend: str) -> str:
    return (
        "aiservice_kit runs on Keras' TensorFlow backend, but Keras is "
        f"configured for backend={backend!r}. Set the environment variable "
        "KERAS_BACKEND=tensorflow before importing keras (or set "
        '"backend": "tensorflow" in ~/.keras/keras.json).'
    )


# --------------------------------------------------------------------------
# Registration of the library's Keras classes, without importing Keras now.
# --------------------------------------------------------------------------


def register_keras_classes_when_keras_loads(module_name: str) -> None:
    """Imports `module_name` as soon as Keras is loaded, or now if it is.

    Importing that module registers the library's Keras classes (models,
    layers), so a `.keras` file the builders saved reloads with
    `keras.models.load_model` and no `custom_objects`. The module needs
    TensorFlow, and `import aiservice_kit` stays light, so a finder waits
    on `sys.meta_path` for Keras (or TensorFlow, which imports it) and
    removes itself once it has registered.

    Args:
        module_name: str. The module whose import registers the classes.
    """
    if "keras" in sys.modules:
        _register_keras_classes(module_name)
    elif not any(isinstance(f, _KerasHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _KerasHook(module_name))


def _register_keras_classes(module_name: str) -> None:
    """Imports the module whose import registers the builders' classes."""
    _remove_registration_hook()
    try:
        importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - never break `import keras`
        warnings.warn(
            "aiservice_kit could not register its Keras classes, so its "
            f"`.keras` files may not load: import {module_name} to see why. "
            f"({type(error).__name__}: {error})",
            stacklevel=2,
        )


class _CountingLoader(importlib.abc.Loader):
    """Runs one module's loader, registering once the outermost is done."""

    def __init__(self, loader: importlib.abc.Loader, hook: "_KerasHook"):
        self.loader = loader
        self.hook = hook

    def __getattr__(self, name: str) -> typing.Any:
        # Everything else (`get_code` for `python -m`, `is_package`,
        # `get_resource_reader`, `get_source`) is the real loader's.
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        # Put the real loader back first, so nothing of ours stays behind.
        module.__loader__ = module.__spec__.loader = self.loader
        with self.hook.lock:
            self.hook.depth += 1
        done = False
        try:
            self.loader.exec_module(module)
            done = True
        finally:
            with self.hook.lock:
                self.hook.depth -= 1
                outermost = self.hook.depth == 0
        if done and outermost and "keras" in sys.modules:
            _register_keras_classes(self.hook.module_name)


class _KerasHook(importlib.abc.MetaPathFinder):
    """Registers the library's Keras classes once Keras is imported.

    It counts the imports of Keras, TensorFlow (which imports Keras
    itself) and of this package's modules in flight, and registers when
    the outermost one has finished, so no module the registration needs is
    half-initialized. Finding is left to the other finders.
    """

    def __init__(self, module_name: str) -> None:
        self.module_name = module_name
        self.depth = 0
        self.lock = threading.Lock()
        # Other hooks that ask every finder (the TensorFlow one above)
        # would ask this one back: answer them None.
        self.finding = threading.local()

    def find_spec(self, fullname, path=None, target=None):
        if getattr(self.finding, "active", False) or (
            fullname not in ("keras", "tensorflow")
            and not fullname.startswith("aiservice_kit.")
        ):
            return None
        self.finding.active = True
        try:
            spec = _spec_from_other_finders(self, fullname, path, target)
        finally:
            self.finding.active = False
        if spec is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _CountingLoader(spec.loader, self)
        return spec


def _remove_registration_hook() -> None:
    sys.meta_path[:] = [
        finder for finder in sys.meta_path if not isinstance(finder, _KerasHook)
    ]
