"""TF Serving's gRPC API beside the REST one, on the same parts.

`start_grpc_server` serves `tensorflow.serving.PredictionService`
(Predict, Classify, Regress, GetModelMetadata) and
`tensorflow.serving.ModelService` (GetModelStatus) with `grpc.aio`, in
the event loop of the REST app (started and stopped by its lifespan).
The messages are the ones `tensorflow-serving-api` ships, so TF Serving's
own `PredictionServiceStub` is the client.

A call goes where a REST call goes: the key (`authorization: Bearer` or
`x-api-key` metadata) through the same `Authenticator`; Predict, Classify
and Regress through `_predict.predict` with a protobuf decoder, so rates,
quotas, batching, version policy and the ledger are the REST ones. The
handlers take and return raw bytes, so the ledger's request and response
sizes are those on the wire. Errors carry TF Serving's gRPC codes:
INVALID_ARGUMENT (bad input), NOT_FOUND (unknown model or version),
UNAUTHENTICATED and PERMISSION_DENIED (keys), RESOURCE_EXHAUSTED (rate
or quota; `retry-after` trailing metadata).
"""

import asyncio
import json
import logging
from collections.abc import Awaitable
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import regression_pb2

from aiservice_kit._layout import SERVING_SIGNATURE
from aiservice_kit.serving import _examples
from aiservice_kit.serving import _predict
from aiservice_kit.serving._codec import check_shape
from aiservice_kit.serving._errors import ServingError
from aiservice_kit.serving._service import Service
from aiservice_kit.serving.auth import ApiKey
from aiservice_kit.serving.auth import Authenticator
from aiservice_kit.serving.config import GRPC_GRACE_S
from aiservice_kit.serving.config import GRPC_MAX_CONCURRENT_RPCS
from aiservice_kit.serving.config import MAX_FILLED_VALUES
from aiservice_kit.serving.config import OFFLOAD_BYTES
from aiservice_kit.serving.registry import ModelSpec

logger = logging.getLogger("aiservice_kit.serving")

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
#: The one metadata field TF Serving's GetModelMetadata knows.
SIGNATURE_DEF_FIELD = "signature_def"

#: TF Serving's gRPC code for each HTTP status of a ServingError.
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
}


def status_code_of(http_status: int) -> grpc.StatusCode:
    """The gRPC code TF Serving answers where its REST API has `status`."""
    return _CODES.get(http_status, grpc.StatusCode.UNKNOWN)


async def _abort(
    context: grpc.aio.ServicerContext, status: int, message: str, headers
) -> None:
    retry_after = headers.get("Retry-After")
    if retry_after is not None:
        context.set_trailing_metadata((("retry-after", retry_after),))
    await context.abort(status_code_of(status), message)


def _parse(message_type: Any, data: bytes) -> Any:
    try:
        return message_type.FromString(data)
    except Exception:  # DecodeError, or a message that is not one
        raise ServingError(
            f"Could not parse the request as a {message_type.DESCRIPTOR.name}."
        ) from None


def _spec_of(model_spec: Any) -> ModelSpec:
    """The REST `ModelSpec` of a TF Serving `ModelSpec` message."""
    if not model_spec.name:
        raise ServingError(
            "Missing ModelSpec: `model_spec.name` must name a served model."
        )
    which = model_spec.WhichOneof("version_choice")
    if which == "version":
        return ModelSpec(model_spec.name, version=str(model_spec.version.value))
    if which == "version_label":
        return ModelSpec(model_spec.name, label=model_spec.version_label)
    return ModelSpec(model_spec.name)


def _peer(context: grpc.aio.ServicerContext) -> str:
    """The client's address (`ipv4:127.0.0.1:5000` -> its host part)."""
    peer = context.peer() or ""
    return "address:" + peer.rpartition(":")[0]


def _caller(
    service: Service, context: grpc.aio.ServicerContext, model: str
) -> ApiKey | None:
    """The calling key from the metadata, allowed to use `model`."""
    headers = {
        name.lower(): value
        for name, value in context.invocation_metadata() or ()
        if isinstance(value, str)
    }
    key = service.auth.authenticate(headers)
    Authenticator.authorize(key, model)
    return key


