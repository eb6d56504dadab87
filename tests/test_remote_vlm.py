"""`[vlm.remote]`: decisions made with a real `edge-gesture serve` (KServe's model server, its own
venv) on a free port, over the Open Inference Protocol's REST API with binary tensors.

What a user would notice: the remote answer is the local one; a wrong token, a wrong CA, another
bundle's encoder, a wrong URL and an oversized request are refused saying what to fix; a server
that dies mid-run leaves the daemon on landmarks, logged once, and is used again when it is back.
"""

from __future__ import annotations

import glob
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from structlog.testing import capture_logs

from edge_gesture.config import parse_config
from edge_gesture.vlm.remote import InferenceClient, RemoteError, RemoteUnavailable, ServerAccess
from edge_gesture.vlm.remote_runtime import (
    RemoteDecisionRuntime,
    make_client,
    served_bundle,
    server_access,
)
from edge_gesture.vlm.serving import manifest_sha256
from edge_gesture.vlm.worker import VlmWorker, load_runtime
from tests.mosquitto import free_port
from tests.serve_process import ServeProcess
from tests.test_vlm_worker import frame, hand, wait_for
from tests.tls_certs import OPENSSL, issue, make_ca

pytestmark = pytest.mark.export

TOKEN = "s3rve-t0ken-for-the-tests-0123456789"


@pytest.fixture(scope="module")
def crops(gesture_data) -> list[np.ndarray]:
    out = []
    for label in ("fist", "open_palm", "thumbs_up"):
        photo = sorted(glob.glob(str(gesture_data / label / "*.jpg")))[0]
        out.append(cv2.cvtColor(cv2.imread(photo), cv2.COLOR_BGR2RGB))
    return out


@pytest.fixture(scope="module")
def token_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("cred") / "serve-token"
    p.write_text(TOKEN + "\n")
    return p


@pytest.fixture(scope="module")
def server(tiny_ov_bundle, tmp_path_factory, token_file):
    with ServeProcess(tiny_ov_bundle, tmp_path_factory.mktemp("serve"),
                      "--token-file", str(token_file)) as s:
        yield s


def _config(tmp_path, bundle, **remote):
    vlm = {"enabled": True, "remote": remote}
    if bundle is not None:
        vlm["bundle"] = str(bundle)
    return parse_config({"vlm": vlm, "service": {"cache_dir": str(tmp_path / "cache")}})


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
@pytest.mark.parametrize("split", ["vision", "all"])
def test_the_remote_answer_is_the_local_one(split, protocol, server, tiny_ov_bundle, token_file,
                                             crops, tmp_path):
    local = load_runtime(_config(tmp_path, tiny_ov_bundle))
    remote = load_runtime(_config(tmp_path, tiny_ov_bundle if split == "vision" else None,
                                  url=server.url_for(protocol), protocol=protocol,
                                  token_file=str(token_file), split=split))
    try:
        if split == "all":
            assert isinstance(remote, RemoteDecisionRuntime)
        else:  # the bundle's own encoder was not even loaded here
            assert remote.backend._vis is None and remote.remote_vision is not None
        for crop in crops:
            a, _ = local.classify(crop)
            b, _ = remote.classify(crop)
            assert b.label == a.label
            assert b.probability == pytest.approx(a.probability, abs=1e-3)
    finally:
        local.close()
        remote.close()


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_a_wrong_or_missing_token_is_refused_naming_the_token_file(protocol, server,
                                                                   tiny_ov_bundle, tmp_path):
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token-at-all-000\n")
    url = server.url_for(protocol)
    with pytest.raises(RemoteError) as err:
        load_runtime(_config(tmp_path, tiny_ov_bundle, url=url, protocol=protocol,
                             token_file=str(wrong)))
    assert "refused the token from" in str(err.value) and str(wrong) in str(err.value)
    assert ("HTTP 401" if protocol == "rest" else "UNAUTHENTICATED") in str(err.value)
    with pytest.raises(RemoteError, match="refused a request without a token"):
        load_runtime(_config(tmp_path, tiny_ov_bundle, url=url, protocol=protocol))
    # Health answers without one: load balancers and Kubernetes probes carry no token.
    assert InferenceClient(ServerAccess(server.url)).server_ready()


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_another_bundles_encoder_is_refused_with_both_versions_named(
        protocol, server, tiny_ov_bundle, tiny_onnx_bundle, token_file, tmp_path):
    # Same architecture and shapes, another bundle: its features would be another model's.
    with pytest.raises(RemoteError) as err:
        load_runtime(_config(tmp_path, tiny_onnx_bundle, url=server.url_for(protocol),
                             protocol=protocol, token_file=str(token_file)))
    msg = str(err.value)
    assert manifest_sha256(tiny_ov_bundle)[:12] in msg
    assert manifest_sha256(tiny_onnx_bundle)[:12] in msg


