"""Throw-away X.509 material for TLS tests, made with the openssl command line tool."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL = shutil.which("openssl")


@dataclass(frozen=True)
class Ca:
    cert: Path
    key: Path


def _run(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True)


def make_ca(folder: Path, name: str = "Test CA") -> Ca:
    folder.mkdir(parents=True, exist_ok=True)
    key, cert = folder / "ca.key", folder / "ca.crt"
    _run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)
    return Ca(cert, key)


def issue(ca: Ca, folder: Path, name: str, *, dns: tuple[str, ...] = (),
          ips: tuple[str, ...] = (), client: bool = False) -> tuple[Path, Path]:
    """A certificate signed by `ca` for these names; returns (cert, key)."""
    folder.mkdir(parents=True, exist_ok=True)
    key, csr, cert = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.crt"
    ext = folder / f"{name}.ext"
    alt = [f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips]
    lines = ["basicConstraints=CA:FALSE",
             f"extendedKeyUsage={'clientAuth' if client else 'serverAuth'}"]
    if alt:
        lines.append("subjectAltName=" + ",".join(alt))
    ext.write_text("\n".join(lines) + "\n")
    _run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
         "-subj", f"/CN={name}", cwd=folder)
    _run("x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
         "-CAcreateserial", "-days", "2", "-out", str(cert), "-extfile", str(ext), cwd=folder)
    return cert, key