def _reply_spec(target: Any, name: str, version: int, signature: str) -> None:
    target.name = name
    target.version.value = version
    target.signature_name = signature


# -- Tensors ------------------------------------------------------------------


def _check_inputs(request: Any, signature: Any) -> None:
    """Checks a PredictRequest's inputs against `signature` from their
    names and declared shapes, before admission and any tensor."""
    sent, wanted = set(request.inputs), set(signature.inputs)
    if sent != wanted:
        raise ServingError(
            f"input size does not match signature: {len(sent)}!="
            f"{len(wanted)} len({{{', '.join(sorted(sent))}}}) != "
            f"len({{{', '.join(sorted(wanted))}}}). Sent extra: "
            f"{{{', '.join(sorted(sent - wanted))}}}. Missing but required: "
            f"{{{', '.join(sorted(wanted - sent))}}}."
        )
    for name, info in signature.inputs.items():
        check_declared_shape(name, request.inputs[name], info)


def _input_arrays(request: Any, signature: Any) -> dict[str, np.ndarray]:
    """The request's TensorProtos as arrays (`_check_inputs` first)."""
    arrays = {}
    for name, info in signature.inputs.items():
        proto = request.inputs[name]
        try:
            array = tf.make_ndarray(proto)
        except Exception as error:
            raise ServingError(
                f"Input '{name}' is not a valid TensorProto: {error}"
            ) from None
        check_shape(name, array, info)
        arrays[name] = array
    return arrays


#: The repeated fields a TensorProto carries its values in.
_VALUE_FIELDS = (
    "half_val", "float_val", "double_val", "int_val", "string_val",
    "scomplex_val", "int64_val", "bool_val", "dcomplex_val", "uint32_val",
    "uint64_val",
)  # fmt: skip


def check_declared_shape(name: str, proto: Any, info: Any) -> None:
    """Checks a TensorProto's dtype, shape and value count before a tensor
    is built.

    `tf.make_ndarray` fills a tensor sent with fewer values than its shape
    holds by repeating the last one (TF's rule), so a 40-byte message can
    declare gigabytes. The dtype and shape are checked against the
    signature, a tensor filled that way is bounded by `MAX_FILLED_VALUES`,
    no dimension may be negative, and more values than the shape holds
    are refused.

    Raises:
        ServingError: 400 naming the input, what it declares and what the
            signature accepts.
    """
    try:
        dtype = types_pb2.DataType.Name(proto.dtype)
    except ValueError:
        dtype = f"enum value {proto.dtype}"
    if dtype != info.tf_dtype_name:
        raise ServingError(
            f"Input '{name}' expects {info.describe()} "
            f"({info.tf_dtype_name}); received dtype {dtype}."
        )
    dims = [dim.size for dim in proto.tensor_shape.dim]
    if any(size < 0 for size in dims):
        raise ServingError(
            f"Input '{name}': every tensor_shape dim must be >= 0; "
            f"received {dims!r:.80}."
        )
    if proto.tensor_shape.unknown_rank:
        return  # a scalar to TensorFlow; the shape check follows
    try:
        # A view of one value: no memory, whatever the shape.
        declared = np.broadcast_to(np.zeros((), np.uint8), dims)
    except ValueError:
        raise ServingError(
            f"Input '{name}': tensor_shape {dims!r:.80} holds more values "
            f"than memory; it expects {info.describe()}."
        ) from None
    check_shape(name, declared, info)
    if proto.tensor_content:
        if info.dtype == "string":
            raise ServingError(
                f"Input '{name}': a DT_STRING tensor carries its values in "
                "string_val, not tensor_content."
            )
        size = np.dtype(info.dtype).itemsize * declared.size
        if len(proto.tensor_content) != size:
            raise ServingError(
                f"Input '{name}': tensor_shape {dims!r:.80} of "
                f"{info.tf_dtype_name} takes {size} bytes of tensor_content; "
                f"received {len(proto.tensor_content)}."
            )
        return
    sent = sum(len(getattr(proto, field)) for field in _VALUE_FIELDS)
    # A complex value takes two entries (real, imaginary).
    sent -= (len(proto.scomplex_val) + len(proto.dcomplex_val)) // 2
    if sent > declared.size:
        raise ServingError(
            f"Input '{name}': tensor_shape {dims!r:.80} holds "
            f"{declared.size} values; received {sent}."
        )
    if sent < declared.size > MAX_FILLED_VALUES:
        raise ServingError(
            f"Input '{name}': tensor_shape {dims!r:.80} holds "
            f"{declared.size} values but {sent} were sent; a tensor filled "
            f"by repeating its last value may hold at most "
            f"{MAX_FILLED_VALUES}. Send every value."
        )


