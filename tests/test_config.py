"""Config errors name the field and the reason; the shipped config.toml documents every field."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from edge_gesture.config import Config, ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parent.parent


def error_of(data: dict) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_config(data, "test.toml")
    return str(exc.value)


def test_shipped_config_is_valid_and_matches_defaults_where_it_should():
    cfg = load_config(REPO / "config.toml")
    assert cfg.mqtt.port == 1883
    assert cfg.capture.source == "testcard"  # the quick start runs with no camera


def test_every_value_in_config_toml_is_the_default_unless_its_comment_says_not():
    # The file's header promises it; a user copies values from it believing them the defaults.
    defaults = Config().model_dump()
    shipped = tomllib.loads((REPO / "config.toml").read_text())
    section: list[str] = []
    comment: list[str] = []
    undeclared = []
    for line in (REPO / "config.toml").read_text().splitlines():
        if line.startswith("["):
            section, comment = line.strip("[]").split("."), []
        elif line.startswith("#"):
            comment.append(line)
        elif "=" in line:
            key = line.split("=", 1)[0].strip()
            path = [*section, key]
            value, default = shipped, defaults
            for part in path:
                value, default = value[part], default[part]
            if value != default and "not the default" not in " ".join(comment).lower():
                undeclared.append((".".join(path), value, default))
            comment = []
        else:
            comment = []
    assert not undeclared, f"differ from the default without saying so: {undeclared}"


def test_unknown_key_is_named_with_its_dotted_path():
    assert "capture.sorce: unknown key" in error_of({"capture": {"sorce": "0"}})


def test_wrong_type_is_named():
    msg = error_of({"mqtt": {"port": "eighteen"}})
    assert "mqtt.port:" in msg and "eighteen" in msg


def test_out_of_range_value_is_named():
    msg = error_of({"decide": {"enter_threshold": 1.5}})
    assert "decide.enter_threshold:" in msg and "1.5" in msg


@pytest.mark.parametrize("bad", ["kitchen/1", "kitchen+", "#all"])
def test_device_id_with_topic_characters_is_refused(bad):
    assert "device_id: may not contain" in error_of({"device_id": bad})


def test_wildcard_in_base_topic_is_refused():
    assert "mqtt.base_topic" in error_of({"mqtt": {"base_topic": "home/+"}})


def test_unknown_gesture_names_the_list():
    msg = error_of({"gestures": {"enabled": ["fist", "jazz_hands"]}})
    assert "gestures" in msg and "jazz_hands" in msg


def test_custom_gesture_described_in_words_can_be_enabled():
    cfg = parse_config({"gestures": {
        "enabled": ["fist", "crossed_fingers"],
        "custom": [{"name": "crossed_fingers", "description": "index and middle finger crossed"}],
    }})
    assert cfg.gestures.enabled == ["fist", "crossed_fingers"]


def test_several_problems_are_all_reported():
    msg = error_of({"device_id": "a/b", "capture": {"fps": -1}, "hands": {"typo": 1}})
    assert "3 problem(s)" in msg
    for field in ("device_id", "capture.fps", "hands.typo"):
        assert field in msg


def test_bad_toml_syntax_names_the_file(tmp_path):
    p = tmp_path / "broken.toml"
    p.write_text("[capture\nsource = 0\n")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
        load_config(p)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.toml: no such file"):
        load_config(tmp_path / "nope.toml")


def test_every_field_has_a_description_and_appears_in_config_toml():
    text = (REPO / "config.toml").read_text()
    tomllib.loads(text)
    missing_doc, missing_toml = [], []

    def walk(model, prefix=""):
        for name, info in model.model_fields.items():
            if not info.description:
                missing_doc.append(prefix + name)
            ann = info.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                if not re.search(rf"^#?\s*\[+{re.escape(prefix + name)}\]+", text, re.M):
                    missing_toml.append(prefix + name)
                walk(ann, f"{prefix}{name}.")
            elif not re.search(rf"^#?\s*({re.escape(name)}\s*=|\[\[{re.escape(prefix + name)}\]\])",
                               text, re.M):
                missing_toml.append(prefix + name)

    walk(Config)
    assert not missing_doc, f"fields without a description: {missing_doc}"
    assert not missing_toml, f"fields not shown in config.toml: {missing_toml}"


def test_check_config_cli_exit_codes(tmp_path):
    good = subprocess.run([sys.executable, "-m", "edge_gesture", "check-config",
                           str(REPO / "config.toml")], capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('device_id = "x"\n[mqtt]\nqos = 3\n')
    r = subprocess.run([sys.executable, "-m", "edge_gesture", "check-config", str(bad)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "mqtt.qos" in r.stderr


def test_an_old_health_section_loads_as_web_with_a_note_and_both_at_once_are_refused():
    cfg = parse_config({"health": {"enabled": True, "port": 9901, "stale_after_s": 2.0}})
    assert (cfg.web.enabled, cfg.web.port, cfg.web.stale_after_s) == (True, 9901, 2.0)
    assert len(cfg.notes) == 1 and "rename" in cfg.notes[0] and "[web]" in cfg.notes[0]
    assert "health: [health] is now part of [web]" in error_of({"health": {}, "web": {}})
    # The page shows people: an old [health] open to the network needs a token now.
    msg = error_of({"health": {"enabled": True, "host": "0.0.0.0"}})
    assert "web.token_file" in msg and "[health] is now [web]" in msg
