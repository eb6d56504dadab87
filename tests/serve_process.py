"""A real `edge-gesture serve` (KServe's model server) in its own venv, on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.mosquitto import free_port

ROOT = Path(__file__).resolve().parents[1]
SERVE_BIN = ROOT / ".venv-serve" / "bin" / "edge-gesture"


class ServeProcess:
    def __init__(self, bundle: Path, log_dir: Path, *args: str, port: int | None = None,
                 grpc_port: int | None = None):
        if not SERVE_BIN.exists():  # script/test makes it; a missing one is a broken set-up
            raise AssertionError(f"{SERVE_BIN} is missing: run script/setup --serve")
        self.bundle = bundle
        self.args = list(args)
        self.port = port or free_port()
        self.grpc_port = grpc_port or free_port()  # gRPC listens too, with the same token and TLS
        self.log = log_dir / f"serve-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        scheme = "https" if "--tls-cert" in self.args else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def grpc_url(self) -> str:
        return self.url.rsplit(":", 1)[0] + f":{self.grpc_port}"

    def url_for(self, protocol: str) -> str:
        return self.grpc_url if protocol == "grpc" else self.url

    def start(self, wait: bool = True) -> ServeProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(SERVE_BIN), "serve", "--bundle", str(self.bundle), "--port", str(self.port),
                 "--grpc-port", str(self.grpc_port), *self.args],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        if wait:
            self.wait_listening()
        return self

    def wait_listening(self, timeout: float = 90.0) -> None:
        """Until the port answers (health needs no token; over TLS any answer is a TLS one)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"edge-gesture serve exited {self.proc.returncode}:\n"
                                     f"{self.log.read_text()[-3000:]}")
            try:
                if self.url.startswith("https"):
                    ready = self._ready_over_tls()
                else:
                    with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=1) as r:
                        ready = r.status == 200
                if ready:
                    socket.create_connection(("127.0.0.1", self.grpc_port), timeout=1).close()
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"edge-gesture serve did not listen in {timeout} s:\n"
                             f"{self.log.read_text()[-3000:]}")

    def _ready_over_tls(self) -> bool:
        import ssl

        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=1,
                                        context=ctx) as r:
                return r.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        """As a crash or a pulled plug: no goodbye to the clients."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
