"""KServe's Python model server, with what a server on a house's network needs added.

kserve 0.15.2 serves REST on uvicorn with no TLS option and no authentication, so its REST server
is subclassed here: uvicorn gets the certificate (and, for client certificates, the CA), and an
ASGI middleware asks every request but the health checks for the bearer token and refuses bodies
over the size limit before they are read. Its data plane is subclassed so that model metadata
names the bundle served as the model's version. KServe's gRPC server listens without TLS and takes
no interceptor of ours, so it stays off: the daemon speaks REST.
"""

from __future__ import annotations

import hmac
import json
import ssl
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from kserve.errors import InvalidInput
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc.grpc_predict_v2_pb2 import ModelMetadataResponse
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import add_GRPCInferenceServiceServicer_to_server
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from kserve.protocol.rest.server import RESTServer

from edge_gesture.vlm.remote import HEADER_LENGTH, RemoteError, tensor_from_bytes

#: Paths answered without a token: the protocol's liveness and readiness, which load balancers
#: and Kubernetes probes ask and which say nothing about the models.
OPEN_PATHS = frozenset({"/", "/v2/health/live", "/v2/health/ready"})


@dataclass(frozen=True)
class Listen:
    host: str
    port: int
    token: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""  # set: clients must present a certificate this CA signed
    max_request_bytes: int = 16 * 1024 * 1024


class EdgeDataPlane(DataPlane):
    """Model metadata with `versions` (the sha256 of the bundle's manifest each model runs), and
    binary request tensors kept as arrays: kserve 0.15.2 turns each into a Python list (about a
    second for a 512x512 crop) before the model sees it."""

    def __init__(self, registry: ModelRepository, versions: dict[str, str]):
        super().__init__(model_registry=registry)
        self._versions = versions

    def decode_inference_request(self, body, headers, model_name):
        length = headers.get(HEADER_LENGTH.lower()) if isinstance(body, bytes) else None
        if length is None:
            return super().decode_inference_request(body, headers, model_name)
        try:
            n = int(length)
            request = json.loads(body[:n])
            inputs, at = [], n
            for i in request["inputs"]:
                size = (i.get("parameters") or {}).get("binary_data_size")
                if size is None:
                    raise InvalidInput(f"input {i.get('name')!r}: no binary_data_size")
                data = tensor_from_bytes(i["datatype"], [-1], body[at : at + size])
                at += size
                inputs.append(InferInput(name=i["name"], shape=i["shape"],
                                         datatype=i["datatype"], data=data))
            outputs = [RequestedOutput(name=o["name"], parameters=o.get("parameters"))
                       for o in request.get("outputs") or []]
        except (ValueError, KeyError, TypeError, RemoteError) as e:
            raise InvalidInput(f"not a binary inference request: {e}") from None
        return InferRequest(model_name=model_name, request_id=request.get("id"),
                            parameters=request.get("parameters"), infer_inputs=inputs,
                            request_outputs=outputs or None)

    async def model_metadata(self, model_name: str) -> dict:
        meta = await super().model_metadata(model_name)
        if model_name in self._versions:
            meta["versions"] = [self._versions[model_name]]
        return meta


class Guard:
    """ASGI middleware: the bearer token on every request but OPEN_PATHS, and the size limit."""

    def __init__(self, app, token: str, max_request_bytes: int):
        self.app = app
        self.token = token.encode()
        self.max_request_bytes = max_request_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.token and scope["path"] not in OPEN_PATHS:
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, b"Bearer " + self.token):
                return await _answer(send, 401, "a valid bearer token is required",
                                     [(b"www-authenticate", b"Bearer")])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_request_bytes:
            return await _answer(send, 413, f"request body over {self.max_request_bytes} bytes")
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_request_bytes:  # a chunked body that says no length
                raise _TooLarge
            return message

        try:
            return await self.app(scope, counted, send)
        except _TooLarge:
            return await _answer(send, 413, f"request body over {self.max_request_bytes} bytes")


