"""A client of the Open Inference Protocol (KServe v2) over REST, with its binary-data extension.

OpenVINO Model Server, Triton and KServe's model servers all speak it. Tensors travel as raw bytes
after a JSON header (`Inference-Header-Content-Length` says where the JSON ends): a 512x512 crop is
786 KB as bytes and several MB as a JSON list, which servers also parse far slower.

One keep-alive connection, used by one thread at a time (the VLM worker's). Every failure is a
`RemoteError` whose message names what to fix: the URL, the certificate, the token file, the model.
`RemoteUnavailable` is the kind that passes (server down, restarting, slow): the worker keeps its
runtime and tries again after a backoff, instead of reloading everything.
"""

from __future__ import annotations

import http.client
import json
import ssl
import struct
import threading
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import numpy as np

from edge_gesture.vlm.backend import BackendError

_DTYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}
HEADER_LENGTH = "Inference-Header-Content-Length"


class RemoteError(BackendError):
    """The server refused the request, or what it serves is not what this daemon needs."""


class RemoteUnavailable(RemoteError):
    """The server could not be reached or did not answer in time: it may come back."""


@dataclass(frozen=True)
class ServerAccess:
    """Where the server is and how to prove who we are to it."""

    url: str  # http://host:port or https://host:port
    timeout_s: float = 2.0
    ca_file: str = ""  # PEM CA bundle for an https server; empty: the system's CAs
    cert_file: str = ""  # client certificate (PEM) for servers that ask for one
    key_file: str = ""
    token: str = ""  # sent as `Authorization: Bearer <token>`
    token_source: str = ""  # where the token came from, for messages


def tensor_bytes(array: np.ndarray) -> tuple[str, bytes]:
    """The protocol's datatype name and the raw little-endian bytes of an array; BYTES tensors
    (strings) are each 4-byte length then the UTF-8 text."""
    if array.dtype.kind in ("U", "S", "O"):
        parts = []
        for item in array.reshape(-1):
            raw = item.encode("utf-8") if isinstance(item, str) else bytes(item)
            parts.append(struct.pack("<I", len(raw)) + raw)
        return "BYTES", b"".join(parts)
    dtype = np.dtype(array.dtype).newbyteorder("<")
    if np.dtype(array.dtype) not in _NAMES:
        raise TypeError(f"no protocol datatype for {array.dtype}")
    return _NAMES[np.dtype(array.dtype)], np.ascontiguousarray(array, dtype=dtype).tobytes()


def tensor_from_bytes(datatype: str, shape: list[int], raw: bytes) -> np.ndarray:
    if datatype == "BYTES":
        items, at = [], 0
        while at < len(raw):
            (n,) = struct.unpack_from("<I", raw, at)
            items.append(raw[at + 4 : at + 4 + n].decode("utf-8"))
            at += 4 + n
        return np.asarray(items, dtype=object).reshape(shape)
    if datatype not in _DTYPES:
        raise RemoteError(f"the server answered a tensor of datatype {datatype}, unknown here")
    dtype = np.dtype(_DTYPES[datatype]).newbyteorder("<")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


