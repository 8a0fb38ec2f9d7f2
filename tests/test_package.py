"""The package's public surface, its import behaviour and its metadata."""

import inspect
import os
import platform
import subprocess
import sys
import types

import pytest

import aiservice_kit


def test_all_lists_exactly_the_public_names():
    # Names load on first use: resolve them all, then nothing else public
    # may sit in the namespace (submodules aside).
    resolved = {
        name: getattr(aiservice_kit, name) for name in aiservice_kit.__all__
    }
    public = {
        name
        for name, value in vars(aiservice_kit).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }

    assert set(resolved) - {"__version__"} == public
    assert sorted(aiservice_kit.__all__) == list(aiservice_kit.__all__)
    assert set(aiservice_kit.__all__) <= set(dir(aiservice_kit))


def test_public_names_resolve_to_their_defining_modules():
    from aiservice_kit.models import build_cnn
    from aiservice_kit.recommenders import CosineRecommender

    assert aiservice_kit.build_cnn is build_cnn
    assert aiservice_kit.CosineRecommender is CosineRecommender


def test_an_unknown_name_raises_attribute_error_naming_it():
    with pytest.raises(AttributeError, match="'build_cnnn'"):
        aiservice_kit.build_cnnn  # noqa: B018


def test_every_public_name_is_documented_and_typed():
    for name in aiservice_kit.__all__:
        if name == "__version__":
            continue
        value = getattr(aiservice_kit, name)
        assert inspect.getdoc(value), f"{name} has no docstring"
        if inspect.isfunction(value):
            hints = value.__annotations__
            assert "return" in hints, f"{name} has no return annotation"


def test_version_is_a_release_string():
    parts = aiservice_kit.__version__.split(".")
    assert len(parts) == 3 and all(part.isdigit() for part in parts)


#: Variables this test process (or its user) may have set, which would
#: hide what a fresh process does.
_SET_BY_THE_TEST_PROCESS = (
    "TF_CPP_MIN_LOG_LEVEL",
    "KERAS_BACKEND",
    "TF_ENABLE_ONEDNN_OPTS",
    "AISERVICE_KIT_ONEDNN",
)


def _run_python(code, **env):
    environment = {
        key: value
        for key, value in os.environ.items()
        if key
        not in (
            "TF_CPP_MIN_LOG_LEVEL",
            "KERAS_BACKEND",
            "TF_ENABLE_ONEDNN_OPTS",
        )
    }
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )


_LOADED = (
    "print(*(m in sys.modules for m in "
    "('tensorflow', 'keras', 'fastapi', 'uvicorn')))"
)


def test_import_is_quiet_and_light():
    result = _run_python(f"import sys, aiservice_kit; {_LOADED}")

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False"] * 4
    assert result.stderr == ""


def test_the_recommender_runs_without_loading_tensorflow():
    # About 650 MB and 4 s that a recommendation service does not need.
    result = _run_python(
        "import sys; from aiservice_kit import CosineRecommender; "
        "model = CosineRecommender(n_neighbors=2).fit("
        "([1, 1, 2, 2, 3], ['a', 'b', 'a', 'c', 'b'])); "
        "print(model.recommend([3], top_k=1)[0][0, 0]); "
        f"{_LOADED}"
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["a", "False", "False", "False", "False"]


@pytest.mark.parametrize(
    "code",
    [
        "import aiservice_kit as ak; ak.build_cnn",
        "from aiservice_kit import export_saved_model",
        "from aiservice_kit.models import build_lstm",
        "import aiservice_kit.training",
        "import aiservice_kit, keras",  # the documented notebook order
        "import aiservice_kit, tensorflow",
    ],
)
def test_first_use_of_tensorflow_is_quiet_whichever_way_it_comes(code):
    result = _run_python(f"import sys; {code}; {_LOADED}")

    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:2] == ["True", "True"]
    assert result.stderr == ""


def test_a_missing_tensorflow_names_the_extra_to_install():
    # None in sys.modules makes `import tensorflow` fail as if absent.
    result = _run_python(
        "import sys, aiservice_kit; sys.modules['tensorflow'] = None; "
        "aiservice_kit.build_cnn"
    )

    assert result.returncode != 0
    assert "ModuleNotFoundError" in result.stderr
    assert "pip install 'aiservice_kit[cpu]'" in result.stderr


def test_probing_for_tensorflow_answers_as_usual():
    result = _run_python(
        "import importlib.util, sys, aiservice_kit; "
        "print(importlib.util.find_spec('tensorflow') is not None, "
        "importlib.util.find_spec('no_such_module_here'), "
        "'tensorflow' in sys.modules)"
    )

    assert result.stdout.split() == ["True", "None", "False"]


def test_child_processes_stay_quiet():
    # A server started from a quiet process must not take our level for the
    # user's and print TensorFlow's start-up notices.
    result = _run_python(
        "import subprocess, sys, aiservice_kit.models; "
        "subprocess.run([sys.executable, '-c', 'import aiservice_kit.models'])"
    )

    assert result.returncode == 0
    assert result.stderr == ""


