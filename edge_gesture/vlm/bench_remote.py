"""`edge-gesture bench vlm --remote URL`: decisions through a server against the local runtime.

Latency: the same crop decided locally, with the vision encoder on the server (split = "vision")
and wholly on the server (split = "all"), alternating decision by decision so all three see the
same machine load; the remote answers are checked against the local one. Throughput: 1, 2 and 4
clients (as that many daemons) sending whole decisions at once for a fixed time each, each client
with its own connection, giving the server's decisions/s and the clients' p95. With the server on
this machine the two compete for its cores; the report says which machine the server is.
"""

from __future__ import annotations

import os
import threading
import time
from urllib.parse import urlsplit

import numpy as np

from edge_gesture.config import VlmRemoteConfig, is_loopback
from edge_gesture.errors import UsageError
from edge_gesture.machine import cpu_facts
from edge_gesture.vlm.bench import percentile
from edge_gesture.vlm.remote import RemoteError


def add_arguments(p) -> None:
    p.add_argument("--remote", metavar="URL",
                   help="also decide through this Open Inference Protocol server "
                   "(edge-gesture serve), against the local runtime in the same run")
    p.add_argument("--protocol", default="rest", choices=("rest", "grpc"),
                   help="--remote: the protocol's REST (default) or gRPC API; URL names its port")
    p.add_argument("--token-file", help="--remote: the bearer token's file")
    p.add_argument("--ca-file", help="--remote: the CA of an https server's certificate")
    p.add_argument("--clients", default="1,2,4",
                   help="--remote: clients calling at once, as daemons would (default 1,2,4)")
    p.add_argument("--seconds", type=float, default=20.0,
                   help="--remote: length of each throughput run (default 20)")


def _remote(args, split: str) -> VlmRemoteConfig:
    try:
        return VlmRemoteConfig(url=args.remote, split=split, protocol=args.protocol,
                               token_file=args.token_file or "", ca_file=args.ca_file or "")
    except ValueError as e:
        raise UsageError(f"--remote / --token-file / --ca-file: {e}") from None


def measure_remote(args, local, gestures, opts, crop: np.ndarray) -> dict:
    from edge_gesture.vlm.remote_runtime import RemoteDecisionRuntime
    from edge_gesture.vlm.runtime import VlmRuntime
    from edge_gesture.vlm.worker import _remote_vision

    try:
        clients = sorted({int(c) for c in args.clients.split(",") if c.strip()})
    except ValueError:
        raise UsageError(f"--clients {args.clients!r}: give numbers, e.g. 1,2,4") from None
    if not clients or clients[0] < 1:
        raise UsageError(f"--clients {args.clients!r}: each at least 1")
    try:
        vision = VlmRuntime(args.bundle, gestures, opts,
                            remote_vision=_remote_vision(_remote(args, "vision")))
        vision.warm_up()
        whole = RemoteDecisionRuntime(_remote(args, "all"), gestures)
        whole.warm_up()
    except RemoteError as e:
        raise UsageError(f"--remote: {e}") from None

    runs = {"local": local, "vision": vision, "all": whole}
    times: dict[str, list[float]] = {k: [] for k in runs}
    answers: dict[str, tuple[str, float]] = {}
    for _ in range(args.repeats):
        for key, rt in runs.items():
            t0 = time.perf_counter()
            decided, _ = rt.classify(crop)
            times[key].append(time.perf_counter() - t0)
            answers[key] = (decided.label, decided.probability)
    vision.close()

    throughput = []
    for n in clients:
        throughput.append(_throughput(args, gestures, crop, n))
    whole.close()

    host = urlsplit(args.remote).hostname or ""
    here = is_loopback(host)
    out = {
        "url": args.remote,
        "protocol": args.protocol,
        "server_on_this_machine": here,
        "server_cpus": os.cpu_count() if here else None,
        "server_cpu": cpu_facts() if here else None,
        "repeats": args.repeats,
        "local_p50_s": percentile(times["local"], 50), "local_p95_s": percentile(times["local"], 95),
        "vision_split_p50_s": percentile(times["vision"], 50),
        "vision_split_p95_s": percentile(times["vision"], 95),
        "all_split_p50_s": percentile(times["all"], 50), "all_split_p95_s": percentile(times["all"], 95),
        "answers": {k: {"label": a[0], "probability": round(a[1], 6)} for k, a in answers.items()},
        "throughput": throughput,
    }
    out["vision_split_minus_local_p50_ms"] = (out["vision_split_p50_s"] - out["local_p50_s"]) * 1000
    return out


def _throughput(args, gestures, crop: np.ndarray, n: int) -> dict:
    from edge_gesture.vlm.remote_runtime import RemoteDecisionRuntime

    runtimes = [RemoteDecisionRuntime(_remote(args, "all"), gestures) for _ in range(n)]
    latencies: list[list[float]] = [[] for _ in range(n)]
    errors: list[str] = []
    start = threading.Barrier(n + 1)
    end_at = [0.0]

    def client(i: int) -> None:
        start.wait()
        while time.perf_counter() < end_at[0]:
            t0 = time.perf_counter()
            try:
                runtimes[i].classify(crop)
            except RemoteError as e:
                errors.append(str(e))
                return
            latencies[i].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    end_at[0] = t0 + args.seconds
    start.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    for rt in runtimes:
        rt.close()
    if errors:
        raise UsageError(f"--remote: a client failed during the throughput run: {errors[0]}")
    every = [x for xs in latencies for x in xs]
    return {"clients": n, "decisions": len(every), "seconds": wall,
            "decisions_per_s": len(every) / wall, "p50_s": percentile(every, 50),
            "p95_s": percentile(every, 95)}


def print_remote(r: dict) -> None:
    where = (f"this machine, {r['server_cpus']} CPUs" if r["server_on_this_machine"]
             else "another machine (its CPUs are not known here)")
    print(f"remote {r['url']} ({r['protocol']}; server on {where}), {r['repeats']} decisions "
          "each, alternating:")
    for key, name in (("local", "local"), ("vision_split", "vision on the server"),
                      ("all_split", "whole decision on the server")):
        ans = r["answers"]["local" if key == "local" else key.split("_")[0]]
        print(f"  {name:30s} p50 {r[key + '_p50_s'] * 1000:7.0f} ms  p95 "
              f"{r[key + '_p95_s'] * 1000:7.0f} ms  ({ans['label']} {ans['probability']:.4f})")
    print(f"  vision split p50 - local p50: {r['vision_split_minus_local_p50_ms']:+.0f} ms")
    for t in r["throughput"]:
        print(f"  {t['clients']} client(s) at once: {t['decisions_per_s']:.2f} decisions/s, "
              f"p50 {t['p50_s'] * 1000:.0f} ms, p95 {t['p95_s'] * 1000:.0f} ms "
              f"({t['decisions']} in {t['seconds']:.0f} s)")

