"""get_strategy and friends, on the two logical CPU devices of conftest."""

import json

import keras
import pytest
import tensorflow as tf

from aiservice_kit import build_cnn
from aiservice_kit import describe_strategy
from aiservice_kit import get_strategy
from aiservice_kit.distribute import check_model_in_scope
from aiservice_kit.distribute import cpu_has_bf16
from aiservice_kit.distribute import global_batch_size
from aiservice_kit.distribute import mixed_precision_policy
from aiservice_kit.distribute import tf_config


@pytest.fixture
def no_cluster(monkeypatch):
    for name in ("TF_CONFIG", "TPU_NAME", "COLAB_TPU_ADDR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("TPU_ACCELERATOR_TYPE", raising=False)


def test_auto_on_a_cpu_machine_is_the_default_strategy(no_cluster, caplog):
    with caplog.at_level("INFO", logger="aiservice_kit"):
        strategy = get_strategy()
    assert strategy is tf.distribute.get_strategy()
    info = describe_strategy(strategy)
    assert (info.kind, info.num_replicas, info.num_workers) == ("default", 1, 1)
    assert info.is_chief and info.worker_index == 0
    assert "1 replica(s)" in caplog.text


@pytest.mark.multi_device
def test_mirrored_uses_both_logical_cpus_and_is_reused():
    strategy = get_strategy("mirrored", log=False)
    assert get_strategy("mirrored", log=False) is strategy
    info = describe_strategy(strategy)
    assert info.kind == "mirrored" and info.num_replicas == 2
    assert len(info.devices) == 2 and all("CPU" in d for d in info.devices)
    assert "2 replica(s)" in str(info)
    assert global_batch_size(64, strategy) == 128


def test_forced_kinds_fail_clearly_without_the_hardware(no_cluster):
    with pytest.raises(RuntimeError, match="no GPU"):
        get_strategy("gpu")
    with pytest.raises(RuntimeError, match="TF_CONFIG"):
        get_strategy("multi_worker")
    with pytest.raises(ValueError, match="kind"):
        get_strategy("cluster")
    with pytest.raises(TypeError, match="log"):
        get_strategy(log="yes")


def test_tf_config_is_parsed_and_checked(monkeypatch):
    config = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"index": 1}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert tf_config() == config
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG"):
        tf_config()
    monkeypatch.setenv("TF_CONFIG", "")
    assert tf_config() == {}


def test_mixed_precision_fits_the_hardware():
    cpu = get_strategy("cpu", log=False)
    native = "mixed_bfloat16" if cpu_has_bf16() else "float32"
    assert mixed_precision_policy(cpu) == native
    assert mixed_precision_policy(cpu, enabled=True) == "mixed_bfloat16"
    assert mixed_precision_policy(cpu, enabled=False) == "float32"
    with pytest.raises(TypeError, match="enabled"):
        mixed_precision_policy(cpu, enabled="on")


def test_global_batch_size_checks_its_arguments():
    with pytest.raises(ValueError, match="per_replica_batch_size"):
        global_batch_size(0)
    with pytest.raises(TypeError, match="strategy"):
        global_batch_size(8, strategy="mirrored")


@pytest.mark.multi_device
def test_model_built_outside_the_scope_is_refused_naming_the_fix():
    strategy = get_strategy("mirrored", log=False)
    outside = build_cnn((8, 8), num_classes=2, filters=(4,))
    with pytest.raises(ValueError, match=r"with strategy\.scope\(\)"):
        check_model_in_scope(outside, strategy)
    with strategy.scope():
        inside = build_cnn((8, 8), num_classes=2, filters=(4,))
    assert check_model_in_scope(inside, strategy) is inside
    with pytest.raises(TypeError, match="model"):
        check_model_in_scope("cnn", strategy)


@pytest.mark.multi_device
def test_builders_work_inside_a_strategy_scope():
    strategy = get_strategy("mirrored", log=False)
    with strategy.scope():
        model = build_cnn((8, 8), num_classes=3, filters=(4,))
    assert model.distribute_strategy is strategy
    assert isinstance(model, keras.Model)