class InferenceClient:
    """Health, model metadata and inference against one server."""

    def __init__(self, access: ServerAccess):
        self.access = access
        parts = urlsplit(access.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RemoteError(f"vlm.remote.url {access.url!r}: give http://host:port or "
                              "https://host:port")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._context = _tls_context(access) if self._https else None
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        return self.access.url

    # ---- the protocol's calls ----
    def server_ready(self) -> bool:
        status, _, _ = self._request("GET", "/v2/health/ready")
        return status == 200

    def model_metadata(self, model: str, version: str = "") -> dict:
        status, headers, body = self._request("GET", _model_path(model, version))
        if status != 200:
            raise self._refusal(status, body, model)
        return _json(body, f"{self.where}: model {model!r} metadata")

    def infer(self, model: str, inputs: dict[str, np.ndarray], outputs: list[str],
              version: str = "") -> dict[str, np.ndarray]:
        header_inputs, blobs = [], []
        for name, array in inputs.items():
            datatype, raw = tensor_bytes(np.asarray(array))
            header_inputs.append({"name": name, "shape": list(np.shape(array)),
                                  "datatype": datatype,
                                  "parameters": {"binary_data_size": len(raw)}})
            blobs.append(raw)
        header = json.dumps({
            "inputs": header_inputs,
            "outputs": [{"name": n, "parameters": {"binary_data": True}} for n in outputs],
        }).encode()
        body = header + b"".join(blobs)
        status, headers, answer = self._request(
            "POST", _model_path(model, version) + "/infer", body,
            {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))},
        )
        if status != 200:
            raise self._refusal(status, answer, model)
        return _decode_response(answer, headers.get(HEADER_LENGTH.lower()), self.where)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # ---- transport ----
    def _request(self, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        hdrs = dict(headers or {})
        if self.access.token:
            hdrs["Authorization"] = f"Bearer {self.access.token}"
        with self._lock:
            # A kept-alive connection the server closed fails on first use: one fresh retry.
            for attempt in (0, 1):
                fresh = self._conn is None
                conn = self._conn or self._connect()
                try:
                    try:
                        conn.request(method, self._prefix + path, body=body, headers=hdrs)
                    except (BrokenPipeError, ConnectionResetError):
                        # A server refusing a body (413) may answer and close before it is all
                        # sent; its answer is still there to read. If not, this raises again.
                        pass
                    resp = conn.getresponse()
                    data = resp.read()
                except ssl.SSLCertVerificationError as e:
                    self._drop()
                    raise RemoteError(
                        f"{self.where}: the server's certificate was not accepted "
                        f"({e.verify_message}); vlm.remote.ca_file must hold the CA that signed it"
                    ) from None
                except ssl.SSLError as e:
                    self._drop()
                    raise RemoteError(f"{self.where}: TLS handshake failed ({e.reason or e}); "
                                      "check https://, vlm.remote.ca_file, cert_file and "
                                      "key_file") from None
                except TimeoutError:
                    self._drop()
                    raise RemoteUnavailable(f"{self.where}: no answer within "
                                            f"{self.access.timeout_s} s") from None
                except (ConnectionError, http.client.HTTPException, OSError) as e:
                    self._drop()
                    if not fresh and attempt == 0:
                        continue
                    reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
                    raise RemoteUnavailable(f"{self.where}: cannot reach the server "
                                            f"({reason})") from None
                if resp.getheader("Connection", "").lower() == "close":
                    self._drop()
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        raise AssertionError("unreachable")

    def _connect(self) -> http.client.HTTPConnection:
        if self._https:
            conn = http.client.HTTPSConnection(self._host, self._port,
                                               timeout=self.access.timeout_s,
                                               context=self._context)
        else:
            conn = http.client.HTTPConnection(self._host, self._port,
                                              timeout=self.access.timeout_s)
        self._conn = conn
        return conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _refusal(self, status: int, body: bytes, model: str) -> RemoteError:
        detail = _error_text(body)
        if status in (401, 403):
            src = f" from {self.access.token_source}" if self.access.token_source else ""
            what = "the token" + src if self.access.token else "a request without a token"
            return RemoteError(f"{self.where}: the server refused {what} (HTTP {status}"
                               f"{': ' + detail if detail else ''})")
        if status == 404:
            return RemoteError(f"{self.where}: no model {model!r} on this server"
                               f"{' (' + detail + ')' if detail else ''}")
        if status == 413:
            return RemoteError(f"{self.where}: the request was too large for the server "
                               f"(HTTP 413{': ' + detail if detail else ''})")
        if status == 501 and "versioning" in detail.lower():
            return RemoteError(f"{self.where}: the server does not serve model versions by "
                               "path (kserve's model server); leave vlm.remote.model_version "
                               "empty")
        if status in (502, 503, 504):
            return RemoteUnavailable(f"{self.where}: model {model!r} not ready (HTTP {status}"
                                     f"{': ' + detail if detail else ''})")
        return RemoteError(f"{self.where}: model {model!r} answered HTTP {status}"
                           f"{': ' + detail if detail else ''}")


def _tls_context(access: ServerAccess) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(cafile=access.ca_file or None)
    except (OSError, ssl.SSLError) as e:
        raise RemoteError(f"vlm.remote.ca_file {access.ca_file}: not a readable PEM CA file "
                          f"({getattr(e, 'strerror', None) or e})") from None
    if access.cert_file:
        try:
            ctx.load_cert_chain(access.cert_file, access.key_file or None)
        except (OSError, ssl.SSLError) as e:
            raise RemoteError(f"vlm.remote.cert_file {access.cert_file} / key_file "
                              f"{access.key_file}: not a usable certificate and key "
                              f"({getattr(e, 'strerror', None) or e})") from None
    return ctx


def _model_path(model: str, version: str) -> str:
    path = f"/v2/models/{quote(model, safe='')}"
    return path + (f"/versions/{quote(version, safe='')}" if version else "")


def _json(body: bytes, what: str) -> dict:
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RemoteError(f"{what}: the server did not answer JSON") from None
    if not isinstance(value, dict):
        raise RemoteError(f"{what}: the server answered {type(value).__name__}, not an object")
    return value


def _error_text(body: bytes) -> str:
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return body[:200].decode("utf-8", "replace").strip()
    if isinstance(value, dict):
        return str(value.get("error") or value.get("detail") or value)[:300]
    return str(value)[:300]


def _decode_response(body: bytes, header_length: str | None, where: str) -> dict[str, np.ndarray]:
    n = int(header_length) if header_length else len(body)
    header = _json(body[:n], f"{where}: inference answer")
    out, at = {}, n
    for o in header.get("outputs", []):
        shape = [int(d) for d in o["shape"]]
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            out[o["name"]] = tensor_from_bytes(o["datatype"], shape, body[at : at + size])
            at += size
        else:  # the server chose JSON for this one
            data = o.get("data", [])
            if o["datatype"] == "BYTES":
                out[o["name"]] = np.asarray(data, dtype=object).reshape(shape)
            else:
                out[o["name"]] = np.asarray(data, dtype=_DTYPES[o["datatype"]]).reshape(shape)
    return out

