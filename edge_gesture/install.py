"""`edge-gesture install-service`: the systemd unit, /etc/edge-gesture/config.toml, the folders.

Writes under `--root` (default `/`) so it can be tried, tested and packaged without touching the
machine. It never overwrites an existing config (the new one goes beside it as
`config.toml.new`), never starts anything, and ends by printing the commands to run next.
"""

from __future__ import annotations

import argparse
import grp
import json
import os
import re
import sys
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from edge_gesture.config import parse_config

UNIT = "edge-gesture.service"
CONFIG_DIR = Path("etc/edge-gesture")
UNIT_DIR = Path("etc/systemd/system")
STATE_DIR = Path("var/lib/edge-gesture")
CACHE_DIR = Path("var/cache/edge-gesture")
# ProtectHome= and PrivateTmp= hide these from the service: a program there cannot start.
HIDDEN = ("/home/", "/root/", "/run/user/", "/tmp/", "/var/tmp/")
GROUPS = ("video", "render")


class InstallError(Exception):
    """Something the user must fix before the service can be installed; the message says what."""


def packaged(name: str) -> str:
    return resources.files("edge_gesture").joinpath("data", name).read_text()


def default_program() -> list[str]:
    """The installed console script beside this Python, else `python -m edge_gesture`."""
    script = Path(sys.executable).with_name("edge-gesture")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "edge_gesture"]


def hidden_from_service(exe: str) -> str | None:
    """Why the sandboxed service could not start `exe`, or None."""
    hidden = next((h for h in HIDDEN if exe.startswith(h)), None)
    if hidden is None:
        return None
    return (f"{exe} is under {hidden.rstrip('/')}, which the service's sandbox hides "
            "(ProtectHome=, PrivateTmp=); install it in a venv under /opt, e.g. `python3 -m venv "
            "/opt/edge-gesture && /opt/edge-gesture/bin/pip install edge-gesture`")


def render_unit(template: str, program: list[str]) -> str:
    """The unit with ExecStart= running `program` (the arguments after it are kept)."""
    for part in program:
        if not part or any(c.isspace() for c in part) or "%" in part or "$" in part:
            raise InstallError(f"program path {part!r}: spaces, '%' and '$' are not supported in "
                               "ExecStart=; install edge-gesture under a plain path such as "
                               "/opt/edge-gesture")
    exe = program[0]
    if not os.path.isabs(exe):
        raise InstallError(f"program {exe!r} must be an absolute path")
    lines = template.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith("ExecStart=")]
    if len(starts) != 1:
        raise InstallError(f"the packaged unit has {len(starts)} ExecStart= lines, expected 1")
    i = starts[0]
    # The template runs `/opt/edge-gesture/bin/edge-gesture run ...`: keep `run ...`.
    args = lines[i].split(None, 1)[1] if " " in lines[i].strip() else "\n"
    lines[i] = f"ExecStart={' '.join(program)} {args}"
    return "".join(lines)


def service_config(template: str, source: str) -> str:
    """The shipped config.toml with what a service needs: a real camera and the live page with
    `/healthz` and `/metrics`, on this machine only (127.0.0.1, the shipped default).

    Edits the two lines in place, so every comment of the documented file is kept.
    """
    wanted = {("capture", "source"): json.dumps(source), ("web", "enabled"): "true"}
    out, section, done = [], "", set()
    for line in template.splitlines(keepends=True):
        m = re.match(r"^\s*\[([A-Za-z0-9_.]+)\]\s*$", line)
        if m:
            section = m.group(1)
        key = re.match(r"^([A-Za-z0-9_]+)\s*=", line)
        if key and (section, key.group(1)) in wanted:
            line = f"{key.group(1)} = {wanted[(section, key.group(1))]}\n"
            done.add((section, key.group(1)))
        out.append(line)
    missing = set(wanted) - done
    if missing:
        raise InstallError(f"the packaged config.toml lacks {sorted('.'.join(k) for k in missing)}")
    text = "".join(out)
    cfg = parse_config(tomllib.loads(text), "service config.toml")  # never install a bad file
    if cfg.capture.source != source or not cfg.web.enabled:
        raise InstallError("could not set capture.source and web.enabled in config.toml")
    return text