def _instances(arrays: dict[str, np.ndarray]) -> int:
    first = next(iter(arrays.values()), None)
    return 1 if first is None or not first.ndim else int(first.shape[0])


async def _off_loop(data: bytes, fn: Callable[[], Any]) -> Any:
    """Runs `fn` in a thread for a large request, here for a small one."""
    return await asyncio.to_thread(fn) if len(data) > OFFLOAD_BYTES else fn()


# -- tf.Examples (Classify, Regress) ------------------------------------------


def _serialized_examples(
    request_input: Any, call: _examples.ExampleCall
) -> np.ndarray:
    """An `Input` message as serialized `tf.Example`s, [batch] strings.

    `example_list_with_context` is flattened as TF Serving does: each
    example gets the context's features, its own winning on a clash
    (bounded by `_examples.check_merged_size`). Values the signature's
    cast would change are refused as REST's are
    (`_examples.check_example_protos`).
    """
    which = request_input.WhichOneof("kind")
    if which == "example_list":
        examples = list(request_input.example_list.examples)
    elif which == "example_list_with_context":
        listed = request_input.example_list_with_context
        _examples.check_merged_size(
            listed.context.ByteSize(),
            len(listed.examples),
            sum(example.ByteSize() for example in listed.examples),
        )
        examples = []
        for example in listed.examples:
            merged = type(listed.context)()
            merged.CopyFrom(listed.context)
            for name, feature in example.features.feature.items():
                merged.features.feature[name].CopyFrom(feature)
            examples.append(merged)
    else:
        examples = []
    if not examples:
        raise ServingError("Input is empty.")
    _examples.check_example_protos(examples, call)
    serialized = np.empty(len(examples), dtype=object)
    serialized[:] = [example.SerializeToString() for example in examples]
    return serialized


# -- The pipeline's decoders --------------------------------------------------


def _declared_batch(request: Any) -> int:
    """Instances a PredictRequest declares (its inputs' first axis), read
    from the shapes before any tensor is built, for admission control."""
    for proto in request.inputs.values():
        dims = proto.tensor_shape.dim
        return int(dims[0].size) if dims else 1
    return 0


def _predict_decoder(request: Any) -> _predict.Decoder:
    async def decode(
        servable: Any, data: bytes, admit: _predict.Admit
    ) -> _predict.Decoded:
        name = request.model_spec.signature_name or SERVING_SIGNATURE
        signature = servable.signature(name)
        wanted = list(request.output_filter)
        unknown = sorted(set(wanted) - set(signature.outputs))
        if unknown:
            raise ServingError(
                f"output tensor alias not found in signature: {unknown[0]} "
                f"Outputs expected to be in the set "
                f"{{{', '.join(sorted(signature.outputs))}}}."
            )
        _check_inputs(request, signature)
        admit(_declared_batch(request))
        arrays = await _off_loop(
            data, lambda: _input_arrays(request, signature)
        )

        def encode(outputs: dict[str, np.ndarray]) -> _predict.Reply:
            response = predict_pb2.PredictResponse()
            _reply_spec(
                response.model_spec,
                request.model_spec.name,
                servable.version,
                name,
            )
            for key in wanted or outputs:
                response.outputs[key].CopyFrom(
                    tf.make_tensor_proto(outputs[key])
                )
            return response.SerializeToString(), {}

        return signature, arrays, _instances(arrays), encode

    return decode


