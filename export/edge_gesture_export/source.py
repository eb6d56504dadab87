"""Where the checkpoint comes from: a local folder, or a Hugging Face id fetched once.

No network must never mean a hang: the hub is probed with a short timeout first, and the message
says to pass a local directory.
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from edge_gesture_export.errors import ExportError

DEFAULT_MODEL = "HuggingFaceTB/SmolVLM-256M-Instruct"
#: model_type -> what it is; SmolVLM v1 checkpoints say idefics3, SmolVLM2 ones smolvlm.
SUPPORTED_MODEL_TYPES = {"idefics3": "Idefics3 / SmolVLM", "smolvlm": "SmolVLM2"}
_FILES = ["*.json", "*.safetensors", "*.txt", "*.jinja", "*.model"]
PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Source:
    path: Path  # local folder with config.json, weights, processor and tokenizer files
    model: str  # as the user named it: hub id or directory
    revision: str | None  # the hub commit the files came from; None for a local folder
    model_type: str
    architecture: str


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def _reachable(url: str, timeout: float) -> str | None:
    """None when a TCP connection to url's host opens within timeout, else the reason."""
    u = urlparse(url)
    host, port = u.hostname or "", u.port or (443 if u.scheme == "https" else 80)
    result: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(None)
        except OSError as e:
            result.append(e.strerror or str(e))

    # getaddrinfo has no timeout of its own; a daemon thread bounds the whole probe.
    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 1)
    return result[0] if result else f"no answer within {timeout:.0f} s"


def _offline_message(model: str, why: str) -> str:
    return (
        f"cannot fetch {model!r} from the Hugging Face Hub: {why}. On a machine with network, "
        f"download it (`hf download {model}` or `git clone` of the model repository), then pass "
        "its local directory: --model /path/to/model"
    )


def _fetch(model: str, revision: str | None) -> tuple[Path, str]:
    from huggingface_hub import constants, snapshot_download

    def cached() -> Path | None:
        try:
            return Path(
                snapshot_download(model, revision=revision, allow_patterns=_FILES, local_files_only=True)
            )
        except Exception:  # noqa: BLE001 - any miss means "not in the cache"
            return None

    if constants.HF_HUB_OFFLINE:
        path = cached()
        if path is None:
            raise ExportError(_offline_message(model, "HF_HUB_OFFLINE is set and it is not cached"))
        return path, path.name
    why = _reachable(constants.ENDPOINT, PROBE_TIMEOUT_S)
    if why is not None:
        path = cached()
        if path is None:
            raise ExportError(_offline_message(model, f"{constants.ENDPOINT} unreachable ({why})"))
        return path, path.name
    try:
        path = Path(snapshot_download(model, revision=revision, allow_patterns=_FILES))
    except Exception as e:  # noqa: BLE001 - hub errors come in many classes; the text says which
        raise ExportError(f"cannot fetch {model!r} (revision {revision or 'main'}): {e}") from None
    return path, path.name  # snapshot folders are named after the commit


def resolve(model: str, revision: str | None = None) -> Source:
    """Find the checkpoint folder and refuse anything that is not Idefics3/SmolVLM, by name."""
    local = Path(model).expanduser()
    if local.is_dir():
        if revision:
            raise ExportError(f"--revision {revision} applies to hub ids, not to the folder {local}")
        path, rev = local.resolve(), None
    elif local.exists():
        raise ExportError(f"--model {model}: not a directory")
    elif _looks_like_path(model):
        raise ExportError(f"--model {model}: no such directory")
    else:
        path, rev = _fetch(model, revision)
    cfg_path = path / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"{cfg_path}: missing; is {path} a Hugging Face model folder?") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportError(f"{cfg_path}: cannot read: {e}") from None
    model_type = cfg.get("model_type", "")
    arch = ", ".join(cfg.get("architectures") or []) or "(none given)"
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ExportError(
            f"{model}: architecture {arch} (model_type {model_type or 'missing'!r}) is not "
            "supported: edge-gesture-export exports Idefics3/SmolVLM vision-language models "
            f"(model_type {' or '.join(SUPPORTED_MODEL_TYPES)}) only"
        )
    return Source(path=path, model=model, revision=rev, model_type=model_type, architecture=arch)
