"""`train`'s hardware policy (`_training_plan`), without training."""

import pytest

from aiservice_kit.distribute import StrategyInfo
from aiservice_kit.distribute import cpu_has_bf16
from aiservice_kit.distribute import policy_for
from aiservice_kit.training import DEFAULT_STEPS_PER_EXECUTION
from aiservice_kit.training import _training_plan


def _info(replicas=1, workers=1, accelerator="cpu", index=0):
    return StrategyInfo(
        kind="multi_worker" if workers > 1 else "default",
        strategy="S",
        num_replicas=replicas,
        devices=("/cpu:0",),
        num_workers=workers,
        worker_index=index,
        is_chief=index == 0,
        accelerator=accelerator,
    )


def test_one_cpu_uses_fit_and_32_steps_per_execution():
    plan = _training_plan(_info(), num_samples=4000, batch_size=64)
    native = "mixed_bfloat16" if cpu_has_bf16() else "float32"
    assert plan.policy == native
    assert not plan.custom_loop and not plan.split_strings
    assert plan.steps_per_epoch == 63  # the partial batch is kept
    assert not plan.drop_remainder and not plan.repeat
    assert plan.seed is None and plan.verbose == 1
    assert plan.steps_per_execution_for(1) == DEFAULT_STEPS_PER_EXECUTION
    assert plan.steps_per_execution_for(4) is None  # the model's own
    small = _training_plan(_info(), num_samples=100, batch_size=64)
    assert small.steps_per_execution_for(1) == 2  # never past an epoch


def test_the_callers_steps_per_execution_wins_on_one_replica():
    plan = _training_plan(
        _info(), num_samples=1000, batch_size=10, steps_per_execution=8
    )
    assert plan.steps_per_execution_for(1) == 8
    assert plan.steps_per_execution_for(64) == 8


def test_several_replicas_split_strings_and_run_one_step_per_call():
    plan = _training_plan(_info(replicas=2), num_samples=100, batch_size=8)
    assert plan.split_strings and not plan.custom_loop
    assert plan.steps_per_execution_for(1) == 1
    assert plan.steps_per_execution_for(32) == 1
    with pytest.raises(ValueError, match="steps_per_execution=4"):
        _training_plan(
            _info(replicas=2),
            num_samples=100,
            batch_size=8,
            steps_per_execution=4,
        )


def test_several_workers_take_the_custom_loop_on_whole_batches():
    chief = _training_plan(
        _info(replicas=2, workers=2),
        num_samples=100,
        num_validation_samples=20,
        batch_size=8,
    )
    assert chief.custom_loop and chief.split_strings
    assert chief.steps_per_epoch == 12 and chief.validation_steps == 2
    assert chief.drop_remainder and chief.repeat
    assert chief.seed == 0  # every worker shuffles alike
    other = _training_plan(
        _info(replicas=2, workers=2, index=1), num_samples=100, batch_size=8
    )
    assert other.verbose == 0
    with pytest.raises(ValueError, match="batch_size=200"):
        _training_plan(
            _info(replicas=2, workers=2), num_samples=100, batch_size=200
        )
    with pytest.raises(ValueError, match="validation data"):
        _training_plan(
            _info(replicas=2, workers=2),
            num_samples=100,
            num_validation_samples=4,
            batch_size=8,
        )


def test_an_unknown_length_needs_steps_per_epoch():
    with pytest.raises(ValueError, match="steps_per_epoch"):
        _training_plan(_info(), num_samples=None, batch_size=8)
    plan = _training_plan(
        _info(), num_samples=None, batch_size=8, steps_per_epoch=5
    )
    assert plan.steps_per_epoch == 5


@pytest.mark.parametrize(
    "accelerator, enabled, cpu_bf16, policy",
    [
        ("cpu", None, False, "float32"),
        ("cpu", None, True, "mixed_bfloat16"),
        ("cpu", True, False, "mixed_bfloat16"),
        ("cpu", False, True, "float32"),
        ("gpu", None, False, "mixed_float16"),
        ("gpu", False, True, "float32"),
        ("tpu", None, False, "mixed_bfloat16"),
    ],
)
def test_the_dtype_policy_follows_the_accelerator(
    accelerator, enabled, cpu_bf16, policy
):
    assert policy_for(accelerator, enabled, cpu_bf16=cpu_bf16) == policy


@pytest.mark.parametrize("enabled", [None, True, False])
def test_train_picks_bfloat16_only_on_cpus_that_compute_it(enabled):
    plan = _training_plan(
        _info(accelerator="cpu"),
        num_samples=10,
        batch_size=2,
        mixed_precision=enabled,
    )
    native = cpu_has_bf16()
    expected = enabled if enabled is not None else native
    assert plan.policy == ("mixed_bfloat16" if expected else "float32")


def test_cpu_bf16_is_read_from_the_cpu_flags():
    avx2 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n"
    zen4 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
    sapphire = "flags\t\t: avx512f amx_bf16 amx_tile\n"
    assert not cpu_has_bf16(avx2)
    assert cpu_has_bf16(zen4)
    assert cpu_has_bf16(sapphire)
    assert not cpu_has_bf16("")  # no flags line (not Linux x86)
    assert not cpu_has_bf16("flags : avx512bf16x\n")  # whole names only
    with pytest.raises(TypeError, match="cpuinfo"):
        cpu_has_bf16(b"flags : avx512_bf16")
    with pytest.raises(TypeError, match="cpu_bf16"):
        policy_for("cpu", cpu_bf16="yes")


def test_policy_for_rejects_an_unknown_accelerator():
    with pytest.raises(ValueError, match="accelerator"):
        policy_for("npu")


def test_describe_strategy_reports_the_accelerator_the_plan_reads():
    from aiservice_kit.distribute import describe_strategy
    from aiservice_kit.distribute import get_strategy

    info = describe_strategy(get_strategy("cpu", log=False))
    assert info.accelerator == "cpu"
    native = "mixed_bfloat16" if cpu_has_bf16() else "float32"
    assert _training_plan(info, num_samples=4, batch_size=2).policy == native
