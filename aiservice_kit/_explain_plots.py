"""Drawing explanations with matplotlib (the `[plot]` extra).

`plot_explanation` (exported as `aiservice_kit.plot_explanation` and
`aiservice_kit.explaining.plot_explanation`) draws any result of
`explain`: a heat map over an image, per-step bars under a sequence,
highlighted words for a text, contribution bars for a recommendation.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING
from typing import Any

import numpy as np

if TYPE_CHECKING:
    from aiservice_kit.explaining import Attribution
    from aiservice_kit.explaining import RecommendationExplanation
    from aiservice_kit.explaining import TextAttribution


def plot_explanation(
    explanation: Any, *, ax: Any = None, max_items: int = 5
) -> Any:
    """Draws an explanation and returns the matplotlib Figure.

    Images get a heat map of the attributions over the (grayscale) image;
    texts get each word highlighted (red toward the class, blue against);
    sequences get per-step bars under the signal; recommendations get, per
    recommended item, bars of the liked items behind it. In a notebook the
    returned Figure shows inline.

    Args:
        explanation: an `Attribution`, `TextAttribution` or
            `RecommendationExplanation` (one element of `explain`'s list).
        ax: matplotlib Axes or None. Draw there (a new figure otherwise;
            sequences use it for the bars only).
        max_items: int. Recommended items shown.

    Returns:
        matplotlib.figure.Figure.

    Raises:
        ImportError: if matplotlib is missing (`pip install
            "aiservice_kit[plot]"`).
        TypeError: on anything but the three explanation types.

    Example:
    ```python
    from aiservice_kit import explain, plot_explanation
    figure = plot_explanation(explain(model, ["free prize, call now"])[0])
    figure.savefig("why.png")
    ```
    """
    try:
        import matplotlib.pyplot as plt
    except ModuleNotFoundError as error:
        raise ImportError(
            'plot_explanation needs matplotlib: pip install "aiservice_kit'
            '[plot]" (or matplotlib).'
        ) from error
    # The result types live in `explaining`, which imports this module.
    from aiservice_kit.explaining import Attribution
    from aiservice_kit.explaining import RecommendationExplanation
    from aiservice_kit.explaining import TextAttribution

    if isinstance(explanation, TextAttribution):
        return _plot_text(plt, explanation, ax)
    if isinstance(explanation, Attribution):
        if explanation.kind == "image":
            return _plot_image(plt, explanation, ax)
        return _plot_sequence(plt, explanation, ax)
    if isinstance(explanation, RecommendationExplanation):
        return _plot_recommendation(plt, explanation, ax, max_items)
    raise TypeError(
        "`explanation` must be an Attribution, TextAttribution or "
        "RecommendationExplanation. Received: explanation of type "
        f"{type(explanation).__name__}"
    )


def _figure(plt: Any, ax: Any, size: tuple) -> tuple:
    if ax is None:
        figure, ax = plt.subplots(figsize=size)
        return figure, ax
    return ax.figure, ax


def _title(e: Any) -> str:
    label = e.target_name if e.target_name is not None else e.target
    return f"class {label} (p={e.prediction:.2f})"


def _plot_image(plt: Any, e: Attribution, ax: Any) -> Any:
    figure, ax = _figure(plt, ax, (4, 4))
    image = e.inputs.astype(np.float64)
    if image.ndim == 3:
        image = image.mean(axis=-1)
    heat = e.attributions.astype(np.float64)
    if heat.ndim == 3:
        heat = heat.sum(axis=-1)
    limit = float(np.abs(heat).max()) or 1.0
    ax.imshow(image, cmap="gray")
    ax.imshow(heat, cmap="bwr", vmin=-limit, vmax=limit, alpha=0.55)
    ax.set_title(f"Integrated gradients: {_title(e)}")
    ax.axis("off")
    return figure


def _plot_sequence(plt: Any, e: Attribution, ax: Any) -> Any:
    if ax is None:
        figure, (top, ax) = plt.subplots(
            2, 1, figsize=(7, 4), sharex=True, height_ratios=(1, 1)
        )
        signal = e.inputs if e.inputs.ndim == 2 else e.inputs[:, None]
        top.plot(signal, linewidth=1)
        top.set_ylabel("input")
        top.set_title(f"Integrated gradients per step: {_title(e)}")
    else:
        figure = ax.figure
    steps = e.per_step()
    colours = np.where(steps >= 0, "tab:red", "tab:blue")
    ax.bar(np.arange(len(steps)), steps, color=colours, width=1.0)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xlabel("time step")
    ax.set_ylabel("attribution")
    return figure


def _plot_text(plt: Any, e: TextAttribution, ax: Any) -> Any:
    lines = max(1, math.ceil(len(e.text) / 70))
    figure, ax = _figure(plt, ax, (8, 0.5 + 0.45 * lines))
    ax.axis("off")
    limit = float(np.abs(e.attributions).max()) if len(e.tokens) else 0.0
    limit = limit or 1.0
    cmap = plt.get_cmap("bwr")
    renderer = figure.canvas.get_renderer()
    x, y = 0.0, 1.0
    line_height = 1.0 / (lines + 1)
    for token, value in zip(e.tokens, e.attributions, strict=True):
        colour = cmap(0.5 + 0.5 * float(value) / limit)
        text = ax.text(
            x,
            y,
            token,
            transform=ax.transAxes,
            va="top",
            fontsize=11,
            bbox={"facecolor": colour, "edgecolor": "none", "pad": 1.5},
        )
        width = text.get_window_extent(renderer).width
        width /= ax.get_window_extent(renderer).width
        if x > 0 and x + width > 1.0:  # wrap
            x, y = 0.0, y - line_height
            text.set_position((x, y))
        x += width + 0.012
    ax.set_title(f"{e.method}: {_title(e)}", fontsize=10, loc="left")
    return figure


def _plot_recommendation(
    plt: Any, e: RecommendationExplanation, ax: Any, max_items: int
) -> Any:
    shown = [i for i, s in enumerate(e.scores[:max_items]) if e.contributors[i]]
    figure, ax = _figure(plt, ax, (7, 0.6 + 0.9 * max(len(shown), 1)))
    labels = []
    cmap = plt.get_cmap("tab20")
    for row, i in enumerate(shown):
        left = 0.0
        for k, (_, value) in enumerate(e.contributors[i][:8]):
            ax.barh(row, value, left=left, color=cmap(k % 20))
            left += value
        rest = float(e.scores[i]) - left
        if rest > 0:
            ax.barh(row, rest, left=left, color="lightgray")
        top = ", ".join(str(source) for source, _ in e.contributors[i][:3])
        ax.text(
            float(e.scores[i]) * 1.02,
            row,
            f"{len(e.contributors[i])} {e.contributor_kind}s; top {top}",
            va="center",
            fontsize=8,
        )
        labels.append(f"item {e.items[i]}")
    ax.set_yticks(range(len(shown)), labels)
    ax.invert_yaxis()
    if shown:
        ax.set_xlim(0, max(float(e.scores[i]) for i in shown) * 1.6)
    ax.set_xlabel(
        f"score: contributions of the top 8 {e.contributor_kind}s "
        "(coloured) and the rest (grey)"
    )
    ax.set_title(f"Why these items for user {e.user}")
    return figure
