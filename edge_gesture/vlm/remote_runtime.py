"""Decisions made partly or wholly on an inference server (`[vlm.remote]`).

split = "vision": the server runs the bundle's vision encoder (`edge-gesture serve`, or OpenVINO
Model Server on a repository from `edge-gesture serving-repository`); this machine resizes the
crop, sends uint8 pixels, and runs the language model on the features that come back. The server's
encoder must come from this machine's bundle: features from another model would be read as
garbage. Its model metadata says which bundle (the manifest's sha256, as the model's version or in
OVMS's rt_info) and a different one is refused with both named.

split = "all": the server makes the whole decision (crop and enabled gestures in, label and
probability out); this machine needs no bundle.
"""

from __future__ import annotations

import re
import time

import numpy as np
import structlog

from edge_gesture.bundle import BundleManifest
from edge_gesture.config import VlmRemoteConfig
from edge_gesture.vlm.decode import Decoded
from edge_gesture.vlm.prompt import NONE_LABEL
from edge_gesture.vlm.remote import InferenceClient, RemoteError, ServerAccess
from edge_gesture.vlm.serving import PIXELS_INPUT, RT_INFO_KEY

log = structlog.get_logger("vlm")

FEATURES_OUTPUT = "image_features"
#: The whole-decision model's tensors.
CROP_INPUT, GESTURES_INPUT = "crop", "gestures"
LABEL_OUTPUT, PROBABILITY_OUTPUT = "label", "probability"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def server_access(remote: VlmRemoteConfig) -> ServerAccess:
    """The connection settings, with the token read from its file (a bare name from systemd's
    credentials directory); a file that cannot be read is an error naming the setting."""
    from edge_gesture.errors import StartupError
    from edge_gesture.publish.security import credential_path, read_token

    token, source = "", ""
    try:
        if remote.token_file:
            path, token = read_token(remote.token_file, "vlm.remote.token_file")
            if not token:
                raise RemoteError(f"vlm.remote.token_file: {path} is empty")
            source = str(path)
        key = str(credential_path(remote.key_file, "vlm.remote.key_file")) if remote.key_file else ""
    except StartupError as e:
        raise RemoteError(str(e)) from None
    return ServerAccess(url=remote.url, timeout_s=remote.timeout_s, ca_file=remote.ca_file,
                        cert_file=remote.cert_file, key_file=key, token=token,
                        token_source=source)


def make_client(remote: VlmRemoteConfig):
    """A client of the configured protocol; both have the same calls and errors."""
    access = server_access(remote)
    if remote.protocol == "grpc":
        from edge_gesture.vlm.remote_grpc import GrpcInferenceClient

        return GrpcInferenceClient(access)
    return InferenceClient(access)


def served_bundle(metadata: dict) -> str | None:
    """The manifest sha256 a served model says it came from: OVMS's rt_info (the repository's
    IR carries it) or a version named by it (`edge-gesture serve`); None if it does not say."""
    rt_info = metadata.get("rt_info")
    if isinstance(rt_info, dict):
        ours = rt_info.get(RT_INFO_KEY)
        if isinstance(ours, dict) and _SHA256.match(str(ours.get("manifest_sha256", ""))):
            return str(ours["manifest_sha256"])
    for v in metadata.get("versions") or []:
        if _SHA256.match(str(v)):
            return str(v)
    return None


def _tensor(metadata: dict, kind: str, name: str, where: str) -> dict:
    for t in metadata.get(kind) or []:
        if t.get("name") == name:
            return t
    have = [t.get("name") for t in metadata.get(kind) or []]
    raise RemoteError(f"{where}: the served model has no {kind[:-1]} {name!r} (it has {have}): "
                      "not an edge-gesture model")


def _shape_fits(served: list, wanted: list[int]) -> bool:
    return len(served) == len(wanted) and all(int(s) in (-1, w) for s, w in zip(served, wanted, strict=True))


