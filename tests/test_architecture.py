"""The seams of docs/architecture.md, checked on the source (with `ast`).

Each contract lives in one module and the rooms import it; these tests
fail, naming the module and line, when code drifts from that. They read
code only: docstrings and comments may mention anything.
"""

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "aiservice_kit"
MAX_LINES = 800

#: Literal -> the one module that defines it (every other module imports
#: the name), then any module allowed to spell it for another contract:
#: "predictions" is also the key of TensorFlow Serving's REST responses,
#: fixed by TF Serving (not by our output name), whose home is the codec.
LITERAL_HOMES = {
    "serving_default": ("_layout.py",),
    "aiservice_kit.json": ("_layout.py",),
    "assets.extra": ("_layout.py",),
    "probabilities": ("models/_contract.py",),
    "predicted_class": ("models/_contract.py",),
    "predictions": ("models/_contract.py", "serving/_codec.py"),
}
#: Modules that must not import the text builders (they go through
#: models._contract): a path, or a folder ending in "/".
NO_TEXT_IMPORT = (
    "export.py",
    "export/",
    "recommenders/",
    "training.py",
    "_multi_worker.py",
)
TEXT_MODULE = "aiservice_kit.models.text"


def _modules():
    return sorted(
        path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")
    )


def _tree(module):
    return ast.parse((PACKAGE / module).read_text(), filename=module)


def _package_of(module):
    parts = ["aiservice_kit", *module[: -len(".py")].split("/")]
    return parts[:-1]  # __init__ or not, the enclosing package


def _imports(module):
    """(line, imported module, names) for each import statement."""
    found = []
    for node in ast.walk(_tree(module)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, ()) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _package_of(module)[
                    : len(_package_of(module)) - node.level + 1
                ]
                base = ".".join([*package, *([base] if base else [])])
            names = tuple(alias.name for alias in node.names)
            found.append((node.lineno, base, names))
    return found


def _is_submodule(package_dir, name):
    return (package_dir / f"{name}.py").is_file() or (
        package_dir / name / "__init__.py"
    ).is_file()


def _docstring_nodes(tree):
    nodes = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            nodes.add(id(body[0].value))
    return nodes


def _string_constants(module):
    tree = _tree(module)
    docstrings = _docstring_nodes(tree)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            yield node.lineno, node.value


def test_no_room_imports_the_package_face():
    offenders = []
    for module in _modules():
        if module == "__init__.py":
            continue
        for line, imported, names in _imports(module):
            if imported == "aiservice_kit" and not names:
                offenders.append(f"{module}:{line}: import aiservice_kit")
            elif imported == "aiservice_kit":
                offenders.extend(
                    f"{module}:{line}: from aiservice_kit import {name}"
                    for name in names
                    if not _is_submodule(PACKAGE, name)
                )
    assert not offenders, (
        "Import the module that defines a name, not the package face "
        "(e.g. `from aiservice_kit._version import __version__`):\n"
        + "\n".join(offenders)
    )


def _imports_text(module):
    lines = []
    for line, imported, names in _imports(module):
        if imported == TEXT_MODULE or imported.startswith(TEXT_MODULE + "."):
            lines.append(line)
        elif imported == "aiservice_kit.models" and "text" in names:
            lines.append(line)
    return lines


@pytest.mark.parametrize("room", NO_TEXT_IMPORT)
def test_rooms_reach_models_through_the_contract_not_the_text_builders(room):
    modules = [
        module
        for module in _modules()
        if module == room or (room.endswith("/") and module.startswith(room))
    ]
    offenders = [
        f"{module}:{line}"
        for module in modules
        for line in _imports_text(module)
    ]
    assert not offenders, (
        f"{room} imports {TEXT_MODULE}; import aiservice_kit.models._contract "
        "(get_class_names, split_text_model, output names) instead:\n"
        + "\n".join(offenders)
    )


def test_the_version_registry_imports_no_tensorflow():
    heavy = [
        f"serving/registry.py:{line}: {imported}"
        for line, imported, _ in _imports("serving/registry.py")
        if imported.split(".")[0] in ("tensorflow", "keras")
    ]
    assert not heavy, "\n".join(heavy)


def test_no_module_is_longer_than_the_limit():
    long = {
        module: count
        for module in _modules()
        if (count := len((PACKAGE / module).read_text().splitlines()))
        > MAX_LINES
    }
    assert not long, (
        f"Modules over {MAX_LINES} lines; split them by responsibility: {long}"
    )


def test_each_contract_literal_is_spelled_in_its_one_home():
    where = defaultdict(list)
    for module in _modules():
        for line, value in _string_constants(module):
            if value in LITERAL_HOMES:
                where[value].append((module, line))
    offenders = [
        f"{module}:{line}: {value!r} (its home is "
        f"{' or '.join(LITERAL_HOMES[value])})"
        for value, places in where.items()
        for module, line in places
        if module not in LITERAL_HOMES[value]
    ]
    assert not offenders, (
        "Import the constant from its home instead of spelling it:\n"
        + "\n".join(offenders)
    )
    for value, homes in LITERAL_HOMES.items():
        assert homes[0] in {module for module, _ in where[value]}, (
            f"{value!r} is no longer defined in {homes[0]}"
        )


def test_only_the_layout_decides_what_a_version_directory_is():
    offenders = [
        f"{module}:{node.lineno}"
        for module in _modules()
        if module != "_layout.py"
        for node in ast.walk(_tree(module))
        if isinstance(node, ast.Attribute) and node.attr == "isdigit"
    ]
    assert not offenders, (
        "str.isdigit accepts '²' and '٩'; use _layout.is_version_name for "
        "versions (ASCII digits, > 0), or match [0-9]+ for other numbers:\n"
        + "\n".join(offenders)
    )


def test_the_checks_see_what_they_look_for():
    # The helpers must find a known import, a known constant and skip a
    # docstring, or every test above would pass vacuously.
    assert any(
        imported == "aiservice_kit.models._contract"
        for _, imported, _ in _imports("training.py")
        + _imports("_multi_worker.py")
    )
    contract = dict(
        (value, line)
        for line, value in _string_constants("models/_contract.py")
    )
    assert "probabilities" in contract
    assert not any(
        "What export, training" in value
        for _, value in _string_constants("models/_contract.py")
    )
    assert _imports_text("models/__init__.py")