class _TooLarge(Exception):
    pass


async def _answer(send, status: int, error: str, extra: list | None = None) -> None:
    body = json.dumps({"error": error}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(extra or [])]})
    await send({"type": "http.response.body", "body": body})


#: gRPC methods answered without a token, as OPEN_PATHS for REST.
OPEN_METHODS = frozenset({"/inference.GRPCInferenceService/ServerLive",
                          "/inference.GRPCInferenceService/ServerReady"})


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """The bearer token in every gRPC call's `authorization` metadata, but OPEN_METHODS'."""

    def __init__(self, token: str):
        self.expected = f"Bearer {token}".encode()

        async def deny(request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    async def intercept_service(self, continuation, details):
        if details.method in OPEN_METHODS:
            return await continuation(details)
        given = dict(details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(str(given).encode(), self.expected):
            return await continuation(details)
        return self._deny


class VersionedServicer(InferenceServicer):
    """kserve's servicer drops `versions` from model metadata; the daemon needs them."""

    async def ModelMetadata(self, request, context):
        meta = await self._data_plane.model_metadata(model_name=request.name)
        return ModelMetadataResponse(name=meta["name"], versions=meta.get("versions", []),
                                        platform=meta["platform"], inputs=meta["inputs"],
                                        outputs=meta["outputs"])


class GuardedGRPCServer(GRPCServer):
    """kserve's gRPC server listens without TLS and takes fixed interceptors: this one adds the
    token check, TLS (with client certificates when asked) and the request size limit."""

    def __init__(self, dataplane: DataPlane, registry: ModelRepository, listen: Listen, port: int):
        super().__init__(port, dataplane, ModelRepositoryExtension(model_registry=registry),
                         kwargs={}, grace_period=5)
        self.listen = listen

    async def start(self, max_workers: int) -> None:
        interceptors = [LoggingInterceptor(), ExceptionToStatusInterceptor()]
        if self.listen.token:
            interceptors.insert(0, TokenInterceptor(self.listen.token))
        self._server = grpc.aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers), interceptors=interceptors,
            options=[("grpc.max_receive_message_length", self.listen.max_request_bytes),
                     ("grpc.max_send_message_length", 64 * 1024 * 1024)])
        add_GRPCInferenceServiceServicer_to_server(
            VersionedServicer(self._data_plane, self._model_repository_extension), self._server)
        address = f"{self.listen.host}:{self._port}"
        if self.listen.tls_cert:
            ca = Path(self.listen.tls_client_ca).read_bytes() if self.listen.tls_client_ca else None
            creds = grpc.ssl_server_credentials(
                [(Path(self.listen.tls_key).read_bytes(), Path(self.listen.tls_cert).read_bytes())],
                root_certificates=ca, require_client_auth=ca is not None)
            self._server.add_secure_port(address, creds)
        else:
            self._server.add_insecure_port(address)
        await self._server.start()
        await self._server.wait_for_termination()


class GuardedRESTServer(RESTServer):
    def __init__(self, dataplane: DataPlane, registry: ModelRepository, listen: Listen):
        super().__init__("kserve.model_server:app", dataplane,
                         ModelRepositoryExtension(model_registry=registry), listen.port,
                         grace_period=5)
        self.listen = listen
        self.config.host = listen.host
        if listen.tls_cert:
            self.config.ssl_certfile = listen.tls_cert
            self.config.ssl_keyfile = listen.tls_key
            if listen.tls_client_ca:
                self.config.ssl_ca_certs = listen.tls_client_ca
                self.config.ssl_cert_reqs = ssl.CERT_REQUIRED

    def _add_middlewares(self, app) -> None:
        super()._add_middlewares(app)
        app.add_middleware(Guard, token=self.listen.token,
                           max_request_bytes=self.listen.max_request_bytes)
