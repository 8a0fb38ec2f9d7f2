"""Picks the `tf.distribute` strategy that fits the hardware.

This is the only module of aiservice_kit that decides on hardware: which
strategy to use (TPU, several machines, several GPUs, one GPU, CPU), how
many replicas share a batch, and which mixed-precision policy fits.
Everything it returns is TensorFlow's own `tf.distribute.Strategy`, so
plain Keras code (`with strategy.scope(): ...`, `model.fit`) keeps working.
"""

import dataclasses
import glob
import json
import logging
import os
from typing import Any

import keras
import tensorflow as tf

from aiservice_kit._backend import REQUIRED_BACKEND
from aiservice_kit._validation import check_bool
from aiservice_kit._validation import check_choice
from aiservice_kit._validation import check_positive_int

logger = logging.getLogger("aiservice_kit")

#: Accepted values of `get_strategy(kind=...)`.
KINDS = ("auto", "tpu", "multi_worker", "mirrored", "gpu", "cpu")
#: What `StrategyInfo.accelerator` may say.
ACCELERATORS = ("tpu", "gpu", "cpu")

#: `/proc/cpuinfo` flags of CPUs that compute bfloat16 natively (oneDNN's
#: AVX512-BF16 and AMX kernels); elsewhere bfloat16 is emulated and slower
#: than float32 (4x for a small CNN on an AVX2-only CPU).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")

# A TPU system and a multi-worker collective group can only be set up once
# per process, and mirrored strategies share collective keys, so these
# strategies are created once per process and reused.
_CACHE: dict[str, tf.distribute.Strategy] = {}


def _check_backend() -> None:
    backend = keras.config.backend()
    if backend != REQUIRED_BACKEND:
        raise RuntimeError(
            "aiservice_kit's distribution helpers drive tf.distribute and "
            f"need Keras' TensorFlow backend, but Keras runs on "
            f"backend={backend!r}. Set KERAS_BACKEND=tensorflow before "
            "importing keras."
        )


def tf_config() -> dict[str, Any]:
    """Returns the parsed `TF_CONFIG` environment variable ({} when unset).

    Returns:
        The cluster description dict, with keys `cluster` and `task`.

    Raises:
        ValueError: if `TF_CONFIG` is set but is not a JSON object.

    Example:
    ```python
    workers = tf_config().get("cluster", {}).get("worker", [])
    ```
    """
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(
            "The TF_CONFIG environment variable must be a JSON object such "
            'as {"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
            f'"task": {{"type": "worker", "index": 0}}}}. Received: '
            f"TF_CONFIG={raw!r}"
        ) from error
    if not isinstance(config, dict):
        raise ValueError(
            "The TF_CONFIG environment variable must be a JSON object. "
            f"Received: TF_CONFIG={raw!r}"
        )
    return config


def _cluster_workers(config: dict[str, Any]) -> int:
    cluster = config.get("cluster", {}) or {}
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def _tpu_attached() -> bool:
    """Cheap evidence of a TPU, without contacting any metadata server."""
    if any(
        os.environ.get(name)
        for name in ("TPU_NAME", "COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE")
    ):
        return True
    return bool(glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*"))


def _tpu_strategy(tpu: str | None) -> tf.distribute.Strategy:
    if "tpu" in _CACHE:
        return _CACHE["tpu"]
    name = tpu if tpu is not None else os.environ.get("TPU_NAME", "local")
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=name)
        if name != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError, RuntimeError) as error:
        raise RuntimeError(
            f"get_strategy(kind='tpu') found no usable TPU (tpu={name!r}): "
            f"{error}. On a Cloud TPU VM install `aiservice_kit[tpu]` and "
            "run on the VM itself; for a TPU node set TPU_NAME or pass "
            "tpu='<name>'. Use kind='auto' to fall back to GPU or CPU."
        ) from error
    strategy = tf.distribute.TPUStrategy(resolver)
    _CACHE["tpu"] = strategy
    return strategy


def _multi_worker_strategy() -> tf.distribute.Strategy:
    if "multi_worker" in _CACHE:
        return _CACHE["multi_worker"]
    config = tf_config()
    if not config.get("cluster"):
        raise RuntimeError(
            "get_strategy(kind='multi_worker') needs the TF_CONFIG "
            "environment variable to describe the cluster, e.g. "
            'TF_CONFIG=\'{"cluster": {"worker": ["10.0.0.1:2222", '
            '"10.0.0.2:2222"]}, "task": {"type": "worker", "index": 0}}\' '
            "on each machine (see docs/scaling-out.md). Received: "
            f"TF_CONFIG={os.environ.get('TF_CONFIG')!r}"
        )
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    _CACHE["multi_worker"] = strategy
    return strategy


