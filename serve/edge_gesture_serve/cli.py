"""edge-gesture serve: a bundle's VLM for other machines' daemons, over the Open Inference Protocol.

    edge-gesture serve --bundle models/smolvlm-256m-int8-cpu --host 0.0.0.0 --port 8080 \\
        --token-file /etc/edge-gesture/serve-token --tls-cert server.pem --tls-key server.key

Serves `edge-gesture-vision` (for `[vlm.remote] split = "vision"`) and `edge-gesture-decision`
(split = "all") from one loaded runtime, with KServe's health, readiness, metadata and /metrics.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-gesture serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True, help="the model bundle (edge-gesture-export's folder)")
    p.add_argument("--config", "-c", help="a daemon config file: its [gestures] (what the "
                   "decision model answers for) and [vlm] device, threads and precision; "
                   "default: the built-in defaults")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="REST port (default 8080)")
    p.add_argument("--grpc-port", type=int, help="also serve the protocol's gRPC API on this "
                   "port (with the same token and TLS); default: REST only")
    p.add_argument("--token-file", help="file whose first line every request must send as "
                   "`Authorization: Bearer <token>` (health checks excepted)")
    p.add_argument("--no-token", action="store_true",
                   help="listen off this machine with no token (anyone who reaches the port "
                   "can use the model)")
    p.add_argument("--tls-cert", help="server certificate (PEM): serve https")
    p.add_argument("--tls-key", help="the certificate's private key (PEM)")
    p.add_argument("--tls-client-ca", help="require client certificates signed by this CA (PEM)")
    p.add_argument("--max-request-mb", type=float, default=16.0,
                   help="larger request bodies are refused with 413 (default 16)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        listen, runtime = _prepare(args)
    except _Refused as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return _serve(listen, runtime, args.grpc_port)


class _Refused(Exception):
    pass


def _prepare(args):
    from edge_gesture.bundle import BundleError
    from edge_gesture.config import Config, ConfigError, is_loopback, load_config
    from edge_gesture.errors import StartupError
    from edge_gesture.vlm.backend import BackendError
    from edge_gesture.vlm.worker import backend_options, gesture_descriptions
    from edge_gesture_serve.server import Listen

    if not args.token_file and not args.no_token and not is_loopback(args.host):
        raise _Refused(f"--host {args.host} is reachable from other machines: give --token-file, "
                       "or --no-token to serve anyone who reaches the port")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise _Refused("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        raise _Refused("--tls-client-ca needs --tls-cert and --tls-key (client certificates "
                       "are a TLS feature)")
    for flag, value in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key),
                        ("--tls-client-ca", args.tls_client_ca)):
        if value and not Path(value).is_file():
            raise _Refused(f"{flag}: no such file {value}")
    token = ""
    if args.token_file:
        try:
            text = Path(args.token_file).read_text(encoding="utf-8")
        except OSError as e:
            raise _Refused(f"--token-file: cannot read {args.token_file}: {e.strerror}") from None
        token = text.splitlines()[0].strip() if text.strip() else ""
        if len(token) < 16:
            raise _Refused(f"--token-file: {args.token_file} must hold a token of at least 16 "
                           "characters on its first line")
    try:
        cfg = load_config(args.config) if args.config else Config()
    except ConfigError as e:
        raise _Refused(str(e)) from None
    listen = Listen(host=args.host, port=args.port, token=token, tls_cert=args.tls_cert or "",
                    tls_key=args.tls_key or "", tls_client_ca=args.tls_client_ca or "",
                    max_request_bytes=int(args.max_request_mb * 1024 * 1024))
    from edge_gesture.vlm.runtime import VlmRuntime

    opts = backend_options(cfg)
    if opts.cache_dir is not None:
        opts.cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        runtime = VlmRuntime(Path(args.bundle), gesture_descriptions(cfg), opts,
                             verify_checksums=cfg.vlm.verify_checksums,
                             allow_unverified=cfg.vlm.allow_unverified)
        runtime.warm_up()
    except (BundleError, BackendError, StartupError) as e:
        raise _Refused(str(e)) from None
    return listen, runtime


def _serve(listen, runtime, grpc_port: int | None) -> int:
    # kserve parses sys.argv when imported (its own --http_port, --protocol...): ours are not its.
    sys.argv = sys.argv[:1]
    import asyncio

    from kserve.model_repository import ModelRepository

    from edge_gesture_serve.models import DecisionModel, SharedRuntime, VisionModel
    from edge_gesture_serve.server import EdgeDataPlane, GuardedGRPCServer, GuardedRESTServer

    shared = SharedRuntime(runtime)
    registry = ModelRepository()
    models = [VisionModel(shared), DecisionModel(shared)]
    for m in models:
        registry.update(m)
    dataplane = EdgeDataPlane(registry, {m.name: shared.sha256 for m in models})
    rest = GuardedRESTServer(dataplane, registry, listen)
    grpc_server = GuardedGRPCServer(dataplane, registry, listen, grpc_port) if grpc_port else None
    scheme = "https" if listen.tls_cert else "http"
    grpc_note = f", gRPC on port {grpc_port}" if grpc_port else ""
    print(f"edge-gesture serve: {scheme}://{listen.host}:{listen.port}{grpc_note} models "
          f"{[m.name for m in models]} bundle {shared.sha256[:12]} "
          f"({'token required' if listen.token else 'no token'})", file=sys.stderr, flush=True)

    async def serve_all():
        # uvicorn takes SIGTERM and SIGINT and ends the REST server; gRPC then follows it.
        grpc_task = asyncio.create_task(grpc_server.start(4)) if grpc_server else None
        await rest.start()
        if grpc_task is not None:
            await grpc_server.stop()
            await grpc_task

    try:
        asyncio.run(serve_all())
    except KeyboardInterrupt:
        pass
    finally:
        runtime.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
