"""Argument checks shared by every public call.

Every message has one shape: what the argument must be, then
`Received: name=value`, so users meet the same wording everywhere.
"""

import numbers
from collections.abc import Iterable
from collections.abc import Sequence
from typing import Any


def _received(name: str, value: Any) -> str:
    return f"Received: {name}={value!r}"


def check_positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """Returns `value` as an int after checking it is an integer >= minimum.

    Args:
        name: str. The argument's name, used in the error message.
        value: Any. What the caller passed.
        minimum: int. The smallest accepted value.

    Returns:
        The value as a Python int.

    Raises:
        TypeError: if `value` is not an integer (bools are refused too).
        ValueError: if `value` is smaller than `minimum`.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"`{name}` must be an integer >= {minimum}. "
            f"{_received(name, value)}"
        )
    if value < minimum:
        raise ValueError(
            f"`{name}` must be an integer >= {minimum}. "
            f"{_received(name, value)}"
        )
    return int(value)


def check_optional_positive_int(
    name: str, value: Any, *, minimum: int = 1
) -> int | None:
    """Like `check_positive_int`, but `None` passes through."""
    if value is None:
        return None
    return check_positive_int(name, value, minimum=minimum)


def check_fraction(name: str, value: Any, *, allow_one: bool = False) -> float:
    """Returns `value` as a float in [0, 1) (or [0, 1] when allow_one).

    Raises:
        TypeError: if `value` is not a real number.
        ValueError: if it lies outside the accepted interval (or is NaN).
    """
    upper = "1]" if allow_one else "1)"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"`{name}` must be a number in [0, {upper}. "
            f"{_received(name, value)}"
        )
    # Written so NaN (which fails every comparison) is refused too.
    inside = 0 <= value <= 1 if allow_one else 0 <= value < 1
    if not inside:
        raise ValueError(
            f"`{name}` must be a number in [0, {upper}. "
            f"{_received(name, value)}"
        )
    return float(value)


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Checks that `value` is one of `choices` and returns it.

    Raises:
        ValueError: naming the accepted choices.
    """
    choices = tuple(choices)
    if value not in choices:
        accepted = ", ".join(repr(choice) for choice in choices)
        raise ValueError(
            f"`{name}` must be one of {accepted}. {_received(name, value)}"
        )
    return value


def check_bool(name: str, value: Any) -> bool:
    """Checks that `value` is a bool and returns it.

    Raises:
        TypeError: if `value` is not a bool.
    """
    if not isinstance(value, bool):
        raise TypeError(
            f"`{name}` must be True or False. {_received(name, value)}"
        )
    return value


def check_int_sequence(
    name: str, value: Any, *, minimum: int = 1, allow_empty: bool = False
) -> tuple[int, ...]:
    """Checks a list/tuple of integers >= minimum and returns it as a tuple.

    Raises:
        TypeError: if `value` is not a sequence of integers.
        ValueError: if it is empty (unless allowed) or an entry is too small.
    """
    expected = f"`{name}` must be a list or tuple of integers >= {minimum}" + (
        "" if allow_empty else " (at least one)"
    )
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{expected}. {_received(name, value)}")
    if not value and not allow_empty:
        raise ValueError(f"{expected}. {_received(name, value)}")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, numbers.Integral):
            raise TypeError(f"{expected}. {_received(name, value)}")
        if item < minimum:
            raise ValueError(f"{expected}. {_received(name, value)}")
    return tuple(int(item) for item in value)


def check_input_shape(
    name: str,
    value: Any,
    *,
    ranks: Iterable[int],
    allow_none: bool = False,
) -> tuple[int | None, ...]:
    """Checks a Keras input shape (without the batch axis).

    Args:
        name: str. The argument's name.
        value: Any. What the caller passed.
        ranks: iterable of int. The accepted numbers of axes.
        allow_none: bool. Whether an axis may be `None` (variable length).

    Returns:
        The shape as a tuple.

    Raises:
        TypeError: if `value` is not a tuple/list of integers.
        ValueError: if its rank is not accepted or an axis is not positive.
    """
    ranks = tuple(ranks)
    rank_text = " or ".join(str(rank) for rank in ranks)
    expected = (
        f"`{name}` must be a tuple of {rank_text} positive integers"
        + (" (None allowed for a variable length)" if allow_none else "")
        + ", without the batch axis"
    )
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{expected}. {_received(name, value)}")
    if len(value) not in ranks:
        raise ValueError(f"{expected}. {_received(name, value)}")
    shape: list[int | None] = []
    for axis in value:
        if axis is None and allow_none:
            shape.append(None)
            continue
        if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
            raise TypeError(f"{expected}. {_received(name, value)}")
        if axis < 1:
            raise ValueError(f"{expected}. {_received(name, value)}")
        shape.append(int(axis))
    return tuple(shape)
