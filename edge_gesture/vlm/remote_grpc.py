"""The Open Inference Protocol's gRPC API, through Triton's client (`tritonclient[grpc]`, the extra
`edge-gesture[grpc]`): the same calls and errors as remote.InferenceClient, so the runtime does not
care which protocol carries its tensors. Tensors travel as raw bytes (raw_input_contents)."""

from __future__ import annotations

from urllib.parse import urlsplit

import numpy as np

from edge_gesture.vlm.remote import RemoteError, RemoteUnavailable, ServerAccess

_PASSING = {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED"}


def _read(path: str, setting: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise RemoteError(f"vlm.remote.{setting} {path}: {e.strerror}") from None


class GrpcInferenceClient:
    def __init__(self, access: ServerAccess):
        try:
            import tritonclient.grpc as tc
        except ImportError:
            raise RemoteError("vlm.remote.protocol = \"grpc\" needs Triton's gRPC client: pip "
                              "install 'edge-gesture[grpc]' (or use protocol = \"rest\")") from None
        self._tc = tc
        self.access = access
        parts = urlsplit(access.url)
        if parts.scheme not in ("http", "https") or not parts.hostname or not parts.port:
            raise RemoteError(f"vlm.remote.url {access.url!r}: give http://host:port or "
                              "https://host:port (the server's gRPC port)")
        tls = parts.scheme == "https"
        creds = None
        if tls:
            import grpc

            # Read here, so a missing file is named now rather than as a failed handshake.
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read(access.ca_file, "ca_file") if access.ca_file else None,
                private_key=_read(access.key_file, "key_file") if access.key_file else None,
                certificate_chain=_read(access.cert_file, "cert_file") if access.cert_file else None,
            )
        self._headers = {"authorization": f"Bearer {access.token}"} if access.token else None
        self._client = tc.InferenceServerClient(f"{parts.hostname}:{parts.port}", creds=creds)

    @property
    def where(self) -> str:
        return self.access.url

    def server_ready(self) -> bool:
        return bool(self._call("", self._client.is_server_ready, headers=self._headers))

    def model_metadata(self, model: str, version: str = "") -> dict:
        meta = self._call(model, self._client.get_model_metadata, model, version,
                          headers=self._headers, as_json=True)

        def tensors(kind: str) -> list[dict]:
            # JSON from protobuf writes int64 shapes as strings.
            return [{"name": t["name"], "datatype": t["datatype"],
                     "shape": [int(d) for d in t.get("shape", [])]} for t in meta.get(kind, [])]

        return {"name": meta.get("name"), "versions": meta.get("versions", []),
                "platform": meta.get("platform", ""), "inputs": tensors("inputs"),
                "outputs": tensors("outputs")}

    def infer(self, model: str, inputs: dict[str, np.ndarray], outputs: list[str],
              version: str = "") -> dict[str, np.ndarray]:
        tc = self._tc
        request = []
        for name, array in inputs.items():
            array = np.asarray(array)
            datatype = "BYTES" if array.dtype.kind in ("U", "S", "O") else \
                tc.np_to_triton_dtype(array.dtype)
            i = tc.InferInput(name, list(array.shape), datatype)
            i.set_data_from_numpy(array.astype(object) if datatype == "BYTES" else array)
            request.append(i)
        result = self._call(model, self._client.infer, model, request, model_version=version,
                            outputs=[tc.InferRequestedOutput(n) for n in outputs],
                            headers=self._headers)
        out = {}
        for n in outputs:
            value = result.as_numpy(n)
            if value is None:
                raise RemoteError(f"{self.where}: model {model!r} answered without {n!r}")
            if value.dtype == object:
                value = np.vectorize(lambda b: b.decode() if isinstance(b, bytes) else b,
                                     otypes=[object])(value)
            out[n] = value
        return out

    def close(self) -> None:
        self._client.close()

    def _call(self, model: str, fn, *args, **kwargs):
        from tritonclient.utils import InferenceServerException

        try:
            return fn(*args, client_timeout=self.access.timeout_s, **kwargs)
        except InferenceServerException as e:
            raise self._refusal(str(e.status()), e.message() or "", model) from None

    def _refusal(self, status: str, detail: str, model: str) -> RemoteError:
        detail = " ".join(detail.split())[:300]
        if status in _PASSING:
            if "ssl" in detail.lower() or "handshake" in detail.lower():
                return RemoteError(f"{self.where}: TLS handshake failed ({detail}); check "
                                   "https://, vlm.remote.ca_file, cert_file and key_file")
            return RemoteUnavailable(f"{self.where}: cannot reach the server over gRPC ({detail})")
        if status in ("StatusCode.UNAUTHENTICATED", "StatusCode.PERMISSION_DENIED"):
            src = f" from {self.access.token_source}" if self.access.token_source else ""
            what = "the token" + src if self.access.token else "a request without a token"
            return RemoteError(f"{self.where}: the server refused {what} ({status}: {detail})")
        if status == "StatusCode.NOT_FOUND":
            return RemoteError(f"{self.where}: no model {model!r} on this server ({detail})")
        if status == "StatusCode.RESOURCE_EXHAUSTED":
            return RemoteError(f"{self.where}: the request was too large for the server "
                               f"({detail})")
        return RemoteError(f"{self.where}: model {model!r} answered {status}: {detail}")