def test_a_server_model_of_other_shapes_is_refused(server, tiny_ov_bundle, token_file,
                                                    tmp_path):
    # The whole-decision model is not an encoder: asked for as one, it is refused by its tensors.
    with pytest.raises(RemoteError, match="has no input 'pixels'"):
        load_runtime(_config(tmp_path, tiny_ov_bundle, url=server.url, token_file=str(token_file),
                             model="edge-gesture-decision"))
    with pytest.raises(RemoteError, match="no model 'nothing-here'"):
        load_runtime(_config(tmp_path, tiny_ov_bundle, url=server.url, token_file=str(token_file),
                             model="nothing-here"))


def test_a_wrong_url_names_the_url(tiny_ov_bundle, tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RemoteUnavailable) as err:
        load_runtime(_config(tmp_path, tiny_ov_bundle, url=url))
    assert url in str(err.value) and "cannot reach the server" in str(err.value)


def test_the_whole_decision_refuses_other_gestures_and_oversized_requests(
        server, token_file, tmp_path, crops):
    cfg = parse_config({"vlm": {"enabled": True, "remote": {
        "url": server.url, "token_file": str(token_file), "split": "all"}},
        "gestures": {"enabled": ["fist", "open_palm"]}})
    with pytest.raises(RemoteError) as err:
        load_runtime(cfg)
    assert "this server answers for gestures" in str(err.value)
    assert "['fist', 'open_palm']" in str(err.value)

    client = InferenceClient(server_access(_config(tmp_path, None, url=server.url,
                                                   token_file=str(token_file),
                                                   split="all").vlm.remote))
    huge = np.zeros((1, 4000, 4000, 3), np.uint8)  # 48 MB, over the server's 16 MB
    with pytest.raises(RemoteError, match="too large"):
        client.infer("edge-gesture-decision", {"crop": huge,
                                               "gestures": np.asarray(["fist"], dtype=object)},
                     ["label"])
    client.close()
    grpc_client = make_client(_config(tmp_path, None, url=server.grpc_url, protocol="grpc",
                                      token_file=str(token_file), split="all").vlm.remote)
    with pytest.raises(RemoteError, match="too large"):
        grpc_client.infer("edge-gesture-decision",
                          {"crop": huge, "gestures": np.asarray(["fist"], dtype=object)},
                          ["label"])
    grpc_client.close()


@pytest.mark.skipif(OPENSSL is None, reason="needs the openssl command line tool")
@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_tls_server_is_used_with_its_ca_and_refused_without(protocol, tiny_ov_bundle, tmp_path,
                                                            crops):
    ca = make_ca(tmp_path / "ca", "edge-gesture test CA")
    cert, key = issue(ca, tmp_path / "server", "vlm-server", dns=("localhost",),
                      ips=("127.0.0.1",))
    with ServeProcess(tiny_ov_bundle, tmp_path, "--tls-cert", str(cert), "--tls-key",
                      str(key)) as s:
        assert s.url.startswith("https://")
        url = s.url_for(protocol)
        rt = load_runtime(_config(tmp_path, tiny_ov_bundle, url=url, protocol=protocol,
                                  ca_file=str(ca.cert)))
        try:
            assert rt.classify(crops[0])[0].label in rt.labels
        finally:
            rt.close()
        with pytest.raises(RemoteError, match="certificate was not accepted|TLS handshake"):
            load_runtime(_config(tmp_path, tiny_ov_bundle, url=url, protocol=protocol))


