"""`edge-gesture check-config`: everything it can find without starting, in one run."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from edge_gesture.bundle import MANIFEST_NAME
from edge_gesture.cli import main
from edge_gesture.config import VlmConfig
from tests.test_bundle import _write_bundle
from tests.tls_certs import OPENSSL, issue, make_ca


def check(capsys, tmp_path: Path, toml: str, *extra: str) -> tuple[int, list[str], str]:
    """Exit code, the stderr lines starting with `error: ` (prefix cut), and all of stderr."""
    path = tmp_path / "c.toml"
    path.write_text(toml)
    code = main(["check-config", "--config", str(path), *extra])
    err = capsys.readouterr().err
    return code, [line[len("error: "):] for line in err.splitlines() if line.startswith("error: ")], err


def test_config_flag_names_the_file_as_for_the_other_commands(capsys, tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('device_id = "hall"\n')
    assert main(["check-config", "--config", str(path)]) == 0
    assert main(["check-config", "-c", str(path)]) == 0
    assert main(["--config", str(path), "check-config"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{path}: ok"] * 3
    other = tmp_path / "other.toml"
    other.write_text("")
    assert main(["check-config", str(other), "--config", str(path)]) == 2
    assert "two config files given" in capsys.readouterr().err


@pytest.mark.parametrize("make, reason", [
    (lambda root: None, "not a directory"),
    (lambda root: (root.mkdir(), (root / "model.xml").write_text("<net/>")), "no manifest"),
    (lambda root: (root.mkdir(), (root / MANIFEST_NAME).write_text("{format: openvino")),
     "not valid JSON"),
    (lambda root: _write_bundle(root, format="tflite"), "format"),
])
def test_an_unusable_vlm_bundle_is_named(capsys, tmp_path, make, reason):
    bundle = tmp_path / "bundle"
    make(bundle)
    code, errors, err = check(capsys, tmp_path, f'[vlm]\nenabled = true\nbundle = "{bundle}"\n')
    assert code == 2
    assert len(errors) == 1 and errors[0].startswith(f"vlm.bundle: {bundle}")
    assert reason in err


def test_a_relative_bundle_is_looked_for_from_the_working_directory(capsys, tmp_path, monkeypatch):
    _write_bundle(tmp_path / "models" / "b")
    monkeypatch.chdir(tmp_path)
    toml = '[vlm]\nenabled = true\nbundle = "models/b"\n'
    assert check(capsys, tmp_path, toml)[:2] == (0, [])
    monkeypatch.chdir(tmp_path / "models")
    code, errors, _ = check(capsys, tmp_path, toml)
    assert code == 2 and f"relative to the working directory {tmp_path / 'models'}" in errors[0]


def test_deep_also_checks_the_bundle_files_sha256(capsys, tmp_path):
    bundle = tmp_path / "bundle"
    _write_bundle(bundle)
    raw = bytearray((bundle / "vision.bin").read_bytes())
    raw[100] ^= 0xFF  # same size: only the checksum can tell
    (bundle / "vision.bin").write_bytes(bytes(raw))
    toml = f'[vlm]\nenabled = true\nbundle = "{bundle}"\n'
    code, errors, err = check(capsys, tmp_path, toml)
    assert (code, errors) == (0, [])
    assert "--deep also checks their sha256" in err  # ok does not claim more than was checked
    code, errors, _ = check(capsys, tmp_path, toml, "--deep")
    assert code == 2
    assert errors == [f"vlm.bundle: {bundle / 'vision.bin'}: sha256 does not match manifest "
                      "files.vision.bin.sha256: the file is corrupt or was replaced; re-export "
                      "the bundle"]


def test_missing_credential_and_tls_files_are_each_named(capsys, tmp_path):
    code, errors, _ = check(capsys, tmp_path, f"""
[mqtt]
username = "u"
password_file = "{tmp_path}/pw"
[mqtt.tls]
enabled = true
ca_file = "{tmp_path}/ca.pem"
cert_file = "{tmp_path}/client.pem"
key_file = "{tmp_path}/client.key"
""")
    assert code == 2
    assert errors == [f"mqtt.password_file: no such file {tmp_path}/pw",
                      f"mqtt.tls.ca_file: no such file {tmp_path}/ca.pem",
                      f"mqtt.tls.cert_file: no such file {tmp_path}/client.pem",
                      f"mqtt.tls.key_file: no such file {tmp_path}/client.key"]


def test_the_vlm_servers_files_are_named_and_a_whole_remote_vlm_needs_no_bundle(capsys, tmp_path):
    # They are read when the VLM loads, after start-up: a typo would only show as a VLM that never
    # comes up.
    code, errors, _ = check(capsys, tmp_path, f"""