def _examples_decoder(request: Any, api: str) -> _predict.Decoder:
    async def decode(
        servable: Any, data: bytes, admit: _predict.Admit
    ) -> _predict.Decoded:
        # The signature rule and the results are REST's (`_examples`).
        call = _examples.example_call(
            api,
            request.model_spec.signature_name,
            servable.signatures,
            servable.metadata,
        )
        signature = servable.signature(call.signature_name)
        examples = request.input
        admit(
            len(examples.example_list.examples)
            or len(examples.example_list_with_context.examples)
        )
        serialized = await _off_loop(
            data, lambda: _serialized_examples(examples, call)
        )

        def encode(outputs: dict[str, np.ndarray]) -> _predict.Reply:
            if api == "classify":
                response = classification_pb2.ClassificationResponse()
                for row in _examples.classify_results(outputs):
                    entry = response.result.classifications.add()
                    for label, score in row:
                        item = entry.classes.add()
                        item.label = label
                        item.score = score
            else:
                response = regression_pb2.RegressionResponse()
                for value in _examples.regress_results(outputs):
                    response.result.regressions.add().value = value
            _reply_spec(
                response.model_spec,
                request.model_spec.name,
                servable.version,
                signature.name,
            )
            return response.SerializeToString(), {}

        arrays = _examples.examples_input(signature, serialized)
        return signature, arrays, len(serialized), encode

    return decode


# -- Handlers -----------------------------------------------------------------


class _Handlers:
    """The RPCs of both services, as raw-bytes handlers on one Service."""

    def __init__(self, service: Service) -> None:
        self.service = service

    async def _metered(
        self,
        data: bytes,
        context: grpc.aio.ServicerContext,
        message_type: Any,
        decoder: Callable[[Any], _predict.Decoder],
    ) -> bytes:
        admission, caller = None, None
        try:
            request = _parse(message_type, data)
            spec = _spec_of(request.model_spec)
            key = _caller(self.service, context, spec.name)
            model = self.service.registry.models.get(spec.name)
            if model is not None:
                # As REST's bodies (`app._BodyLimit`): the message's bytes
                # count against the model's `max_inflight_bytes`.
                caller = "key:" + key.id if key is not None else _peer(context)
                model.admission.reserve_bytes(len(data), caller)
                admission = model.admission
            reply = await _predict.predict(
                self.service, key, spec, data, decode=decoder(request)
            )
        except ServingError as error:
            await _abort(
                context, error.status_code, error.message, error.headers
            )
        except Exception as error:  # as REST's 500: logged, not detailed
            logger.exception("unexpected error in a gRPC call")
            await _abort(
                context, 500, f"Internal error: {type(error).__name__}", {}
            )
        finally:
            if admission is not None:
                admission.release_bytes(len(data), caller)
        if reply.status != 200:
            message = json.loads(reply.content)["error"]
            await _abort(context, reply.status, message, reply.headers)
        return reply.content

    async def predict(self, data: bytes, context) -> bytes:
        return await self._metered(
            data, context, predict_pb2.PredictRequest, _predict_decoder
        )

    async def classify(self, data: bytes, context) -> bytes:
        return await self._metered(
            data,
            context,
            classification_pb2.ClassificationRequest,
            lambda request: _examples_decoder(request, "classify"),
        )

    async def regress(self, data: bytes, context) -> bytes:
        return await self._metered(
            data,
            context,
            regression_pb2.RegressionRequest,
            lambda request: _examples_decoder(request, "regress"),
        )

    async def _unmetered(
        self,
        data: bytes,
        context: grpc.aio.ServicerContext,
        message_type: Any,
        answer: Callable[[Any, ModelSpec], Any],
    ) -> bytes:
        try:
            request = _parse(message_type, data)
            spec = _spec_of(request.model_spec)
            _caller(self.service, context, spec.name)
            response = answer(request, spec)
        except ServingError as error:
            await _abort(
                context, error.status_code, error.message, error.headers
            )
        except Exception as error:  # as REST's 500: logged, not detailed
            logger.exception("unexpected error in a gRPC call")
            await _abort(
                context, 500, f"Internal error: {type(error).__name__}", {}
            )
        return response.SerializeToString()

    def _metadata(self, request: Any, spec: ModelSpec) -> Any:
        fields = list(request.metadata_field)
        if not fields:
            raise ServingError(
                "GetModelMetadataRequest must specify at least one "
                "metadata_field"
            )
        for field in fields:
            if field != SIGNATURE_DEF_FIELD:
                raise ServingError(f"Metadata field {field} is not supported")
        model, version = spec.resolve(self.service.registry)
        servable = model.get(version)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for name, definition in servable.signature_defs.items():
            json_format.ParseDict(
                definition,
                signatures.signature_def[name],
                ignore_unknown_fields=True,
            )
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        _reply_spec(response.model_spec, spec.name, servable.version, "")
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signatures)
        return response

    def _status(self, request: Any, spec: ModelSpec) -> Any:
        model, version = spec.resolve(self.service.registry)
        response = get_model_status_pb2.GetModelStatusResponse()
        for row in model.status(version):
            json_format.ParseDict(
                row.to_json(),
                response.model_version_status.add(),
                ignore_unknown_fields=True,
            )
        return response

    async def get_model_metadata(self, data: bytes, context) -> bytes:
        return await self._unmetered(
            data,
            context,
            get_model_metadata_pb2.GetModelMetadataRequest,
            self._metadata,
        )

    async def get_model_status(self, data: bytes, context) -> bytes:
        return await self._unmetered(
            data,
            context,
            get_model_status_pb2.GetModelStatusRequest,
            self._status,
        )