def test_a_server_that_dies_mid_run_is_survived_logged_once_and_used_again(
        tiny_ov_bundle, tmp_path, crops):
    serve = ServeProcess(tiny_ov_bundle, tmp_path).start()
    cfg = parse_config({
        "vlm": {"enabled": True, "bundle": str(tiny_ov_bundle), "max_rate_hz": 20,
                "backoff_initial_s": 0.3, "backoff_max_s": 0.6,
                "remote": {"url": serve.url, "timeout_s": 1.0}},
        "service": {"cache_dir": str(tmp_path / "cache")}})
    worker = VlmWorker(cfg)
    try:
        assert worker.start(wait_s=120)
        n = [0]

        def offer():
            n[0] += 1
            # A hand that moves a little every frame, so each offer is a new decision.
            worker.submit(frame(n[0] * 0.05), [hand(shift=(n[0] % 10) * 0.02)])

        assert wait_for(lambda: (offer(), worker.counts["decisions"] >= 2)[1], 30)
        with capture_logs() as logs:
            serve.kill()
            assert wait_for(lambda: (offer(), worker.state == "failed")[1], 30)
            assert not worker.available and worker.latest(1) is None  # landmarks only now
            time.sleep(2.0)  # several probes fail meanwhile, at the backoff's pace
            errors = [e for e in logs if e["log_level"] == "error"]
            assert len(errors) == 1, errors  # once, not once per frame or per probe
            assert "cannot reach the server" in errors[0]["error"]
            before = worker.counts["decisions"]
            serve = ServeProcess(tiny_ov_bundle, tmp_path, port=serve.port,
                                 grpc_port=serve.grpc_port).start()
            assert wait_for(lambda: (offer(), worker.state == "ok")[1], 60)
            assert wait_for(lambda: (offer(), worker.counts["decisions"] > before)[1], 30)
        assert any(e["event"] == "vlm server back" for e in logs)
        assert worker.latest(1) is not None
    finally:
        worker.stop()
        serve.stop()


def test_serve_refuses_an_open_port_without_a_token_and_says_where_it_lives(tiny_ov_bundle):
    import subprocess
    import sys

    from tests.serve_process import SERVE_BIN

    r = subprocess.run([str(SERVE_BIN), "serve", "--bundle", str(tiny_ov_bundle), "--host",
                        "0.0.0.0"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "--host 0.0.0.0 is reachable from other machines: give --token-file" in r.stderr
    # The daemon's own venv has no kserve: the command says how to get the server.
    r = subprocess.run([sys.executable, "-m", "edge_gesture", "serve", "--bundle",
                        str(tiny_ov_bundle)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "script/setup --serve" in r.stderr


def test_the_server_has_kserves_health_readiness_and_metrics(server, tiny_ov_bundle, token_file,
                                                             tmp_path, crops):
    import urllib.error
    import urllib.request

    rt = load_runtime(_config(tmp_path, tiny_ov_bundle, url=server.url,
                              token_file=str(token_file)))
    rt.classify(crops[0])
    rt.close()
    for path in ("/v2/health/live", "/v2/health/ready"):  # probes carry no token
        with urllib.request.urlopen(server.url + path, timeout=5) as r:
            assert r.status == 200
    with pytest.raises(urllib.error.HTTPError) as err:  # the rest of the API asks for it
        urllib.request.urlopen(server.url + "/metrics", timeout=5)
    assert err.value.code == 401
    ask = urllib.request.Request(server.url + "/metrics",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(ask, timeout=5) as r:
        metrics = r.read().decode()
    assert 'request_predict_seconds_count{model_name="edge-gesture-vision"}' in metrics
    ready = urllib.request.Request(server.url + "/v2/models/edge-gesture-decision/ready",
                                   headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(ready, timeout=5) as r:
        assert json.loads(r.read()) == {"name": "edge-gesture-decision", "ready": True}


def test_the_bundle_a_served_model_came_from_is_read_from_either_servers_metadata():
    sha = "ab" * 32
    # edge-gesture serve: the manifest's sha256 as the model's version.
    assert served_bundle({"versions": [sha]}) == sha
    # An OVMS repository: the IR's rt_info, as `serving-repository` writes it.
    assert served_bundle({"versions": ["1"], "rt_info": {"edge_gesture": {
        "manifest_sha256": sha}}}) == sha
    # A server that does not say (OVMS versions are numbers): only shapes can be checked.
    assert served_bundle({"versions": ["1", "2"]}) is None
    assert served_bundle({}) is None