class RemoteVision:
    """The vision encoder on a server: uint8 pixels [S, S, 3] in, features [tokens, hidden] out."""

    def __init__(self, client, remote: VlmRemoteConfig, bundle_sha256: str,
                 manifest: BundleManifest, image_tokens: int):
        self.client = client
        self.model = remote.model_name()
        self.version = remote.model_version
        self.bundle_sha256 = bundle_sha256
        self.size = manifest.image.size
        self.image_tokens = image_tokens
        self.hidden = manifest.language.hidden_size
        self.where = f"{client.where} model {self.model!r}"
        self._said_unknown = False
        self.check()

    def check(self) -> None:
        """The server is there and serves this bundle's encoder with the shapes we send and read;
        raises RemoteError saying what differs."""
        meta = self.client.model_metadata(self.model, self.version)
        pixels = _tensor(meta, "inputs", PIXELS_INPUT, self.where)
        want = [1, self.size, self.size, 3]
        if pixels.get("datatype") != "UINT8" or not _shape_fits(pixels.get("shape", []), want):
            raise RemoteError(f"{self.where}: takes {pixels.get('datatype')} "
                              f"{pixels.get('shape')}, this bundle sends UINT8 {want}: the "
                              "server's model is for another image size")
        feats = _tensor(meta, "outputs", FEATURES_OUTPUT, self.where)
        want_out = [1, self.image_tokens, self.hidden]
        if not _shape_fits(feats.get("shape", []), want_out):
            raise RemoteError(f"{self.where}: gives features {feats.get('shape')}, this bundle's "
                              f"language model takes {want_out}")
        served = served_bundle(meta)
        if served is None and not self._said_unknown:
            # OVMS builds that do not pass rt_info on: the shapes are all that can be checked.
            self._said_unknown = True  # once, not at every probe after an outage
            log.warning("vlm server does not say which bundle its encoder came from; only its "
                        "shapes were checked", server=self.where)
        elif served is not None and served != self.bundle_sha256:
            raise RemoteError(f"{self.where}: serves the encoder of bundle {served[:12]}, this "
                              f"machine's bundle is {self.bundle_sha256[:12]}: serve this "
                              "bundle, or copy the server's bundle here")

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        out = self.client.infer(self.model, {PIXELS_INPUT: pixels[None]}, [FEATURES_OUTPUT],
                                self.version)
        feats = out.get(FEATURES_OUTPUT)
        if feats is None or feats.size != self.image_tokens * self.hidden:
            raise RemoteError(f"{self.where}: answered features of shape "
                              f"{None if feats is None else feats.shape}, not "
                              f"[1, {self.image_tokens}, {self.hidden}]")
        return feats.reshape(self.image_tokens, self.hidden).astype(np.float32, copy=False)


class RemoteDecisionRuntime:
    """The whole decision on a server (split = "all"): what the worker uses in place of a
    VlmRuntime."""

    def __init__(self, remote: VlmRemoteConfig, gestures: list[tuple[str, str]]):
        self.client = make_client(remote)
        self.model = remote.model_name()
        self.version = remote.model_version
        self.labels = tuple(name for name, _ in gestures) + (NONE_LABEL,)
        self._gestures = np.asarray([name for name, _ in gestures], dtype=object)
        self.where = f"{self.client.where} model {self.model!r}"
        self.devices = {"decision": remote.url}
        try:
            self.probe()
        except Exception:
            self.client.close()
            raise

    def probe(self) -> None:
        """Raises unless the server has the model, with our tensors, answering for our
        gestures (a server restarted with another config would refuse every decision)."""
        meta = self.client.model_metadata(self.model, self.version)
        _tensor(meta, "inputs", CROP_INPUT, self.where)
        _tensor(meta, "inputs", GESTURES_INPUT, self.where)
        _tensor(meta, "outputs", LABEL_OUTPUT, self.where)
        _tensor(meta, "outputs", PROBABILITY_OUTPUT, self.where)
        self.warm_up()

    def classify(self, rgb: np.ndarray):
        from edge_gesture.vlm.runtime import Timings

        t0 = time.perf_counter()
        out = self.client.infer(
            self.model, {CROP_INPUT: np.ascontiguousarray(rgb, dtype=np.uint8)[None],
                         GESTURES_INPUT: self._gestures},
            [LABEL_OUTPUT, PROBABILITY_OUTPUT], self.version)
        try:
            label = str(out[LABEL_OUTPUT].reshape(-1)[0])
            probability = float(out[PROBABILITY_OUTPUT].reshape(-1)[0])
        except (KeyError, IndexError, ValueError):
            raise RemoteError(f"{self.where}: the answer lacks a label and a probability") from None
        if label not in self.labels:
            raise RemoteError(f"{self.where}: answered {label!r}, not one of {list(self.labels)}")
        # One round trip; the server's split of it into parts is not ours to see.
        return Decoded(label, probability, (), 0), Timings(0.0, time.perf_counter() - t0, 0.0)

    def warm_up(self):
        return self.classify(np.full((64, 64, 3), 128, np.uint8))[1]

    def close(self) -> None:
        self.client.close()
