"""`edge-gesture install-service` into a temporary root: what lands where, and what it refuses."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from edge_gesture import install as install_module
from edge_gesture.config import load_config
from edge_gesture.install import InstallError, install, packaged

REPO = Path(__file__).resolve().parent.parent
PROGRAM = [sys.executable, "-m", "edge_gesture"]


def exec_start(unit: str) -> str:
    return next(line for line in unit.splitlines() if line.startswith("ExecStart="))


def test_packaged_files_are_the_repository_ones():
    # edge_gesture/data/ holds symlinks; a stale copy there would install an old unit.
    assert packaged("edge-gesture.service") == (REPO / "systemd/edge-gesture.service").read_text()
    assert packaged("config.toml") == (REPO / "config.toml").read_text()


def test_installs_unit_config_and_folders(tmp_path):
    done = install(tmp_path, program=PROGRAM, source="/dev/video2")
    unit = (tmp_path / "etc/systemd/system/edge-gesture.service").read_text()
    assert exec_start(unit) == (f"ExecStart={sys.executable} -m edge_gesture run "
                                "--config %E/edge-gesture/config.toml")
    # Everything but ExecStart= is the reviewed unit.
    shipped = (REPO / "systemd/edge-gesture.service").read_text()
    strip = lambda t: [x for x in t.splitlines() if not x.startswith("ExecStart=")]  # noqa: E731
    assert strip(unit) == strip(shipped)

    cfg_path = tmp_path / "etc/edge-gesture/config.toml"
    cfg = load_config(cfg_path)
    assert cfg.capture.source == "/dev/video2"
    assert cfg.web.enabled and cfg.web.host == "127.0.0.1" and not cfg.web.token_file
    # The documented file, comments and all, with only the camera changed.
    shipped_cfg = (REPO / "config.toml").read_text().splitlines()
    installed_cfg = cfg_path.read_text().splitlines()
    assert len(installed_cfg) == len(shipped_cfg)
    assert [a for a, b in zip(installed_cfg, shipped_cfg, strict=True) if a != b] == [
        'source = "/dev/video2"']
    assert oct(cfg_path.stat().st_mode & 0o777) == "0o644"

    assert (tmp_path / "var/lib/edge-gesture/models").is_dir()
    assert (tmp_path / "var/cache/edge-gesture").is_dir()
    report = done.report()
    assert "sudo systemctl daemon-reload && sudo systemctl enable --now edge-gesture" in report
    assert "journalctl -u edge-gesture -f" in report
    assert f"edge-gesture check-config {cfg_path}" in report


def test_existing_config_is_kept_and_the_new_one_put_beside_it(tmp_path):
    cfg = tmp_path / "etc/edge-gesture/config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text('device_id = "kitchen"\n')
    done = install(tmp_path, program=PROGRAM)
    assert cfg.read_text() == 'device_id = "kitchen"\n'
    assert tomllib.loads((cfg.parent / "config.toml.new").read_text())["capture"]["source"] == \
        "/dev/video0"
    assert cfg in done.kept and "kept" in done.report()


def test_reinstall_replaces_the_unit(tmp_path):
    install(tmp_path, program=PROGRAM)
    unit = tmp_path / "etc/systemd/system/edge-gesture.service"
    unit.write_text("old\n")
    install(tmp_path, program=PROGRAM)
    assert unit.read_text().startswith("# edge-gesture")


@pytest.mark.parametrize("program, reason", [
    ("relative/edge-gesture", "absolute path"),
    ("/opt/my venv/bin/edge-gesture", "spaces"),
])
def test_program_exec_start_cannot_express_is_refused(tmp_path, program, reason):
    with pytest.raises(InstallError, match=reason):
        install(tmp_path, program=[program])
    assert not (tmp_path / "etc/systemd/system/edge-gesture.service").exists()


@pytest.mark.parametrize("program, reason", [
    ("/home/me/venv/bin/edge-gesture", "under /home"),
    ("/tmp/venv/bin/edge-gesture", "under /tmp"),
])
def test_program_the_sandbox_hides_is_refused_on_this_system(monkeypatch, program, reason):
    def never(*_args):
        raise AssertionError("wrote a file before refusing")

    monkeypatch.setattr(install_module.os, "geteuid", lambda: 0)
    monkeypatch.setattr(install_module, "_write", never)
    with pytest.raises(InstallError, match=reason):
        install(Path("/"), program=[program])


def test_program_the_sandbox_hides_is_only_warned_about_when_staging(tmp_path):
    # A staged root goes to another machine, where the program's place is what counts.
    done = install(tmp_path, program=["/tmp/venv/bin/edge-gesture"])
    assert (tmp_path / "etc/systemd/system/edge-gesture.service").is_file()
    assert any("under /tmp" in w and "/opt" in w for w in done.warnings)


def test_missing_render_group_is_warned_about(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/group").write_text("root:x:0:\nvideo:x:44:\n")
    done = install(tmp_path, program=PROGRAM)
    groups = [w for w in done.warnings if "group" in w]
    assert len(groups) == 1
    assert "'render'" in groups[0] and "groupadd --system render" in groups[0]


def test_world_readable_password_file_is_warned_about(tmp_path):
    secret = tmp_path / "etc/edge-gesture/mqtt_password"
    secret.parent.mkdir(parents=True)
    secret.write_text("hunter2\n")
    secret.chmod(0o644)
    done = install(tmp_path, program=PROGRAM)
    assert any("chmod 600" in w for w in done.warnings)
    assert "hunter2" not in done.report()


def test_command_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "edge_gesture.install", "--root", str(tmp_path),
                        "--source", "1"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "enable --now edge-gesture" in r.stdout
    assert load_config(tmp_path / "etc/edge-gesture/config.toml").capture.source == "1"
    bad = subprocess.run([sys.executable, "-m", "edge_gesture.install", "--root", str(tmp_path),
                          "--program", "relative/edge-gesture"], capture_output=True, text=True,
                         cwd=REPO)
    assert bad.returncode == 2 and "error:" in bad.stderr and "absolute path" in bad.stderr
