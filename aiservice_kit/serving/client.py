"""A small Python client for the server (and for TF Serving itself)."""

import json
from typing import Any

import httpx
import numpy as np

from aiservice_kit.serving._codec import COLUMNAR_RESULT_KEY
from aiservice_kit.serving._codec import ROW_RESULT_KEY


class ServingClientError(Exception):
    """An error answer from the server.

    Attributes:
        status_code: int. The HTTP status.
        message: str. The server's `error` text.
        retry_after: float or None. Seconds to wait (429 answers).
    """

    def __init__(
        self, status_code: int, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(f"HTTP {status_code}: {message}")
        self.status_code = status_code
        self.message = message
        self.retry_after = retry_after


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype == object or value.dtype.kind in "SU":
            return [_plain(item) for item in value.tolist()]
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


class Client:
    """Calls a model server over HTTP with an API key.

    Args:
        url: str. Server address, e.g. `http://127.0.0.1:8501`.
        api_key: str or None. Sent as `Authorization: Bearer <key>`.
        timeout: float. Seconds per call.

    Example:
    ```python
    from aiservice_kit.serving import Client
    with Client("http://127.0.0.1:8501", api_key=key) as client:
        probabilities = client.predict("mnist", x_test[:2])
        print(client.usage()["total"])
    ```
    """

    def __init__(
        self, url: str, api_key: str | None = None, timeout: float = 30.0
    ) -> None:
        if not isinstance(url, str) or not url.startswith(
            ("http://", "https://")
        ):
            raise ValueError(
                "`url` must be an http:// or https:// address. "
                f"Received: url={url!r}"
            )
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=url.rstrip("/"), headers=headers, timeout=timeout
        )
        #: The model version that answered the last predict call.
        self.last_version: int | None = None

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        try:
            payload = response.json()
        except ValueError:
            payload = {"error": response.text}
        if response.status_code != 200:
            retry = response.headers.get("Retry-After")
            raise ServingClientError(
                response.status_code,
                payload.get("error", response.text)
                if isinstance(payload, dict)
                else response.text,
                float(retry) if retry else None,
            )
        version = response.headers.get("X-Model-Version")
        if version is not None:
            self.last_version = int(version)
        return payload

    @staticmethod
    def _path(
        model: str, version: int | None, label: str | None, verb: str = ""
    ) -> str:
        path = f"/v1/models/{model}"
        if version is not None and label is not None:
            raise ValueError(
                "Pass a `version` or a `label`, not both. Received: "
                f"version={version!r}, label={label!r}"
            )
        if version is not None:
            path += f"/versions/{int(version)}"
        if label is not None:
            path += f"/labels/{label}"
        return path + verb

    def predict(
        self,
        model: str,
        instances: Any,
        *,
        version: int | None = None,
        label: str | None = None,
        signature_name: str | None = None,
    ) -> Any:
        """Row-format predict; returns `predictions`.

        Args:
            model: str. Model name.
            instances: list or numpy array (or a list of dicts, one key per
                input, for several inputs).
            version: int or None. A given version; None for the latest.
            label: str or None. The version a label names (`"stable"`), as
                the server's `version_labels` set; not with `version`.
            signature_name: str or None. Default `serving_default`.

        Returns:
            The `predictions` value (a list; a list of dicts when the model
            has several outputs).

        Raises:
            ServingClientError: for any non-200 answer.
            ValueError: when both `version` and `label` are given.
        """
        body = {"instances": _plain(instances)}
        return self._predict(model, version, label, body, signature_name)[
            ROW_RESULT_KEY
        ]

    def predict_columns(
        self,
        model: str,
        inputs: Any,
        *,
        version: int | None = None,
        label: str | None = None,
        signature_name: str | None = None,
    ) -> Any:
        """Columnar predict (`inputs`); returns `outputs`."""
        body = {"inputs": _plain(inputs)}
        return self._predict(model, version, label, body, signature_name)[
            COLUMNAR_RESULT_KEY
        ]

    def explain(
        self,
        model: str,
        instances: Any,
        *,
        version: int | None = None,
        label: str | None = None,
    ) -> dict[str, Any]:
        """Row-format `:explain`: predictions and their attributions.

        Args:
            model: str. Model name (exported with `explain=True`).
            instances: list or numpy array. Images or sequences.
            version: int or None. A given version; None for the latest.
            label: str or None. The version a label names; not with
                `version`.

        Returns:
            dict: `predictions` (as `predict` returns them) and
            `attributions` (one per instance, shaped like it).

        Raises:
            ServingClientError: for any non-200 answer (400 when the
                model has no `explain` signature).
            ValueError: when both `version` and `label` are given.

        Example:
        ```python
        answer = client.explain("mnist", images[:2])
        np.asarray(answer["attributions"]).shape  # images[:2].shape
        ```
        """
        return self._call(
            "POST",
            self._path(model, version, label, ":explain"),
            content=json.dumps({"instances": _plain(instances)}),
            headers={"Content-Type": "application/json"},
        )

    def classify(
        self,
        model: str,
        examples: list[dict[str, Any]],
        *,
        context: dict[str, Any] | None = None,
        version: int | None = None,
        label: str | None = None,
        signature_name: str | None = None,
    ) -> list[list[list[Any]]]:
        """TF Serving's Classify (`:classify`); returns `results`.

        Args:
            model: str. Model name.
            examples: list of dicts. One per example: feature (input) name
                to a value or a flat list of values (an image's pixels
                flattened row-major).
            context: dict or None. Features shared by every example.
            version: int or None. A given version; None for the latest.
            label: str or None. The version a label names.
            signature_name: str or None. Default: the export's
                `classification` signature.

        Returns:
            One list of `[label, score]` pairs per example.

        Raises:
            ServingClientError: for any non-200 answer.

        Example:
        ```python
        client.classify("spam", [{"text": "free prize now"}])
        # [[["ham", 0.04], ["spam", 0.96]]]
        ```
        """
        return self._examples(
            "classify", model, examples, context, version, label,
            signature_name,
        )  # fmt: skip

    def regress(
        self,
        model: str,
        examples: list[dict[str, Any]],
        *,
        context: dict[str, Any] | None = None,
        version: int | None = None,
        label: str | None = None,
        signature_name: str | None = None,
    ) -> list[float]:
        """TF Serving's Regress (`:regress`); one value per example.

        Args and Raises are those of `classify`.
        """
        return self._examples(
            "regress", model, examples, context, version, label,
            signature_name,
        )  # fmt: skip

    def _examples(
        self,
        api: str,
        model: str,
        examples: list[dict[str, Any]],
        context: dict[str, Any] | None,
        version: int | None,
        label: str | None,
        signature_name: str | None,
    ) -> Any:
        def flat(features: dict[str, Any]) -> dict[str, Any]:
            # A feature holds its values flattened row-major.
            return {
                name: value.reshape(-1)
                if isinstance(value, np.ndarray)
                else value
                for name, value in features.items()
            }

        body: dict[str, Any] = {
            "examples": [_plain(flat(example)) for example in examples]
        }
        if context:
            body["context"] = _plain(flat(context))
        if signature_name:
            body["signature_name"] = signature_name
        return self._call(
            "POST",
            self._path(model, version, label, ":" + api),
            content=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )["results"]

    def _predict(
        self,
        model: str,
        version: int | None,
        label: str | None,
        body: dict[str, Any],
        signature_name: str | None,
    ) -> dict[str, Any]:
        if signature_name:
            body["signature_name"] = signature_name
        return self._call(
            "POST",
            self._path(model, version, label, ":predict"),
            content=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )

    def status(
        self, model: str, version: int | None = None, label: str | None = None
    ) -> list[dict]:
        """The `model_version_status` rows."""
        return self._call("GET", self._path(model, version, label))[
            "model_version_status"
        ]

    def metadata(
        self, model: str, version: int | None = None, label: str | None = None
    ) -> dict:
        """Signature defs (and export metadata) of a version."""
        return self._call("GET", self._path(model, version, label, "/metadata"))

    def usage(self, since: str | None = None, until: str | None = None) -> dict:
        """The calling key's usage and charges (ISO dates, optional)."""
        params = {
            name: value
            for name, value in (("since", since), ("until", until))
            if value is not None
        }
        return self._call("GET", "/v1/usage", params=params)

    def ready(self) -> bool:
        """Whether every model has a loaded version."""
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def close(self) -> None:
        """Closes the connection pool."""
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
