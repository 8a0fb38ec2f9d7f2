"""`:explain`: attributions beside predictions, from the `explain` signature.

`POST /v1/models/M[/versions/N|/labels/L]:explain` takes the Predict
request (`instances` or `inputs`) and runs the SavedModel's `explain`
signature (`EXPLAIN_SIGNATURE`, written by `export_saved_model(...,
explain=True)`): integrated gradients, the math of
`aiservice_kit.explain`. The answer is exactly `:predict`'s answer plus
one key:

- rows in (`instances`): `{"predictions": [...], "attributions": [...]}`,
  `attributions[i]` shaped like `instances[i]`;
- columns in (`inputs`): `{"outputs": ..., "attributions": ...}`, one
  tensor shaped like the input.

The call runs through the metered predict pipeline (`_predict.predict`
with `api="explain"`): same keys, rate limits, quotas and ledger; its
records carry `api = "explain"`, so the price list can price it apart
(`"MODEL:explain"`, `"*:explain"` in `[prices]`).
"""

from typing import Any

import numpy as np

from aiservice_kit._layout import ATTRIBUTIONS
from aiservice_kit._layout import EXPLAIN_SIGNATURE
from aiservice_kit._layout import SERVING_SIGNATURE
from aiservice_kit.serving._codec import encode_predict
from aiservice_kit.serving._errors import ServingError

#: The `api` of an `:explain` call in the ledger and the price list.
EXPLAIN_API = "explain"


def signature_of(servable: Any, document: dict[str, Any]) -> Any:
    """The `explain` signature of a loaded version, or a 400 naming the fix.

    Args:
        servable: ServableVersion. The version asked for.
        document: dict. The parsed request; a `signature_name` other than
            `explain` (or the default) is refused.

    Returns:
        The version's `Signature` named `EXPLAIN_SIGNATURE`.

    Raises:
        ServingError: 400 when the version has no `explain` signature, or
            the request names another signature.

    Example:
    ```python
    signature = signature_of(model.get(version), {"instances": rows})
    ```
    """
    name = document.get("signature_name", "") or EXPLAIN_SIGNATURE
    if name not in (EXPLAIN_SIGNATURE, SERVING_SIGNATURE):
        raise ServingError(
            f"`:explain` runs the {EXPLAIN_SIGNATURE!r} signature only; "
            "drop `signature_name` or set it to "
            f"{EXPLAIN_SIGNATURE!r}. Received: signature_name={name!r:.80}",
            400,
        )
    signature = servable.signatures.get(EXPLAIN_SIGNATURE)
    if signature is None:
        raise ServingError(
            f"Version {servable.version} of model {servable.model_name!r} "
            f"has no {EXPLAIN_SIGNATURE!r} signature, so it cannot explain. "
            "Export it with `export_saved_model(model, path, explain=True)` "
            "(image and numeric-sequence models; text, tabular and "
            "several-input models have none). Signatures it has: "
            f"{', '.join(sorted(servable.signatures))}",
            400,
        )
    return signature


def encode(outputs: dict[str, np.ndarray], fmt: str) -> dict[str, Any]:
    """`:predict`'s response for the outputs, plus `attributions`.

    Args:
        outputs: dict of name -> array. The `explain` signature's outputs
            (the serving outputs and `ATTRIBUTIONS`).
        fmt: str. `"row"` or `"columnar"` (as the request came).

    Returns:
        dict: `predictions` (rows) or `outputs` (columns) exactly as
        `:predict` answers, and `attributions` (a list with one entry per
        instance, each shaped like it).

    Example:
    ```python
    encode({"predictions": y, "attributions": a}, "row")
    # {"predictions": [...], "attributions": [...]}
    ```
    """
    served = {k: v for k, v in outputs.items() if k != ATTRIBUTIONS}
    response = encode_predict(served, fmt)
    response[ATTRIBUTIONS] = np.asarray(outputs[ATTRIBUTIONS]).tolist()
    return response
