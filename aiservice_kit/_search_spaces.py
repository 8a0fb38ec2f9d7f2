"""What `tune` searches: the ranges and each builder's declared space.

`Choice`, `Int`, `Float` and `Boolean` describe a range once and register
it on KerasTuner's `hp` (`register`) or enumerate it for a grid
(`grid`). `SEARCH_SPACES` is the one table of each builder's options;
`search_space` narrows or extends a row; `sample` draws a configuration
and `builder_arguments` turns it into builder keyword arguments. Exported
from `aiservice_kit.tuning`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of a list of values (int, float, str or bool).

    Attributes:
        values: tuple. The candidates.
        default: the value of the defaults trial (the builder's default).
    """

    values: tuple
    default: Any = None

    def __post_init__(self) -> None:
        values = tuple(self.values)
        if not values:
            raise ValueError("`values` of a Choice must not be empty.")
        object.__setattr__(self, "values", values)
        if self.default is None:
            object.__setattr__(self, "default", values[0])
        elif self.default not in values:
            raise ValueError(
                f"`default` must be one of {values}. Received: "
                f"default={self.default!r}"
            )

    def register(self, hp: Any, name: str) -> Any:
        return hp.Choice(name, list(self.values), default=self.default)

    def grid(self) -> tuple:
        return self.values


@dataclasses.dataclass(frozen=True)
class Int:
    """An integer in `[min_value, max_value]` by `step`.

    Attributes:
        min_value: int. The smallest value.
        max_value: int. The largest value (included).
        step: int. The spacing of the values.
        default: int or None. The defaults trial's value (None: min_value).
    """

    min_value: int
    max_value: int
    step: int = 1
    default: int | None = None

    def register(self, hp: Any, name: str) -> Any:
        return hp.Int(
            name,
            self.min_value,
            self.max_value,
            step=self.step,
            default=self.default,
        )

    def grid(self) -> tuple:
        return tuple(range(self.min_value, self.max_value + 1, self.step))


@dataclasses.dataclass(frozen=True)
class Float:
    """A float in `[min_value, max_value]`, linear or log sampled.

    Attributes:
        min_value: float. The smallest value.
        max_value: float. The largest value.
        step: float or None. Spacing of the values (None: continuous).
        sampling: str. `"linear"` or `"log"`.
        default: float or None. The defaults trial's value.
    """

    min_value: float
    max_value: float
    step: float | None = None
    sampling: str = "linear"
    default: float | None = None

    def register(self, hp: Any, name: str) -> Any:
        return hp.Float(
            name,
            self.min_value,
            self.max_value,
            step=self.step,
            sampling=self.sampling,
            default=self.default,
        )

    def grid(self) -> tuple:
        if self.step is None:
            if self.sampling == "log":
                return tuple(
                    np.geomspace(self.min_value, self.max_value, 4).tolist()
                )
            return tuple(
                np.linspace(self.min_value, self.max_value, 4).tolist()
            )
        count = int(round((self.max_value - self.min_value) / self.step))
        return tuple(
            round(self.min_value + i * self.step, 10) for i in range(count + 1)
        )


@dataclasses.dataclass(frozen=True)
class Boolean:
    """True or False.

    Attributes:
        default: bool. The defaults trial's value.
    """

    default: bool = False

    def register(self, hp: Any, name: str) -> Any:
        return hp.Boolean(name, default=self.default)

    def grid(self) -> tuple:
        return (False, True)


SPECS = (Choice, Int, Float, Boolean)

_LR = Float(1e-4, 1e-2, sampling="log", default=1e-3)
_BATCH = Choice((32, 64, 128), default=32)

#: Each builder's search space: option -> range. The default of each range
#: is the builder's own default, and the first trial of a Bayesian or random
#: search runs all defaults, so the search's best is never a configuration
#: that the defaults beat in the same budget. Special names: `width` and
#: `depth` become the builder's `filters` (cnn: the first `depth` blocks
#: of the default (8, 32, 96), scaled so the first has `width` filters) or
#: `units` (lstm: depth layers of width units); `learning_rate` becomes an
#: Adam optimizer; `batch_size` goes to `fit`. Every other name is passed
#: to the builder as is, except the recurrent stack's options of
#: `build_lstm` (`RECURRENT_ONLY`), which a random-convolution trial drops.
SEARCH_SPACES: dict[str, dict[str, Any]] = {
    "build_cnn": {
        "width": Choice((4, 8, 16), default=8),
        "depth": Int(1, 3, default=3),
        "dense_units": Choice((64, 128, 256), default=128),
        "dropout": Float(0.0, 0.5, step=0.1, default=0.3),
        "learning_rate": _LR,
        "batch_size": _BATCH,
    },
    "build_lstm": {
        "frontend": Choice(("random_conv", "recurrent"), default="random_conv"),
        "width": Choice((32, 64, 128), default=64),
        "depth": Int(1, 2, default=1),
        "bidirectional": Boolean(default=False),
        "dropout": Float(0.0, 0.5, step=0.1, default=0.2),
        "learning_rate": _LR,
        "batch_size": _BATCH,
    },
    "build_text_classifier": {
        "encoder": Choice(("ngrams", "cnn", "bilstm"), default="ngrams"),
        "dense_units": Choice((16, 32, 64), default=32),
        "dropout": Float(0.0, 0.5, step=0.1, default=0.3),
        "learning_rate": _LR,
        "batch_size": _BATCH,
    },
    "CosineRecommender": {
        "n_neighbors": Choice((10, 20, 50, 100, 200), default=20),
    },
}

