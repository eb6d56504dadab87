"""Password authentication with an ACL, TLS with a CA made here, and clear messages on bad input."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time

import pytest
from structlog.testing import capture_logs

from edge_gesture.config import ConfigError, parse_config
from edge_gesture.decide import GestureEvent
from edge_gesture.errors import StartupError
from edge_gesture.publish import Publisher
from tests.mosquitto import Mosquitto, write_password_file
from tests.mqtt_recorder import Recorder, wait_until
from tests.tls_certs import OPENSSL, issue, make_ca

ROOT = "edge_gesture/porch"
PASSWORD = "s3cret-Pa55"


def make_cfg(port: int, **mqtt):
    base = {"host": "127.0.0.1", "port": port, "reconnect_min_s": 0.1, "reconnect_max_s": 0.3}
    return parse_config({"device_id": "porch", "mqtt": base | mqtt})


def event(gesture="thumbs_up", hand="right"):
    return GestureEvent(gesture, 0.9, "landmarks", hand, time.monotonic(), time.time())


def warnings_of(logs, name="mqtt connect failed"):
    return [e for e in logs if e["event"] == name and e["log_level"] == "warning"]


# ----------------------------------------------------------------------------- passwords


@pytest.fixture
def auth_broker(tmp_path):
    pw = write_password_file(tmp_path / "passwd", {"gesture": PASSWORD, "watcher": "w4tch"})
    acl = tmp_path / "acl"
    acl.write_text(
        "user gesture\n"
        f"topic write {ROOT}/#\n"
        "topic readwrite homeassistant/#\n"
        "topic write home/allowed/#\n"
        "\n"
        "user watcher\n"
        "topic read #\n"
    )
    b = Mosquitto(tmp_path / "b", allow_anonymous=False,
                  extra_conf=f"password_file {pw}\nacl_file {acl}\n").start()
    yield b
    b.stop()


def test_password_auth_with_acl(auth_broker):
    rec = Recorder(auth_broker.port, ["#"], username="watcher", password="w4tch")
    cfg = make_cfg(auth_broker.port, username="gesture", password=PASSWORD, actions=[
        {"gesture": "thumbs_up", "topic": "home/allowed/light", "payload": "ON"},
        {"gesture": "thumbs_up", "topic": "home/forbidden/door", "payload": "OPEN"},
    ])
    with capture_logs() as logs:
        pub = Publisher(cfg).start()
        try:
            wait_until(lambda: pub.connected, what="authenticated connection")
            pub.publish_event(event())
            rec.wait_count("/event", 1)
            rec.wait_count("home/allowed/light", 1)
            # MQTT 5: the broker answers the forbidden publish with "Not authorized".
            wait_until(lambda: pub.rejected == 1, what="the ACL refusal reported back")
        finally:
            pub.stop()
            rec.close()
    assert not rec.on("home/forbidden/door"), "the ACL let a forbidden action through"
    refused = warnings_of(logs, "mqtt broker refused a message")
    assert len(refused) == 1 and refused[0]["topic"] == "home/forbidden/door"
    assert "Not authorized" in refused[0]["reason"]
    assert PASSWORD not in repr(logs)


def test_wrong_password_is_named_logged_once_and_retried(auth_broker):
    cfg = make_cfg(auth_broker.port, username="gesture", password="wrong-" + PASSWORD)
    with capture_logs() as logs:
        pub = Publisher(cfg).start()
        try:
            time.sleep(2.0)
            assert not pub.connected
        finally:
            pub.stop()
    failures = warnings_of(logs)
    assert len(failures) == 1, failures
    assert "the broker refused mqtt.username / password" in failures[0]["reason"]
    attempts = auth_broker.log.read_text().count("New connection from")
    assert attempts >= 3, "the publisher gave up instead of retrying"
    assert PASSWORD not in repr(logs)


def test_password_from_credentials_directory_and_environment(auth_broker, tmp_path,
                                                             monkeypatch):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt_password").write_text(PASSWORD + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    for mqtt in ({"password_file": "mqtt_password"},
                 {"password_env": "MY_MQTT_PASSWORD"}):
        monkeypatch.setenv("MY_MQTT_PASSWORD", PASSWORD)
        pub = Publisher(make_cfg(auth_broker.port, username="gesture", **mqtt)).start()
        try:
            wait_until(lambda p=pub: p.connected, what=f"connection with {mqtt}")
        finally:
            pub.stop()


def test_unusable_password_file_stops_start_naming_the_setting(tmp_path, monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(StartupError, match=r"mqtt\.password_file: no such file .*nope"):
        Publisher(make_cfg(1883, username="u", password_file=str(tmp_path / "nope")))
    with pytest.raises(StartupError, match=r"mqtt\.password_file .*CREDENTIALS_DIRECTORY"):
        Publisher(make_cfg(1883, username="u", password_file="mqtt_password"))


def test_password_never_printed_by_check_config(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(f'[mqtt]\nusername = "gesture"\npassword = "{PASSWORD}"\n')
    out = subprocess.run([sys.executable, "-m", "edge_gesture", "check-config", "--show",
                          str(good)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert PASSWORD not in out.stdout + out.stderr
    shown = json.loads(out.stdout.split("\n", 1)[1])
    assert shown["mqtt"]["username"] == "gesture" and shown["mqtt"]["password"] == "**********"

    # A password of the wrong type is reported without echoing it.
    with pytest.raises(ConfigError) as err:
        parse_config({"mqtt": {"username": "gesture", "password": 918273645}})
    assert "mqtt.password" in str(err.value) and "918273645" not in str(err.value)


# ----------------------------------------------------------------------------- TLS

needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="needs the openssl command line tool")


@pytest.fixture
def pki(tmp_path):
    ca = make_ca(tmp_path / "ca", "edge-gesture test CA")
    server = issue(ca, tmp_path / "server", "broker", dns=("localhost",), ips=("127.0.0.1",))
    client = issue(ca, tmp_path / "client", "porch", client=True)
    other_ca = make_ca(tmp_path / "other", "Somebody else's CA")
    return {"ca": ca, "server": server, "client": client, "other_ca": other_ca}


def tls_broker(tmp_path, pki, *, require_client_cert=False) -> Mosquitto:
    cert, key = pki["server"]
    conf = f"cafile {pki['ca'].cert}\ncertfile {cert}\nkeyfile {key}\n"
    if require_client_cert:
        conf += "require_certificate true\n"
    return Mosquitto(tmp_path / "tls-broker", extra_conf=conf).start()


def recorder_tls(pki, port, client_cert=False):
    ctx = ssl.create_default_context(cafile=str(pki["ca"].cert))
    if client_cert:
        ctx.load_cert_chain(*map(str, pki["client"]))
    return Recorder(port, f"{ROOT}/#", tls_context=ctx)


@needs_openssl
def test_tls_with_ca_delivers_and_a_wrong_ca_is_rejected(tmp_path, pki):
    b = tls_broker(tmp_path, pki)
    try:
        rec = recorder_tls(pki, b.port)
        pub = Publisher(make_cfg(b.port, tls={"enabled": True,
                                              "ca_file": str(pki["ca"].cert)})).start()
        try:
            wait_until(lambda: pub.connected, what="TLS connection")
            pub.publish_event(event())
            assert rec.wait_count("/event", 1)[0].json()["gesture"] == "thumbs_up"
        finally:
            pub.stop()
            rec.close()

        with capture_logs() as logs:
            pub = Publisher(make_cfg(b.port, tls={
                "enabled": True, "ca_file": str(pki["other_ca"].cert)})).start()
            try:
                time.sleep(1.5)
                assert not pub.connected
            finally:
                pub.stop()
        failures = warnings_of(logs)
        assert len(failures) == 1, failures
        assert "not trusted by the CA in mqtt.tls.ca_file" in failures[0]["reason"]

        # Turning the checks off works, and says so loudly.
        with capture_logs() as logs:
            pub = Publisher(make_cfg(b.port, tls={
                "enabled": True, "ca_file": str(pki["other_ca"].cert),
                "insecure_skip_verify": True})).start()
            try:
                wait_until(lambda: pub.connected, what="unverified TLS connection")
            finally:
                pub.stop()
        loud = warnings_of(logs, "MQTT TLS CERTIFICATE CHECKS ARE OFF")
        assert len(loud) == 1 and "insecure_skip_verify" in loud[0]["setting"]
    finally:
        b.stop()


@needs_openssl
def test_tls_host_name_must_match_the_certificate(tmp_path, pki):
    ca = pki["ca"]
    pki = dict(pki, server=issue(ca, tmp_path / "srv2", "elsewhere", dns=("broker.example",)))
    b = tls_broker(tmp_path, pki)
    try:
        with capture_logs() as logs:
            pub = Publisher(make_cfg(b.port, tls={"enabled": True,
                                                  "ca_file": str(ca.cert)})).start()
            time.sleep(1.0)
            pub.stop()
        failures = warnings_of(logs)
        assert len(failures) == 1 and "does not name mqtt.host '127.0.0.1'" in \
            failures[0]["reason"]
    finally:
        b.stop()


@needs_openssl
def test_tls_client_certificate(tmp_path, pki, monkeypatch):
    b = tls_broker(tmp_path, pki, require_client_cert=True)
    cert, key = pki["client"]
    # The key as a systemd credential: a bare name inside $CREDENTIALS_DIRECTORY.
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(key.parent))
    try:
        rec = recorder_tls(pki, b.port, client_cert=True)
        pub = Publisher(make_cfg(b.port, tls={"enabled": True, "ca_file": str(pki["ca"].cert),
                                              "cert_file": str(cert),
                                              "key_file": key.name})).start()
        try:
            wait_until(lambda: pub.connected, what="connection with a client certificate")
            pub.publish_event(event())
            rec.wait_count("/event", 1)
        finally:
            pub.stop()
            rec.close()

        with capture_logs() as logs:
            pub = Publisher(make_cfg(b.port, tls={"enabled": True,
                                                  "ca_file": str(pki["ca"].cert)})).start()
            time.sleep(1.0)
            assert not pub.connected
            pub.stop()
        failures = warnings_of(logs)
        assert len(failures) == 1 and "mqtt.tls.cert_file" in failures[0]["reason"], failures
    finally:
        b.stop()


@needs_openssl
def test_unusable_tls_files_stop_start_naming_the_setting(tmp_path, pki):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(StartupError, match=r"mqtt\.tls\.ca_file: no such file"):
        Publisher(make_cfg(8883, tls={"enabled": True, "ca_file": str(tmp_path / "none.pem")}))
    with pytest.raises(StartupError, match=r"mqtt\.tls\.ca_file: .*junk\.pem"):
        Publisher(make_cfg(8883, tls={"enabled": True, "ca_file": str(junk)}))
    cert, _ = pki["client"]
    with pytest.raises(StartupError, match=r"mqtt\.tls\.cert_file / key_file"):
        Publisher(make_cfg(8883, tls={"enabled": True, "cert_file": str(cert),
                                      "key_file": str(pki["other_ca"].key)}))


# ----------------------------------------------------------------------------- bad input


@needs_openssl
def test_plain_vs_tls_port_mixups_are_explained(tmp_path, pki, broker):
    b = tls_broker(tmp_path, pki)
    try:
        cases = [
            (make_cfg(b.port), "mqtt.tls.enabled"),  # plain MQTT to the TLS listener
            (make_cfg(broker.port, tls={"enabled": True, "ca_file": str(pki["ca"].cert)}),
             "not a TLS listener"),  # TLS to a plain listener
        ]
        for cfg, expected in cases:
            with capture_logs() as logs:
                pub = Publisher(cfg).start()
                time.sleep(1.0)
                assert not pub.connected
                pub.stop()
            failures = warnings_of(logs)
            assert len(failures) == 1 and expected in failures[0]["reason"], failures
    finally:
        b.stop()


def test_unknown_host_is_named():
    with capture_logs() as logs:
        pub = Publisher(make_cfg(1883, host="no-such-broker.invalid")).start()
        time.sleep(1.0)
        pub.publish_event(event())  # still accepted: the daemon keeps running
        pub.stop()
    failures = warnings_of(logs)
    assert len(failures) == 1
    assert "cannot resolve mqtt.host 'no-such-broker.invalid'" in failures[0]["reason"]


def test_topic_settings_with_wildcards_are_refused():
    for mqtt, where in [({"base_topic": "home/+/gestures"}, "mqtt.base_topic"),
                        ({"discovery": {"prefix": "homeassistant/#"}}, "mqtt.discovery.prefix"),
                        ({"actions": [{"gesture": "fist", "topic": "home/#", "payload": "x"}]},
                         "mqtt.actions.0.topic")]:
        with pytest.raises(ConfigError, match=rf"{where}: may not contain the MQTT wildcards"):
            parse_config({"mqtt": mqtt})
    with pytest.raises(ConfigError, match=r"device_id: may not contain '\+'"):
        parse_config({"device_id": "porch+1"})