def get_strategy(
    kind: str = "auto", *, tpu: str | None = None, log: bool = True
) -> tf.distribute.Strategy:
    """Returns the `tf.distribute.Strategy` that fits this machine.

    With `kind="auto"` the choice is, in order: a TPU when one is attached;
    `MultiWorkerMirroredStrategy` when `TF_CONFIG` names more than one
    worker; `MirroredStrategy` over all GPUs when there are several; a
    `OneDeviceStrategy` on the GPU when there is one; else TensorFlow's
    default strategy on the CPU. Any other `kind` forces that choice and
    fails with a message naming the fix when the hardware is absent.

    Call it at the start of the program, before creating models or
    tensors: TensorFlow requires that for TPUs and multi-worker training.
    TPU, multi-worker and mirrored strategies are created once per process
    and reused.

    Args:
        kind: str. One of `"auto"`, `"tpu"`, `"multi_worker"`,
            `"mirrored"` (all GPUs, or all logical CPU devices when there
            is no GPU but the CPU was split), `"gpu"` (the first GPU) or
            `"cpu"`.
        tpu: str or None. TPU name or address for `TPUClusterResolver`;
            defaults to `$TPU_NAME`, else `"local"` (a Cloud TPU VM).
        log: bool. Whether to log the choice (logger `aiservice_kit`, level
            INFO) as `describe_strategy` words it.

    Returns:
        A `tf.distribute.Strategy`.

    Raises:
        ValueError: if `kind` is unknown.
        RuntimeError: if Keras does not run on TensorFlow, or the forced
            hardware is absent (no TPU, no GPU, no TF_CONFIG cluster, ...).

    Example:
    ```python
    import aiservice_kit
    strategy = aiservice_kit.get_strategy()
    print(aiservice_kit.describe_strategy(strategy))
    with strategy.scope():
        model = aiservice_kit.build_cnn((28, 28), num_classes=10)
    ```
    """
    check_choice("kind", kind, KINDS)
    check_bool("log", log)
    _check_backend()
    if kind == "auto":
        if _tpu_attached():
            kind = "tpu"
        elif _cluster_workers(tf_config()) > 1:
            kind = "multi_worker"
        else:
            gpus = tf.config.list_logical_devices("GPU")
            kind = "mirrored" if len(gpus) > 1 else "gpu" if gpus else "default"
    if kind == "tpu":
        strategy = _tpu_strategy(tpu)
    elif kind == "multi_worker":
        strategy = _multi_worker_strategy()
    elif kind == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        if not devices:
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
            if len(devices) < 2:
                raise RuntimeError(
                    "get_strategy(kind='mirrored') found no GPU and a single "
                    "CPU device, so there is nothing to mirror over. Use "
                    "kind='auto' or kind='cpu', or split the CPU into "
                    "logical devices first with tf.config."
                    "set_logical_device_configuration (as tests do)."
                )
        # One strategy per device set: a second MirroredStrategy over the
        # same devices reuses collective keys and can fail with "Shape
        # mismatch in the collective instance".
        key = "mirrored:" + ",".join(devices)
        if key not in _CACHE:
            _CACHE[key] = tf.distribute.MirroredStrategy(devices)
        strategy = _CACHE[key]
    elif kind == "gpu":
        gpus = tf.config.list_logical_devices("GPU")
        if not gpus:
            raise RuntimeError(
                "get_strategy(kind='gpu') found no GPU visible to "
                "TensorFlow. Install the GPU build (`pip install "
                "'aiservice_kit[gpu]'`), check `nvidia-smi` and "
                "CUDA_VISIBLE_DEVICES, or use kind='auto'."
            )
        strategy = tf.distribute.OneDeviceStrategy(gpus[0].name)
    elif kind == "cpu" and tf.config.list_logical_devices("GPU"):
        strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    else:  # "cpu" or "default": no accelerator, no distribution overhead
        strategy = tf.distribute.get_strategy()
    if log:
        logger.info("aiservice_kit strategy: %s", describe_strategy(strategy))
    return strategy


@dataclasses.dataclass(frozen=True)
class StrategyInfo:
    """What a strategy runs on; `str()` gives a one-line summary.

    Attributes:
        kind: str. `"tpu"`, `"multi_worker"`, `"mirrored"`, `"one_device"`
            or `"default"`.
        strategy: str. The strategy's class name.
        num_replicas: int. Replicas that share each global batch.
        devices: tuple of str. This worker's devices.
        num_workers: int. Machines (processes) in the cluster.
        worker_index: int. This worker's index (0 for a single worker).
        is_chief: bool. Whether this worker writes the run's files.
        accelerator: str. `"tpu"`, `"gpu"` or `"cpu"`: what the replicas
            compute on (it picks the mixed-precision policy).

    Example:
    ```python
    info = describe_strategy(get_strategy())
    if info.is_chief:
        print(f"training on {info.num_replicas} replica(s)")
    ```
    """

    kind: str
    strategy: str
    num_replicas: int
    devices: tuple[str, ...]
    num_workers: int
    worker_index: int
    is_chief: bool
    accelerator: str = "cpu"

    def __str__(self) -> str:
        where = (
            f", worker {self.worker_index} of {self.num_workers}"
            + (" (chief)" if self.is_chief else "")
            if self.num_workers > 1
            else ""
        )
        return (
            f"{self.strategy} ({self.kind}): {self.num_replicas} "
            f"replica(s){where} on {', '.join(self.devices)}"
        )