def _group_exists(root: Path, name: str) -> bool:
    if root == Path("/"):
        try:
            grp.getgrnam(name)
            return True
        except KeyError:
            return False
    group_file = root / "etc/group"
    if not group_file.is_file():
        return True  # a bare staging root: nothing to check against
    return any(line.split(":", 1)[0] == name for line in group_file.read_text().splitlines())


@dataclass
class Installed:
    root: Path
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def shown(self, rel: Path) -> str:
        return str(Path("/") / rel) if self.root == Path("/") else str(self.root / rel)

    def report(self) -> str:
        cfg = self.shown(CONFIG_DIR / "config.toml")
        lines = ["edge-gesture service installed:"]
        lines += [f"  wrote {p}" for p in self.written]
        lines += [f"  kept  {p} (yours; the shipped one is beside it as config.toml.new)"
                  for p in self.kept]
        lines += [f"warning: {w}" for w in self.warnings]
        lines += [
            "",
            "Next:",
            f"  1. set the camera and the MQTT broker in {cfg}, then check it:",
            f"       edge-gesture check-config {cfg}",
            "  2. (MQTT password, optional) set username and password_file = \"mqtt_password\" "
            "in [mqtt], and store the password (first line) with",
            f"       sudo install -m 600 /dev/stdin {self.shown(CONFIG_DIR / 'mqtt_password')}",
            f"  3. (VLM, optional) copy an exported model bundle into "
            f"{self.shown(STATE_DIR / 'models')}/",
            "  4. sudo systemctl daemon-reload && sudo systemctl enable --now edge-gesture",
            "  5. journalctl -u edge-gesture -f",
        ]
        return "\n".join(lines)


def _write(path: Path, text: str, mode: int, done: Installed) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    os.replace(tmp, path)
    done.written.append(path)


def install(root: Path = Path("/"), *, program: list[str] | None = None,
            source: str = "/dev/video0") -> Installed:
    root = Path(root)
    if root == Path("/") and os.geteuid() != 0:
        raise InstallError("writing to /etc needs root: run it with sudo (or pass --root DIR to "
                           "stage the files elsewhere)")
    program = program or default_program()
    unit = render_unit(packaged(UNIT), program)
    config = service_config(packaged("config.toml"), source)
    done = Installed(root)
    hidden = hidden_from_service(program[0])
    if hidden and root == Path("/"):
        raise InstallError(hidden)
    if hidden:
        # A staging root is copied to another system or only inspected (systemd-analyze): the
        # program's place on the target is what counts, and this machine cannot know it.
        done.warnings.append(f"the staged unit would not start on this machine: {hidden}")

    _write(root / UNIT_DIR / UNIT, unit, 0o644, done)

    cfg_dir = root / CONFIG_DIR
    cfg_dir.mkdir(parents=True, exist_ok=True)
    target = cfg_dir / "config.toml"
    if target.exists():
        _write(cfg_dir / "config.toml.new", config, 0o644, done)
        done.kept.append(target)
    else:
        _write(target, config, 0o644, done)

    secret = cfg_dir / "mqtt_password"
    if secret.exists() and secret.stat().st_mode & 0o077:
        done.warnings.append(f"{secret} is readable by others: chmod 600 {secret}")

    # systemd creates these too; made here so bundles can be copied in before the first start.
    # With DynamicUser= systemd moves them under /var/lib/private at first start.
    for d in (STATE_DIR / "models", CACHE_DIR):
        (root / d).mkdir(parents=True, exist_ok=True, mode=0o755)
        done.written.append(root / d)

    for g in GROUPS:
        if not _group_exists(root, g):
            done.warnings.append(
                f"group {g!r} does not exist, so SupplementaryGroups= would stop the service "
                f"from starting: `sudo groupadd --system {g}` (and see the README on GPU/NPU "
                "drivers)")
    return done


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default="/", help="install under this folder instead of / "
                   "(staging, packaging, tests)")
    p.add_argument("--source", default="/dev/video0",
                   help="capture.source for the installed config (default: /dev/video0)")
    p.add_argument("--program", help="absolute path of the edge-gesture program ExecStart= runs "
                   "(default: the one beside this Python)")
    p.add_argument("--quiet", "-q", action="store_true", help="print nothing on success")


def run(args: argparse.Namespace) -> int:
    try:
        done = install(Path(args.root), program=[args.program] if args.program else None,
                       source=args.source)
    except InstallError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(done.report())
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="edge-gesture install-service", description=__doc__)
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