def _generic_handlers(service: Service) -> list[Any]:
    handlers = _Handlers(service)

    def raw(fn: Callable[[bytes, Any], Awaitable[bytes]]) -> Any:
        return grpc.unary_unary_rpc_method_handler(fn)  # bytes in and out

    return [
        grpc.method_handlers_generic_handler(
            PREDICTION_SERVICE,
            {
                "Predict": raw(handlers.predict),
                "Classify": raw(handlers.classify),
                "Regress": raw(handlers.regress),
                "GetModelMetadata": raw(handlers.get_model_metadata),
            },
        ),
        grpc.method_handlers_generic_handler(
            MODEL_SERVICE, {"GetModelStatus": raw(handlers.get_model_status)}
        ),
    ]


class GrpcServer:
    """A running gRPC server; `await stop()` ends it.

    Attributes:
        address: str. `host:port` it listens on.
        port: int. The bound port (useful when 0 was asked for).
    """

    def __init__(self, server: Any, address: str, port: int) -> None:
        self._server = server
        self.address = address
        self.port = port

    async def stop(self, grace_s: float = GRPC_GRACE_S) -> None:
        """Stops accepting calls; running ones get `grace_s` to finish."""
        await self._server.stop(grace_s)


async def start_grpc_server(
    service: Service,
    host: str,
    port: int,
    max_message_bytes: int,
    *,
    reuse_port: bool = False,
) -> GrpcServer:
    """Starts TF Serving's gRPC services in the running event loop.

    Args:
        service: Service. The REST app's parts (same keys, ledger, models).
        host: str. Address to listen on.
        port: int. Port (0: any free one).
        max_message_bytes: int. Largest request message accepted (the
            REST body limit; larger ones get RESOURCE_EXHAUSTED).
        reuse_port: bool. Share the port with other processes that set
            it too (SO_REUSEPORT: `serve --workers`); False, a port in use
            is an error.

    Returns:
        The running GrpcServer.

    Raises:
        OSError: when the port cannot be bound.

    Example:
    ```python
    server = await start_grpc_server(service, "127.0.0.1", 8500, 16 << 20)
    ...
    await server.stop()
    ```
    """
    server = grpc.aio.server(
        handlers=_generic_handlers(service),
        # Messages arrive whole before a handler runs: this bounds the
        # memory they can take at once (beyond it: RESOURCE_EXHAUSTED).
        maximum_concurrent_rpcs=GRPC_MAX_CONCURRENT_RPCS,
        options=(
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", int(reuse_port)),
        ),
    )
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as error:
        raise OSError(f"gRPC could not listen on {address}: {error}") from None
    if not bound:
        raise OSError(f"gRPC could not listen on {address}.")
    await server.start()
    logger.info("gRPC (TF Serving's PredictionService) on %s", address)
    return GrpcServer(server, address, bound)