def test_a_users_quiet_level_also_hides_the_start_up_notices():
    result = _run_python(
        "import aiservice_kit.models", TF_CPP_MIN_LOG_LEVEL="2"
    )

    assert result.returncode == 0
    assert result.stderr == ""


def test_a_users_own_log_level_is_respected():
    result = _run_python(
        "import os, aiservice_kit.models; "
        "print(os.environ['TF_CPP_MIN_LOG_LEVEL'])",
        TF_CPP_MIN_LOG_LEVEL="0",
    )

    assert result.stdout.strip() == "0"


_ONEDNN_ON = (
    "from tensorflow.python.util import _pywrap_util_port; "
    "print(_pywrap_util_port.IsMklEnabled())"
)


@pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"),
    reason="TensorFlow's oneDNN kernels are the x86-64 wheels'",
)
def test_importing_the_library_first_turns_tensorflows_onednn_kernels_on():
    # TensorFlow leaves them off on AVX2 CPUs; they trained the textbook
    # CNN 1.6x faster there (benchmarks/cnn.py).
    result = _run_python(f"import aiservice_kit, keras; {_ONEDNN_ON}")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_a_users_choice_of_onednn_kernels_is_respected():
    result = _run_python(
        f"import aiservice_kit, keras; {_ONEDNN_ON}",
        TF_ENABLE_ONEDNN_OPTS="0",
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_onednn_kernels_are_left_alone_off_x86_and_after_tensorflow():
    result = _run_python(
        "import os, sys; from aiservice_kit import _backend; "
        "os.environ.pop('TF_ENABLE_ONEDNN_OPTS'); "
        "print(_backend.enable_onednn_kernels('aarch64'), "
        "'TF_ENABLE_ONEDNN_OPTS' in os.environ); "
        "import tensorflow; "
        "print(_backend.enable_onednn_kernels('x86_64'), "
        "'TF_ENABLE_ONEDNN_OPTS' in os.environ)"
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "False", "False"]


@pytest.mark.parametrize(
    ("users_setting", "expected"),
    [(None, ["True", "False"]), ("1", ["False", "True"])],
)
def test_serving_turns_the_librarys_onednn_choice_back_off(
    users_setting, expected
):
    # One-image calls were slower with them (benchmarks/serving.py); the
    # serve command calls this before its models load TensorFlow.
    env = {} if users_setting is None else {"TF_ENABLE_ONEDNN_OPTS": "1"}
    result = _run_python(
        "import aiservice_kit; from aiservice_kit import _backend; "
        f"print(_backend.keep_onednn_kernels_off()); {_ONEDNN_ON}",
        **env,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == expected


def test_another_keras_backend_fails_on_import_naming_the_fix():
    result = _run_python("import aiservice_kit", KERAS_BACKEND="numpy")

    assert result.returncode != 0
    assert "backend='numpy'" in result.stderr
    assert "KERAS_BACKEND=tensorflow" in result.stderr


_SAVE_THE_BUILDERS_MODELS = """
import sys
import aiservice_kit as ak
folder = sys.argv[1]
ak.build_cnn((8, 8, 1), num_classes=2, filters=(4,)).save(f"{folder}/cnn.keras")
ak.build_lstm((6, 2), num_classes=2, units=4).save(f"{folder}/lstm.keras")
ak.build_text_classifier(
    ["free prize", "see you"], class_names=["ham", "spam"], dense_units=4
).save(f"{folder}/text.keras")
"""


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved")
    saved = subprocess.run(
        [sys.executable, "-c", _SAVE_THE_BUILDERS_MODELS, str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert saved.returncode == 0, saved.stderr
    return folder


@pytest.mark.parametrize(
    "imports",
    [
        "import aiservice_kit, keras",  # the documented notebook order
        "import keras, aiservice_kit",
        "import tensorflow, aiservice_kit, keras",
        "import aiservice_kit.pipelines, keras",  # a module the models need
        "import aiservice_kit.training, keras",
    ],
)
def test_saved_builder_models_reload_after_a_plain_import(
    saved_models, imports
):
    # Was: TypeError: Could not locate class 'CheckedModel' (or
    # 'TextClassifier'): the classes registered only on an import of
    # aiservice_kit.models, which `import aiservice_kit` leaves for later.
    result = _run_python(
        f"import sys; {imports}; "
        f"print(*(type(keras.models.load_model('{saved_models}/' + name))"
        ".__name__ for name in ('cnn.keras', 'lstm.keras', 'text.keras')), "
        "any('_KerasHook' in type(f).__name__ for f in sys.meta_path))"
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "CheckedModel",
        "CheckedModel",
        "TextClassifier",
        "False",  # the hook is gone once it registered
    ]