#: `build_lstm` options that only the recurrent stack has: a trial whose
#: `frontend` is "random_conv" (the classifiers' default) leaves them out.
RECURRENT_ONLY = ("width", "depth", "bidirectional")

#: Names that never reach the builder as they are.
_SPECIAL = ("width", "depth", "learning_rate", "batch_size")
#: Fit options, not builder arguments.
_FIT_KEYS = ("batch_size",)


def builder_name(builder: Any) -> str:
    if isinstance(builder, str):
        return builder
    if isinstance(builder, type):
        return builder.__name__
    name = getattr(builder, "__name__", None)
    if name is None:
        name = type(builder).__name__
    return name


def search_space(builder: Any, overrides: Any = None) -> Any:
    """Returns the search space `tune` uses for a builder.

    Args:
        builder: a builder function (`build_cnn`, ...), `CosineRecommender`
            or its name.
        overrides: None, a dict or a callable. A dict's entries replace or
            extend the table's: a range (`Choice`, `Int`, `Float`,
            `Boolean`) is searched, None removes an option (the builder's
            default applies), a callable `fn(hp)` returns the value from
            KerasTuner's `hp` itself, and any other value is fixed. A
            callable `fn(hp) -> dict` replaces the whole table.

    Returns:
        A dict of option -> range or value, or the callable given.

    Raises:
        ValueError: if the builder has no declared space and no overrides
            are given.
        TypeError: if `overrides` is neither a dict, a callable nor None.

    Example:
    ```python
    from aiservice_kit.tuning import Choice, search_space
    space = search_space("build_cnn", {"width": Choice((8, 16)), "depth": 1})
    ```
    """
    if callable(overrides) and not isinstance(overrides, Mapping):
        return overrides
    name = builder_name(builder)
    if name not in SEARCH_SPACES and not overrides:
        raise ValueError(
            f"No search space is declared for {name!r}; pass "
            "`search_space={...}`. Declared: "
            f"{sorted(SEARCH_SPACES)}. Received: builder={builder!r}"
        )
    space = dict(SEARCH_SPACES.get(name, {}))
    if overrides is None:
        return space
    if not isinstance(overrides, Mapping):
        raise TypeError(
            "`search_space` must be a dict of option -> range/value, a "
            "callable fn(hp) -> dict, or None. Received: search_space of "
            f"type {type(overrides).__name__}"
        )
    for key, value in overrides.items():
        if value is None:
            space.pop(key, None)
        else:
            space[key] = value
    return space


def fit_to_task(name: str, space: Any, classifier: bool) -> Any:
    """Drops the options a task cannot use from a builder's space.

    A `build_lstm` regressor has only the recurrent stack, so its search
    leaves a searched `frontend` out (the random-convolution front end
    classifies; a fixed one reaches the builder, which explains).

    Args:
        name: str. The builder's name.
        space: the space from `search_space` (a callable is kept as is).
        classifier: bool. Whether the models are classifiers.

    Returns:
        The space, without the options the task cannot use.
    """
    if (
        name == "build_lstm"
        and not classifier
        and isinstance(space, Mapping)
        and isinstance(space.get("frontend"), SPECS)
    ):
        space = {k: v for k, v in space.items() if k != "frontend"}
    return space


def sample(space: Any, hp: Any) -> dict[str, Any]:
    """Registers the space on `hp` and returns the current values."""
    if callable(space) and not isinstance(space, Mapping):
        values = space(hp)
        if not isinstance(values, Mapping):
            raise TypeError(
                "A callable `search_space` must return a dict of option -> "
                f"value. Received: {type(values).__name__}"
            )
        return dict(values)
    values = {}
    for key, spec in space.items():
        if isinstance(spec, SPECS):
            values[key] = spec.register(hp, key)
        elif callable(spec):
            values[key] = spec(hp)
        else:
            values[key] = spec
    return values


def used_options(name: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Leaves out the sampled options a trial's model does not use.

    A `build_lstm` trial with the random-convolution front end has no
    recurrent stack, so its `RECURRENT_ONLY` values are dropped (and shown
    as "-" in the trials table).
    """
    if name == "build_lstm" and values.get("frontend") == "random_conv":
        return {k: v for k, v in values.items() if k not in RECURRENT_ONLY}
    return dict(values)


def builder_arguments(name: str, values: Mapping[str, Any]) -> dict:
    """Turns sampled values into builder keyword arguments."""
    import keras

    values = used_options(name, values)
    kwargs = {
        key: value
        for key, value in values.items()
        if key not in _SPECIAL and key not in _FIT_KEYS
    }
    width = values.get("width")
    depth = values.get("depth")
    if width is not None or depth is not None:
        if name == "build_cnn":
            from aiservice_kit.models.vision import DEFAULT_FILTERS

            first = DEFAULT_FILTERS[0]
            width = first if width is None else int(width)
            depth = len(DEFAULT_FILTERS) if depth is None else int(depth)
            if not 1 <= depth <= len(DEFAULT_FILTERS):
                raise ValueError(
                    "build_cnn's `depth` counts blocks of the default "
                    f"{DEFAULT_FILTERS}, so it must be in [1, "
                    f"{len(DEFAULT_FILTERS)}]; search `filters` directly "
                    f"for deeper stacks. Received: depth={depth}"
                )
            kwargs["filters"] = tuple(
                width * block // first for block in DEFAULT_FILTERS[:depth]
            )
        else:
            width = 64 if width is None else int(width)
            depth = 1 if depth is None else int(depth)
            kwargs["units"] = width if depth == 1 else (width,) * depth
    if values.get("learning_rate") is not None:
        kwargs["optimizer"] = keras.optimizers.Adam(
            float(values["learning_rate"])
        )
    return kwargs