[vlm]
enabled = true
[vlm.remote]
url = "https://vlm-box:8080"
split = "all"
token_file = "{tmp_path}/token"
ca_file = "{tmp_path}/ca.pem"
""")
    assert code == 2
    assert errors == [f"vlm.remote.token_file: no such file {tmp_path}/token",
                      f"vlm.remote.ca_file: no such file {tmp_path}/ca.pem"]


def test_an_empty_password_file_is_refused_as_the_daemon_would(capsys, tmp_path):
    (tmp_path / "pw").write_text("")
    code, errors, _ = check(capsys, tmp_path,
                            f'[mqtt]\nusername = "u"\npassword_file = "{tmp_path}/pw"\n')
    assert (code, errors) == (2, [f"mqtt.password_file: {tmp_path}/pw is empty"])


def test_a_bare_credential_name_is_checked_only_where_systemd_puts_it(capsys, tmp_path, monkeypatch):
    # The installer's own advice (password_file = "mqtt_password") must pass from a shell...
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    toml = '[mqtt]\nusername = "u"\npassword_file = "mqtt_password"\n'
    code, errors, err = check(capsys, tmp_path, toml)
    assert (code, errors) == (0, [])
    assert "note: mqtt.password_file: 'mqtt_password' is a bare name" in err
    # ...and under the service it is looked up in $CREDENTIALS_DIRECTORY.
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    code, errors, _ = check(capsys, tmp_path, toml)
    assert (code, errors) == (2, [f"mqtt.password_file: no such file {tmp_path}/mqtt_password"])


@pytest.mark.skipif(OPENSSL is None, reason="needs the openssl command line tool")
def test_tls_files_must_hold_certificates_and_a_matching_key(capsys, tmp_path):
    ca = make_ca(tmp_path / "ca")
    cert, key = issue(ca, tmp_path / "client", "client", client=True)
    other_cert, _ = issue(ca, tmp_path / "other", "other", client=True)
    toml = ('[mqtt.tls]\nenabled = true\nca_file = "{ca}"\ncert_file = "{cert}"\n'
            'key_file = "{key}"\n')
    good = toml.format(ca=ca.cert, cert=cert, key=key)
    assert check(capsys, tmp_path, good)[:2] == (0, [])
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    code, errors, _ = check(capsys, tmp_path, toml.format(ca=tmp_path / "junk.pem", cert=cert,
                                                           key=key))
    assert code == 2 and errors[0].startswith(f"mqtt.tls.ca_file: {tmp_path / 'junk.pem'} holds no "
                                              "usable PEM certificate")
    code, errors, _ = check(capsys, tmp_path, toml.format(ca=ca.cert, cert=other_cert, key=key))
    assert code == 2 and errors[0].startswith("mqtt.tls.cert_file / key_file:")
    assert "not a matching PEM certificate and key" in errors[0]


def test_missing_int8_hand_models_and_video_file_are_named(capsys, tmp_path):
    code, errors, _ = check(capsys, tmp_path, f"""
[capture]
source = "{tmp_path}/clip.mp4"
[hands]
int8_models = "{tmp_path}/int8"
""")
    assert code == 2
    assert errors[0] == f"capture.source: no such video file: {tmp_path}/clip.mp4"
    assert errors[1].startswith(f"hands.int8_models: {tmp_path}/int8/edge-gesture-hands.json: missing")
    assert len(errors) == 2


def test_an_empty_capture_source_is_refused(capsys, tmp_path):
    code, errors, _ = check(capsys, tmp_path, '[capture]\nsource = ""\n')
    assert code == 2
    assert errors == ["capture.source: empty: give a camera index (0), a /dev/video* device, a "
                      "video file, a URL or testcard (got '')"]


def test_a_gesture_described_in_words_needs_the_vlm(capsys, tmp_path):
    custom = ('[gestures]\nenabled = ["fist", "crossed"]\n[[gestures.custom]]\nname = "crossed"\n'
              'description = "index and middle finger crossed"\n')
    code, errors, _ = check(capsys, tmp_path, custom)
    assert code == 2
    assert errors == ["gestures.custom.0: 'crossed' can never fire: only the VLM recognises "
                      "gestures described in words, and vlm.enabled is false; enable [vlm] with a "
                      "bundle, or remove the entry"]
    _write_bundle(tmp_path / "bundle")
    with_vlm = custom + f'[vlm]\nenabled = true\nbundle = "{tmp_path / "bundle"}"\n'
    assert check(capsys, tmp_path, with_vlm)[:2] == (0, [])


def test_every_problem_is_reported_in_one_run(capsys, tmp_path):
    # Each of these used to wait until the ones before it were fixed: pydantic skips a model's
    # checks across fields while one of its fields is bad, and the files were never looked at.
    code, errors, err = check(capsys, tmp_path, f"""
[gestures]
enabled = ["fist", "thumb_up"]
min_confidence = 2
[[gestures.custom]]
name = "crossed"
description = "index and middle finger crossed"
[decide]
window_s = -1
enter_threshold = 0.3
exit_threshold = 0.5
[mqtt]
qos = 3
[[mqtt.actions]]
gesture = "wave"
topic = "home/light/set"
payload = "ON"
[mqtt.tls]
enabled = true
ca_file = "{tmp_path}/ca.pem"
[vlm]
enabled = "maybe"
""")
    assert code == 2
    fields = [e.split(":", 1)[0] for e in errors]
    assert sorted(fields) == sorted([
        "gestures.min_confidence", "decide.window_s", "mqtt.qos", "vlm.enabled",
        "gestures.enabled", "decide.exit_threshold", "mqtt.actions.0.gesture", "mqtt.tls.ca_file",
    ])
    # vlm.enabled is bad, so whether the custom gesture can fire is not judged on its default.
    assert "gestures.custom.0" not in err
    assert err.splitlines()[-1] == f"{tmp_path / 'c.toml'}: 8 problem(s)"


def test_settings_built_in_code_are_checked_across_fields_too():
    # The daemon's own objects (tests, reloads) must hold together as a parsed file does; the
    # error names the field to fix, not just the section.
    with pytest.raises(ValidationError) as err:
        VlmConfig(enabled=True)
    assert [e["loc"] for e in err.value.errors()] == [("bundle",)]
