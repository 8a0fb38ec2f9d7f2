"""The UCR/UEA `.ts` archive format: `load_ts`, re-exported by `datasets`."""

import os
import re
from pathlib import Path

import numpy as np

# Header tags of the UCR/UEA `.ts` format that `load_ts` understands.
_TS_TAGS = (
    "@problemname",
    "@timestamps",
    "@missing",
    "@univariate",
    "@dimensions",
    "@equallength",
    "@serieslength",
    "@classlabel",
    "@targetlabel",
    "@data",
)


def _ts_bool(path: Path, line_number: int, tag: str, value: str) -> bool:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(
        f"Malformed .ts file path={str(path)!r}, line {line_number}: {tag} "
        f"must be followed by true or false, got {value!r}."
    )


def load_ts(
    path: str | os.PathLike,
) -> tuple[np.ndarray | list[np.ndarray], np.ndarray]:
    """Reads a UCR/UEA time-series archive file (the sktime `.ts` format).

    Handles univariate and multivariate problems, equal and unequal
    lengths, and missing values (`?`, read as NaN). Series are returned
    channels-last, the layout Keras' recurrent and convolutional layers
    expect.

    Args:
        path: str or PathLike. The `.ts` file (for example
            `GunPoint_TRAIN.ts`).

    Returns:
        `(x, y)`. `x` is a float32 array of shape (cases, timesteps,
        channels) when all series have the same length, else a list of
        float32 arrays of shape (timesteps_i, channels) (pad them with
        `keras.utils.pad_sequences(x, dtype="float32", padding="post")`
        for `build_lstm(input_shape=(None, channels))`). `y` holds the
        class labels as strings (classification files) or the targets as
        float32 (regression files with `@targetLabel true`).

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if the file is malformed: no `@data` section, an
            unknown header tag, time-stamped data (not supported), a case
            with the wrong number of channels, a non-numeric value, a
            class label the header does not declare, or a length that
            disagrees with `@seriesLength`.

    Example:
    ```python
    from aiservice_kit.datasets import load_ts
    x_train, y_train = load_ts("gunpoint/GunPoint_TRAIN.ts")
    x_train.shape  # (50, 150, 1)
    ```
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No .ts file at path={str(path)!r}.")

    def fail(line_number: int, message: str) -> ValueError:
        return ValueError(
            f"Malformed .ts file path={str(path)!r}, line {line_number}: "
            f"{message}"
        )

    header: dict[str, str] = {}
    series: list[np.ndarray] = []
    targets: list[str] = []
    in_data = False
    with open(path, encoding="utf-8", errors="replace") as stream:
        for line_number, raw in enumerate(stream, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                if not line.startswith("@"):
                    raise fail(
                        line_number,
                        "expected a header line starting with '@' or '#' "
                        f"before @data, got {line[:40]!r}.",
                    )
                tag, _, value = line.partition(" ")
                tag = tag.lower()
                if tag not in _TS_TAGS:
                    raise fail(line_number, f"unknown header tag {tag!r}.")
                header[tag] = value.strip()
                if tag == "@timestamps" and _ts_bool(
                    path, line_number, tag, header[tag]
                ):
                    raise fail(
                        line_number,
                        "time-stamped series (@timeStamps true) are not "
                        "supported; export the file without time stamps.",
                    )
                if tag == "@data":
                    in_data = True
                    has_labels = _ts_bool(
                        path,
                        line_number,
                        "@classLabel",
                        (header.get("@classlabel") or "false").split()[0],
                    ) or _ts_bool(
                        path,
                        line_number,
                        "@targetLabel",
                        header.get("@targetlabel", "false") or "false",
                    )
                    expected_channels = None
                    if "@dimensions" in header:
                        try:
                            expected_channels = int(header["@dimensions"])
                        except ValueError:
                            raise fail(
                                line_number,
                                "@dimensions must be an integer, got "
                                f"{header['@dimensions']!r}.",
                            ) from None
                    elif "@univariate" in header and _ts_bool(
                        path, line_number, "@univariate", header["@univariate"]
                    ):
                        expected_channels = 1
                continue
            fields = line.split(":")
            if has_labels:
                if len(fields) < 2:
                    raise fail(
                        line_number,
                        "a case needs its channels and then its label, "
                        "separated by ':'.",
                    )
                *fields, label = fields
                targets.append(label.strip())
            if expected_channels is not None and len(fields) != (
                expected_channels
            ):
                raise fail(
                    line_number,
                    f"expected {expected_channels} channel(s) separated by "
                    f"':', found {len(fields)}.",
                )
            if series and len(fields) != series[0].shape[1]:
                raise fail(
                    line_number,
                    f"this case has {len(fields)} channel(s), the first "
                    f"had {series[0].shape[1]}.",
                )
            channels = []
            for field in fields:
                try:
                    values = [
                        np.nan if value.strip() == "?" else float(value)
                        for value in field.split(",")
                    ]
                except ValueError:
                    raise fail(
                        line_number,
                        f"non-numeric value in channel {field[:40]!r}...",
                    ) from None
                channels.append(values)
            length = len(channels[0])
            if any(len(channel) != length for channel in channels):
                raise fail(
                    line_number,
                    "the channels of one case have different lengths "
                    f"({sorted({len(channel) for channel in channels})}).",
                )
            series.append(np.asarray(channels, dtype=np.float32).T)
    if not in_data:
        raise ValueError(
            f"Malformed .ts file path={str(path)!r}: no @data line was found."
        )
    if not series:
        raise ValueError(
            f"Malformed .ts file path={str(path)!r}: @data holds no cases."
        )
    class_spec = (header.get("@classlabel") or "").split()
    if class_spec and class_spec[0].lower() == "true" and len(class_spec) > 1:
        declared = set(class_spec[1:])
        unknown = sorted(set(targets) - declared)
        if unknown:
            raise ValueError(
                f"Malformed .ts file path={str(path)!r}: labels {unknown} "
                f"are not declared in @classLabel ({class_spec[1:]})."
            )
    lengths = {len(case) for case in series}
    if "@serieslength" in header and header.get("@equallength", "").lower() == (
        "true"
    ):
        declared_length = header["@serieslength"]
        if not re.fullmatch(r"[0-9]+", declared_length) or lengths != {
            int(declared_length)
        }:
            raise ValueError(
                f"Malformed .ts file path={str(path)!r}: @seriesLength is "
                f"{declared_length} but the series have lengths "
                f"{sorted(lengths)[:10]}."
            )
    if "@targetlabel" in header and (header["@targetlabel"] or "").lower() == (
        "true"
    ):
        try:
            labels = np.asarray(targets, dtype=np.float32)
        except ValueError:
            raise ValueError(
                f"Malformed .ts file path={str(path)!r}: @targetLabel true "
                "but some targets are not numbers."
            ) from None
    else:
        labels = np.asarray(targets, dtype=str)
    if len(lengths) == 1:
        return np.stack(series), labels
    return series, labels