def _worker_devices(strategy: tf.distribute.Strategy) -> tuple[str, ...]:
    try:
        return tuple(strategy.extended.worker_devices)
    except (RuntimeError, AttributeError, NotImplementedError):
        return ()


def _kind_of(strategy: tf.distribute.Strategy) -> str:
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "tpu"
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "multi_worker"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return "mirrored"
    if isinstance(strategy, tf.distribute.OneDeviceStrategy):
        return "one_device"
    return "default"


def _check_strategy(strategy: Any) -> tf.distribute.Strategy:
    if strategy is None:
        return tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.Strategy):
        raise TypeError(
            "`strategy` must be a tf.distribute.Strategy (for example from "
            f"get_strategy()) or None. Received: strategy={strategy!r}"
        )
    return strategy


def describe_strategy(
    strategy: tf.distribute.Strategy | None = None,
) -> StrategyInfo:
    """Says what a strategy runs on: kind, replicas, devices, worker index.

    Args:
        strategy: tf.distribute.Strategy or None. Defaults to the strategy
            of the current scope (the default strategy outside any scope).

    Returns:
        A `StrategyInfo`; `str(info)` is a one-line summary.

    Raises:
        TypeError: if `strategy` is not a tf.distribute.Strategy.

    Example:
    ```python
    info = describe_strategy(get_strategy())
    print(info)  # _DefaultDistributionStrategy (default): 1 replica(s) ...
    info.num_replicas, info.is_chief
    ```
    """
    strategy = _check_strategy(strategy)
    kind = _kind_of(strategy)
    devices = _worker_devices(strategy)
    if not devices:
        devices = ("/cpu:0",)
    num_workers, worker_index, is_chief = 1, 0, True
    if kind == "multi_worker":
        resolver = strategy.cluster_resolver
        spec = resolver.cluster_spec().as_dict()
        num_workers = len(spec.get("worker", [])) + len(spec.get("chief", []))
        worker_index = int(resolver.task_id or 0)
        task_type = resolver.task_type
        is_chief = task_type == "chief" or (
            task_type == "worker" and worker_index == 0 and "chief" not in spec
        )
        if task_type == "worker" and "chief" in spec:
            worker_index += 1
    return StrategyInfo(
        kind=kind,
        strategy=type(strategy).__name__,
        num_replicas=int(strategy.num_replicas_in_sync),
        devices=devices,
        num_workers=max(num_workers, 1),
        worker_index=worker_index,
        is_chief=is_chief,
        accelerator=(
            "tpu" if kind == "tpu" else "gpu" if _has_gpu(strategy) else "cpu"
        ),
    )


def global_batch_size(
    per_replica_batch_size: int,
    strategy: tf.distribute.Strategy | None = None,
) -> int:
    """Returns the global batch size for a per-replica batch size.

    Keras and `tf.distribute` split each global batch evenly between the
    replicas, so keeping the per-replica size fixed as replicas are added
    keeps each device as busy as before.

    Args:
        per_replica_batch_size: int. Samples each replica processes a step.
        strategy: tf.distribute.Strategy or None. Defaults to the current
            scope's strategy.

    Returns:
        `per_replica_batch_size * strategy.num_replicas_in_sync`.

    Raises:
        TypeError: if an argument has a bad type.
        ValueError: if `per_replica_batch_size` is not positive.

    Example:
    ```python
    strategy = get_strategy()
    batch_size = global_batch_size(64, strategy)
    ```
    """
    per_replica_batch_size = check_positive_int(
        "per_replica_batch_size", per_replica_batch_size
    )
    strategy = _check_strategy(strategy)
    return per_replica_batch_size * int(strategy.num_replicas_in_sync)


def _has_gpu(strategy: tf.distribute.Strategy) -> bool:
    devices = _worker_devices(strategy)
    if devices:
        return any("GPU" in device.upper() for device in devices)
    return bool(tf.config.list_logical_devices("GPU"))


