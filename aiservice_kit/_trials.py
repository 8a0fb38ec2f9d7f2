"""Trial bookkeeping shared by the Keras and the recommender searches.

`TuneResult` (exported from `aiservice_kit.tuning`) is what `tune`
returns; `format_table` prints its trials; `progress` prints one line per
trial; `Sidecar` keeps per-trial seconds and epochs in a JSON file beside
the search, so that a resumed search reads them back.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass
class TuneResult:
    """What `tune` returns.

    Attributes:
        model: the best configuration rebuilt and retrained on all of the
            training data (`x`, `y`; the validation data is not used).
        trials: list of dict. One row per completed trial, in trial order:
            `trial` (id), the hyperparameters, `score` (the objective on
            the validation data; mean over folds with `folds=`),
            `seconds` and `epochs` (best epoch count; None for
            recommenders).
        best_params: dict. The hyperparameters of the best trial.
        best_score: float. Its validation score.
        objective: str. What `score` measures (e.g. `"val_accuracy"`).
        new_trials: int. Trials run by this call (the others were read back
            from `directory`).
    """

    model: Any
    trials: list[dict]
    best_params: dict
    best_score: float
    objective: str
    new_trials: int

    def table(self) -> str:
        """Returns the trials as a plain-text table, best marked `*`."""
        return format_table(self.trials, self.best_score)


def format_table(trials: list[dict], best_score: float | None = None) -> str:
    """Formats trial rows (as in `TuneResult.trials`) as a text table.

    Args:
        trials: list of dict. Rows with `trial`, `score`, `seconds` and
            hyperparameters.
        best_score: float or None. Rows with this score are marked `*`.

    Returns:
        str. One line per trial under a header.
    """
    if not trials:
        return "(no completed trials)"
    keys = []
    for row in trials:
        for key in row:
            if key not in keys and key not in ("trial", "score", "seconds"):
                keys.append(key)
    columns = ["trial", *keys, "score", "seconds"]

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        if isinstance(value, (list, tuple)):
            return "x".join(str(v) for v in value)
        return "-" if value is None else str(value)

    rows = [[cell(row.get(column)) for column in columns] for row in trials]
    widths = [
        max(len(column), *(len(row[i]) for row in rows))
        for i, column in enumerate(columns)
    ]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
    ]
    for row, trial in zip(rows, trials, strict=True):
        mark = " *" if trial.get("score") == best_score else ""
        lines.append(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
            + mark
        )
    return "\n".join(lines)


def progress(
    verbose: int,
    index: Any,
    total: Any,
    params: Mapping,
    objective: str,
    score: Any,
    seconds: float,
    best: Any,
) -> None:
    if not verbose:
        return
    shown = ", ".join(f"{k}={_short(v)}" for k, v in params.items())
    score_text = "failed" if score is None else f"{score:.4f}"
    best_text = "-" if best is None else f"{best:.4f}"
    print(
        f"[tune] trial {index}/{total or '?'}: {shown} -> {objective}="
        f"{score_text} ({seconds:.1f}s; best {best_text})",
        flush=True,
    )


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


# ------------------------------------------------------------------ sidecar


class Sidecar:
    """Per-trial seconds and epochs, next to KerasTuner's own files."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.data: dict[str, dict] = {}
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as file:
                self.data = json.load(file)

    def put(self, key: str, **fields: Any) -> None:
        self.data.setdefault(key, {}).update(fields)
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as file:
            json.dump(self.data, file)
        os.replace(tmp, self.path)
