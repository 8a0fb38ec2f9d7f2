"""Pydantic models of the REST API, for the OpenAPI spec and the docs.

Predict bodies are parsed by hand (TF Serving's rules, NaN and Infinity
allowed) for speed; these models describe them for `/docs` and for tools
that generate clients or tests from `/openapi.json`.
"""

from typing import Any

import pydantic


class PredictRequest(pydantic.BaseModel):
    """A TF Serving predict request: `instances` (rows) or `inputs`."""

    signature_name: str | None = pydantic.Field(
        None, description="Signature to run; default `serving_default`."
    )
    instances: list[Any] | None = pydantic.Field(
        None,
        description="Row format: one value or object (one key per input) "
        'per instance. Binary strings as {"b64": ...}.',
    )
    inputs: Any = pydantic.Field(
        None,
        description="Columnar format: one tensor, or an object of tensors "
        "by input name.",
    )


class PredictResponse(pydantic.BaseModel):
    """`predictions` for a row request, `outputs` for a columnar one."""

    predictions: Any = None
    outputs: Any = None


class ExplainResponse(pydantic.BaseModel):
    """`:predict`'s answer, plus `attributions`: one per instance (rows)
    or one tensor (columns), each shaped like the input."""

    predictions: Any = None
    outputs: Any = None
    attributions: Any = None


class ErrorResponse(pydantic.BaseModel):
    """Every error, as TF Serving returns it."""

    error: str


class StatusDetail(pydantic.BaseModel):
    """Whether a version loaded, and why not."""

    error_code: str
    error_message: str


class VersionStatus(pydantic.BaseModel):
    """One version's state: AVAILABLE, LOADING or END (failed/unloaded)."""

    version: str
    state: str
    status: StatusDetail
    runtime: str | None = None  # once loaded: tensorflow, litert or onnx


class ModelStatusResponse(pydantic.BaseModel):
    """TF Serving's GetModelStatusResponse in JSON."""

    model_version_status: list[VersionStatus]


class ModelSpec(pydantic.BaseModel):
    """Which model and version answered."""

    name: str
    signature_name: str
    version: str


class ModelMetadataResponse(pydantic.BaseModel):
    """TF Serving's GetModelMetadataResponse in JSON, plus our metadata."""

    model_spec: ModelSpec
    metadata: dict[str, Any]


class UsageLine(pydantic.BaseModel):
    """Usage and charge of one model through one API."""

    model: str
    api: str = "predict"
    requests: int
    errors: int
    instances: int
    price_per_1000: str
    amount: str


class UsageResponse(pydantic.BaseModel):
    """The calling key's own usage over a period, priced."""

    key: dict[str, Any]
    plan: dict[str, Any] | None
    since: str | None
    until: str | None
    currency: str
    lines: list[UsageLine]
    total: str
    used_this_month: int


class HealthResponse(pydantic.BaseModel):
    """Liveness and readiness answers."""

    status: str
    models: dict[str, list[int]] | None = None
    problems: dict[str, str] | None = None


class ExamplesRequest(pydantic.BaseModel):
    """A TF Serving classify or regress request: `tf.Example`s as JSON."""

    signature_name: str | None = pydantic.Field(
        None,
        description="Signature to run; default `serving_default`, or the "
        "export's `classification`/`regression` when `serving_default` is "
        "a Predict signature.",
    )
    context: dict[str, Any] | None = pydantic.Field(
        None, description="Features shared by every example."
    )
    examples: list[dict[str, Any]] = pydantic.Field(
        description="One object per example: feature name to a number, a "
        'string, {"b64": ...} or a list of them.',
    )


class ResultsResponse(pydantic.BaseModel):
    """`results`: [[label, score], ...] per example, or one float each."""

    results: list[Any]


class V2Tensor(pydantic.BaseModel):
    """An Open Inference Protocol tensor: data flattened row-major."""

    name: str
    shape: list[int]
    datatype: str = pydantic.Field(
        description="BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64 "
        "or BYTES."
    )
    parameters: dict[str, Any] | None = pydantic.Field(
        None,
        description="`binary_data_size`: the tensor's bytes follow the "
        "JSON (binary tensor extension).",
    )
    data: list[Any] | None = None


class V2InferRequest(pydantic.BaseModel):
    """An Open Inference Protocol (KServe V2) inference request."""

    id: str | None = None
    parameters: dict[str, Any] | None = pydantic.Field(
        None,
        description="`signature_name` (default `serving_default`), "
        "`binary_data_output`.",
    )
    inputs: list[V2Tensor]
    outputs: list[dict[str, Any]] | None = pydantic.Field(
        None,
        description="Outputs to return (default all), each "
        '{"name": ..., "parameters": {"binary_data": true|false}}.',
    )


class V2InferResponse(pydantic.BaseModel):
    """The outputs, as tensors."""

    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[V2Tensor]