def mixed_precision_policy(
    strategy: tf.distribute.Strategy | None = None,
    *,
    enabled: bool | None = None,
) -> str:
    """Returns the Keras dtype policy name that fits the hardware.

    `"mixed_bfloat16"` on TPU, `"mixed_float16"` on GPU (Keras then scales
    the loss for you), and on CPU `"mixed_bfloat16"` where the CPU computes
    bfloat16 natively (AVX512-BF16 or AMX, `cpu_has_bf16`), else
    `"float32"` (emulated bfloat16 is slower than float32). The heads of
    aiservice_kit's builders stay float32 under any policy.

    Args:
        strategy: tf.distribute.Strategy or None. Defaults to the current
            scope's strategy.
        enabled: bool or None. None picks for the hardware; False always
            returns `"float32"`; True asks for mixed precision on any CPU.

    Returns:
        A policy name for `keras.config.set_dtype_policy`.

    Raises:
        TypeError: if an argument has a bad type.

    Example:
    ```python
    import keras
    keras.config.set_dtype_policy(mixed_precision_policy(strategy))
    with strategy.scope():
        model = build_cnn((28, 28), num_classes=10)
    ```
    """
    strategy = _check_strategy(strategy)
    if enabled is not None:
        check_bool("enabled", enabled)
    return policy_for(
        describe_strategy(strategy).accelerator,
        enabled,
        cpu_bf16=cpu_has_bf16(),
    )


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes bfloat16 natively (AVX512-BF16 or AMX).

    Args:
        cpuinfo: str or None. The text of `/proc/cpuinfo`; None reads it
            (False where there is none, e.g. on macOS or Windows).

    Returns:
        True when a `flags` line names one of `BF16_CPU_FLAGS`.

    Raises:
        TypeError: if `cpuinfo` is neither a string nor None.

    Example:
    ```python
    cpu_has_bf16("flags : fpu avx2 avx512_bf16")  # True
    ```
    """
    if cpuinfo is not None and not isinstance(cpuinfo, str):
        raise TypeError(
            "`cpuinfo` must be the text of /proc/cpuinfo or None. "
            f"Received: cpuinfo={cpuinfo!r} of type {type(cpuinfo).__name__}"
        )
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as file:
                cpuinfo = file.read()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return any(flag in value.split() for flag in BF16_CPU_FLAGS)
    return False


def policy_for(
    accelerator: str, enabled: bool | None = None, *, cpu_bf16: bool = False
) -> str:
    """The dtype policy `mixed_precision_policy` picks, as a pure rule.

    Args:
        accelerator: str. `"tpu"`, `"gpu"` or `"cpu"` (as
            `StrategyInfo.accelerator` reports it).
        enabled: bool or None. As for `mixed_precision_policy`.
        cpu_bf16: bool. The CPU computes bfloat16 natively
            (`cpu_has_bf16()`): None then picks `"mixed_bfloat16"` on CPU.

    Returns:
        `"mixed_bfloat16"`, `"mixed_float16"` or `"float32"`.

    Raises:
        ValueError: if `accelerator` is unknown.

    Example:
    ```python
    policy_for("gpu")  # 'mixed_float16'
    ```
    """
    check_choice("accelerator", accelerator, ACCELERATORS)
    check_bool("cpu_bf16", cpu_bf16)
    if enabled is False:
        return "float32"
    if accelerator == "tpu":
        return "mixed_bfloat16"
    if accelerator == "gpu":
        return "mixed_float16"
    if enabled is None:
        enabled = cpu_bf16
    return "mixed_bfloat16" if enabled else "float32"


def check_model_in_scope(
    model: keras.Model, strategy: tf.distribute.Strategy | None = None
) -> keras.Model:
    """Checks that a model's variables were created under `strategy`.

    A model built outside `strategy.scope()` holds ordinary variables that
    the strategy cannot mirror, and training it inside the scope fails (or
    silently trains on one device). This catches it before training.

    Args:
        model: keras.Model. A built model.
        strategy: tf.distribute.Strategy or None. Defaults to the current
            scope's strategy.

    Returns:
        The model, unchanged.

    Raises:
        TypeError: if `model` is not a keras.Model.
        ValueError: if any of its variables was created outside the scope,
            naming the fix.

    Example:
    ```python
    with strategy.scope():
        model = build_cnn((28, 28), num_classes=10)
    check_model_in_scope(model, strategy)
    ```
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`model` must be a keras.Model. Received: model={model!r}"
        )
    strategy = _check_strategy(strategy)
    for variable in model.weights:
        value = getattr(variable, "value", variable)
        if not strategy.extended.variable_created_in_scope(value):
            raise ValueError(
                f"The model {model.name!r} was built outside the scope of "
                f"the {type(strategy).__name__} it is trained with (its "
                f"variable {variable.path!r} belongs to another strategy). "
                "Build the model inside the scope: `with strategy.scope(): "
                "model = build_cnn(...)`, or pass the build function to "
                "aiservice_kit.train (`train(lambda: build_cnn(...), x, y, "
                "...)`), which builds it in the right scope."
            )
    return model
