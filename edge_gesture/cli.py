"""`edge-gesture`: run the daemon, check a config, list devices, evaluate and benchmark."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

import structlog

from edge_gesture import __version__
from edge_gesture.config import Config, ConfigError, find_config_path, load_config
from edge_gesture.errors import StartupError, UsageError
from edge_gesture.logsetup import configure_logging


def _load(args) -> Config:
    return load_config(getattr(args, "config", None))


def cmd_check_config(args) -> int:
    from edge_gesture import preflight

    if args.path and args.config and args.path != args.config:
        print(f"error: check-config: two config files given ({args.path} and --config "
              f"{args.config}); give one", file=sys.stderr)
        return 2
    path = find_config_path(args.path or args.config)
    try:
        cfg, problems, unusable = load_config(path), [], frozenset()
    except ConfigError as e:
        if e.partial is None:  # not read, not TOML: nothing more to look at
            raise
        # The fields that passed are checked on, so one run lists everything to fix.
        cfg, problems, unusable = e.partial, e.problems, e.unusable
    found = preflight.check(cfg, deep=args.deep, unusable=unusable)
    problems = problems + found.problems
    for note in cfg.notes + found.notes:
        print(f"note: {note}", file=sys.stderr)
    if problems:
        for problem in problems:
            print("error: " + problem.replace("\n", "\n    "), file=sys.stderr)
        print(f"{path}: {len(problems)} problem(s)", file=sys.stderr)
        return 2
    print(f"{path}: ok")
    if args.show:
        # mode="json" renders secrets masked, so the output is safe to paste into a bug report.
        print(json.dumps(cfg.model_dump(mode="json"), indent=2))
    return 0


def cmd_run(args) -> int:
    from edge_gesture.logsetup import configure_logging

    cfg = _load(args)
    if args.source:
        cfg = cfg.model_copy(update={"capture": cfg.capture.model_copy(update={"source": args.source})})
    configure_logging(cfg.logging.level, cfg.logging.format)
    for note in cfg.notes:
        structlog.get_logger("config").warning("config note", note=note)

    from edge_gesture.daemon import Daemon

    # A reload while the models load would otherwise kill the process (SIGHUP's default).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    daemon = Daemon(cfg, config_path=find_config_path(getattr(args, "config", None)),
                    source_override=args.source)
    handle_signals(daemon)
    code = daemon.run()
    exit_now_if_threads_left(code, daemon.threads_left_running())
    return code


def exit_now_if_threads_left(code: int, left: list[str]) -> None:
    """End the process at once when shutdown left a thread running (a VLM load: a first
    GPU/NPU compile takes a minute; a camera stuck in its driver). The interpreter's normal
    exit would tear OpenVINO or OpenCV down under that thread, and a call of theirs returning
    meanwhile aborts the process ("terminate called without an active exception": SIGABRT, a
    failed unit and a core dump) instead of exiting `code`. Everything worth keeping (offline,
    the log, the dataset) is done by now; atexit handlers are skipped."""
    if not left:
        return
    import structlog

    structlog.get_logger("daemon").info("exiting without waiting for", threads=left)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def handle_signals(daemon) -> None:
    """SIGTERM/SIGINT stop the daemon, SIGHUP reloads its config. The handlers only set flags:
    a handler runs on the main thread between two of its bytecodes, so one that logged could
    wait forever for the log writer's lock that the interrupted code holds."""
    def stop(signum, _frame):
        daemon.request_stop("signal", signal=signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    # SIGHUP (systemctl reload): re-read the config at the next frame-loop turn.
    signal.signal(signal.SIGHUP, lambda _signum, _frame: daemon.service.request_reload())


def cmd_devices(args) -> int:
    import onnxruntime
    import openvino as ov

    from edge_gesture.capture import list_cameras

    core = ov.Core()
    devices = []
    for name in core.available_devices:
        try:
            full = core.get_property(name, "FULL_DEVICE_NAME")
        except Exception:  # a plugin that lists a device but cannot describe it
            full = ""
        devices.append({"device": name, "name": full})
    report = {
        "openvino": {"version": ov.__version__, "devices": devices},
        "onnxruntime": {"version": onnxruntime.__version__,
                        "providers": onnxruntime.get_available_providers()},
        "cameras": list_cameras(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"OpenVINO {report['openvino']['version']}:")
    for d in devices:
        print(f"  {d['device']:<8} {d['name']}")
    print(f"ONNX Runtime {report['onnxruntime']['version']}: "
          + ", ".join(report["onnxruntime"]["providers"]))
    print("Cameras:" if report["cameras"] else "Cameras: none found (use --source testcard or a file)")
    for c in report["cameras"]:
        print(f"  {c['device']}  {c['width']}x{c['height']} @ {c['fps']:.0f} fps")
    return 0


def cmd_eval(args) -> int:
    from edge_gesture.evaluate import main as eval_main

    return eval_main(args)


def cmd_bench_pipeline(args) -> int:
    from edge_gesture.bench_pipeline import main as bench_main

    return bench_main(args)


def cmd_bench_range(args) -> int:
    from edge_gesture.bench_range import main as bench_main

    return bench_main(args)


def cmd_bench_mqtt(args) -> int:
    from edge_gesture.publish.bench import main as bench_main

    return bench_main(args)


def cmd_bench_vlm(args) -> int:
    from edge_gesture.vlm.bench import main as bench_main

    return bench_main(args)


def cmd_bench_web(args) -> int:
    from edge_gesture.bench_web import main as bench_main

    return bench_main(args)


def cmd_discovery(args) -> int:
    from edge_gesture.publish import Topics
    from edge_gesture.publish.discovery import (
        discovery_payload,
        discovery_topic,
        remove_discovery,
    )

    cfg = _load(args)
    if not args.remove:
        print(discovery_topic(cfg))
        print(json.dumps(discovery_payload(cfg, Topics.for_config(cfg)), indent=2))
        return 0
    topic = remove_discovery(cfg)
    print(f"cleared {topic}: Home Assistant removes the device and its entities")
    if cfg.mqtt.discovery.enabled:
        print("note: a running daemon announces it again on its next connection; stop it or set "
              "mqtt.discovery.enabled = false first", file=sys.stderr)
    return 0


def cmd_serving_repository(args) -> int:
    from edge_gesture.bundle import BundleError
    from edge_gesture.vlm.serving import write_ovms_repository

    try:
        written = write_ovms_repository(Path(args.bundle), Path(args.out), name=args.name,
                                        version=args.model_version, device=args.device)
    except (BundleError, FileExistsError, ValueError) as e:
        raise UsageError(str(e)) from None
    if args.json:
        print(json.dumps(written, indent=2))
        return 0
    i, o = written["input"], written["output"]
    print(f"wrote {written['model']} and {written['config']}")
    print(f"model {written['name']} version {written['version']}: {i['name']} {i['datatype']} "
          f"{i['shape']} -> {o['name']} {o['datatype']} {o['shape']}")
    print(f"bundle manifest sha256 {written['manifest_sha256']} (in the model's rt_info)")
    print(f"serve it: docker run -d --rm -v {Path(args.out).resolve()}:/models:ro -p 9000:9000 "
          "-p 8000:8000 openvino/model_server:latest --config_path /models/config.json "
          "--port 9000 --rest_port 8000")
    return 0


def cmd_serve(args) -> int:
    try:
        from edge_gesture_serve.cli import main as serve_main
    except ImportError as e:
        if e.name is None or not e.name.startswith(("edge_gesture_serve", "kserve")):
            raise
        raise UsageError(
            "edge-gesture serve needs the serve distribution (KServe's model server), which "
            "has its own venv because its pins differ from the daemon's: script/setup --serve, "
            "then .venv-serve/bin/edge-gesture serve --bundle DIR") from None
    rest = args.serve_args
    return serve_main(rest[1:] if rest[:1] == ["--"] else rest)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-gesture", description=__doc__)
    p.add_argument("--version", action="version", version=f"edge-gesture {__version__}")
    p.add_argument("--config", "-c", help="config file (default: $EDGE_GESTURE_CONFIG, "
                   "/etc/edge-gesture/config.toml, ./config.toml)")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run the daemon")
    r.add_argument("--config", "-c", default=argparse.SUPPRESS)
    r.add_argument("--source", help="override capture.source (camera index, /dev/videoN, file, "
                   "URL or testcard)")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("check-config", help="validate a config file and exit")
    c.add_argument("path", nargs="?", help="config file to check")
    c.add_argument("--config", "-c", default=argparse.SUPPRESS)
    c.add_argument("--deep", action="store_true",
                   help="also check the sha256 of every file of the VLM bundle (reads them all)")
    c.add_argument("--show", action="store_true", help="print the effective settings (secrets masked)")
    c.set_defaults(func=cmd_check_config)

    from edge_gesture import install

    i = sub.add_parser("install-service", help="install the systemd unit, /etc/edge-gesture "
                       "and the state/cache folders, then print the next commands")
    install.add_arguments(i)
    i.set_defaults(func=install.run)

    d = sub.add_parser("devices", help="list OpenVINO devices and cameras")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_devices)

    e = sub.add_parser("eval", help="accuracy on a folder of labelled photos (<label>/<image>), or "
                       "gesture events on labelled video clips (<clip>.labels.csv or .json beside each)")
    e.add_argument("dir", metavar="PATH", help="folder with one sub-folder per label (a landmark "
                   "gesture, or 'none': no hand), or a video file or a folder of them, each with "
                   "its labels file")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--config", "-c", default=argparse.SUPPRESS)
    e.set_defaults(func=cmd_eval)

    b = sub.add_parser("bench", help="benchmarks that print figures")
    bsub = b.add_subparsers(dest="bench", required=True)
    bp = bsub.add_parser("pipeline", help="frames/s, per-stage and end-to-end latency, peak RSS")
    bp.add_argument("--source", required=True, help="video file (or any capture source)")
    bp.add_argument("--json", action="store_true")
    bp.add_argument("--repeats", type=int, default=3, help="runs over the source; medians reported")
    from edge_gesture.bench_pipeline import LIVE_RUN_S

    bp.add_argument("--seconds", type=float,
                    help="stop each run after this long (0: at the end of the source; default: a "
                    f"file to its end, {LIVE_RUN_S:g} s for a camera, stream or testcard); two runs "
                    "a repeat")
    bp.add_argument("--backend", choices=["openvino", "mediapipe", "both"],
                    help="override hands.backend; 'both' runs each and prints the frames/s ratio")
    bp.add_argument("--vlm", metavar="BUNDLE",
                    help="run the VLM beside the frame loop on this bundle (as with [vlm] on) and "
                    "report its decision latency inside the daemon against standalone")
    bp.add_argument("--config", "-c", default=argparse.SUPPRESS)
    bp.set_defaults(func=cmd_bench_pipeline)
    br = bsub.add_parser("range", help="accuracy, hands found and events on no-hand photos per "
                         "distance (folders f0.110/, f0.055/, ... from make_range.py)")
    br.add_argument("dir", help="folder with one f<hand share>/ sub-folder per distance")
    br.add_argument("--backend", choices=["openvino", "mediapipe"],
                    help="override hands.backend (compare the two on the same photos)")
    br.add_argument("--json", action="store_true")
    br.add_argument("--config", "-c", default=argparse.SUPPRESS)
    br.set_defaults(func=cmd_bench_range)
    bm = bsub.add_parser("mqtt", help="a burst of events while frames are processed: losses, "
                         "frame-loop stall, decision-to-delivery latency")
    bm.add_argument("--source", default="testcard", help="frames to process during the burst")
    bm.add_argument("--events", type=int, default=1000, help="events in the one-second burst")
    bm.add_argument("--repeats", type=int, default=3, help="bursts; medians reported")
    bm.add_argument("--baseline", type=float, default=2.0,
                    help="seconds of frames without publishing before each burst")
    bm.add_argument("--broker", help="HOST:PORT of a broker to use (default: start a private "
                    "mosquitto on a free port)")
    bm.add_argument("--json", action="store_true")
    bm.add_argument("--config", "-c", default=argparse.SUPPRESS)
    bm.set_defaults(func=cmd_bench_mqtt)
    bv = bsub.add_parser("vlm", help="VLM decision latency crop->label (p50/p95), optionally "
                         "against optimum-intel's generate, start-up time and RSS")
    from edge_gesture.vlm.bench import add_arguments as vlm_bench_arguments

    vlm_bench_arguments(bv)
    bv.set_defaults(func=cmd_bench_vlm)
    bw = bsub.add_parser(
        "web", help="what viewers of the live page cost: processed frames/s and end-to-end "
        "latency with no viewer and with N, and how soon an event reaches the page",
        description="Runs the daemon with [web] on (127.0.0.1, a free port, no token) over the "
        "source paced in real time as a camera delivers it (a file at its own frame rate, newest "
        "frame wins; each run starts the file over with a fresh scene), once with nobody "
        "connected and once with N clients reading /stream.mjpg plus one on /ws, alternating "
        "(ABBA), and reports medians. Paced, not as fast as possible: frames/s is what a user "
        "gets, and both conditions see the same frames at the same times; a pipeline with time "
        "to spare hides the viewers' cost in it, so the process's CPU use is reported too, and "
        "other processes' during each run (a shared machine's noise). The "
        "clients run in this process, as a browser on the same machine would share its CPU, and "
        "read its clock: an event's time to the page runs on time.monotonic() from the end of "
        "the publish calls for its frame (frame read_at plus the daemon's end-to-end time) to "
        "the WebSocket message's arrival, matched by the event JSON's run_id and sequence.")
    bw.add_argument("--source", required=True, help="video file (or any capture source)")
    bw.add_argument("--viewers", type=int, default=5, help="clients reading /stream.mjpg")
    bw.add_argument("--repeats", type=int, default=3,
                    help="runs of each condition, alternated; medians reported")
    bw.add_argument("--seconds", type=float,
                    help="length of each run, a file looping to fill it (default: a file once "
                    f"to its end, {LIVE_RUN_S:g} s for a camera, stream or testcard)")
    bw.add_argument("--json", action="store_true")
    bw.add_argument("--config", "-c", default=argparse.SUPPRESS)
    bw.set_defaults(func=cmd_bench_web)

    dc = sub.add_parser("discovery", help="show the Home Assistant discovery message, or "
                        "--remove it from the broker")
    dc.add_argument("--remove", action="store_true",
                    help="clear the retained announcement: Home Assistant deletes the device")
    dc.add_argument("--config", "-c", default=argparse.SUPPRESS)
    dc.set_defaults(func=cmd_discovery)

    sr = sub.add_parser("serving-repository", help="write an OpenVINO Model Server repository "
                        "with the bundle's vision encoder (uint8 pixels in, image features out)")
    sr.add_argument("bundle", help="the model bundle (edge-gesture-export's folder)")
    sr.add_argument("out", help="the repository folder (created; its config.json is updated)")
    sr.add_argument("--name", default="edge-gesture-vision", help="the served model's name")
    sr.add_argument("--model-version", type=int, default=1,
                    help="the version folder (a positive integer; an existing one is refused)")
    sr.add_argument("--device", default="CPU",
                    help="target_device in config.json: CPU, GPU, NPU or AUTO on the server")
    sr.add_argument("--json", action="store_true")
    sr.set_defaults(func=cmd_serving_repository)

    sv = sub.add_parser("serve", add_help=False,
                        help="serve a bundle's VLM to other machines' daemons over the Open "
                        "Inference Protocol (KServe's model server; `serve --help` for options)")
    sv.add_argument("serve_args", nargs=argparse.REMAINDER)
    sv.set_defaults(func=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        # Its options are the serve distribution's own, parsed there (argparse's REMAINDER
        # does not pass on options that start with --).
        argv = ["serve", "--", *argv[1:]]
    args = build_parser().parse_args(argv)
    # Logs go to stderr from the start, so a --json command's stdout is its JSON alone (structlog's
    # own default prints to stdout); `run` reconfigures from its config file.
    configure_logging()
    try:
        return args.func(args)
    except (ConfigError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except StartupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ImportError as e:
        if e.name != "cv2":
            raise
        # Plain `pip install` leaves mediapipe's desktop OpenCV owning cv2, which needs libGL.
        print(f"error: OpenCV cannot load ({e}): install libGL (apt install libgl1 libglib2.0-0) "
              "or swap in the headless build: pip uninstall -y opencv-contrib-python && pip install "
              "--force-reinstall --no-deps opencv-python-headless==4.11.0.86", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
