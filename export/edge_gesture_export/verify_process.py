"""The verification's run of the bundle, in a new process that has converted nothing.

In the process that has just converted the model (PyTorch tracing, NNCF), OpenVINO's CPU plugin
now and then segfaults as the verification's infer requests are destroyed: CI died so, and
`python -m tests.ov_teardown` shows it here, never in a process that only loads the bundle, as
the daemon does. The reference goes to the child and the logits come back in .npz files.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from edge_gesture.bundle import load_bundle_manifest
from edge_gesture_export.errors import ExportError
from edge_gesture_export.verify import Reference, run_bundle

_REFUSED = 3  # the child's exit code for an ExportError; its message is on stderr


def run_bundle_in_fresh_process(root: Path, ref: Reference, work: Path) -> list[np.ndarray]:
    """verify.run_bundle on root's bundle, run by a new Python process that loads and checks
    the manifest itself; work is a scratch folder."""
    work.mkdir(parents=True, exist_ok=True)
    ref_file, out_file = work / "reference.npz", work / "bundle-logits.npz"
    np.savez(ref_file, prompt=np.array(ref.prompt), input_ids=ref.input_ids,
             pixel_values=ref.pixel_values, tokens=np.array(ref.tokens, dtype=np.int64),
             logits=np.stack(ref.logits))
    r = subprocess.run(
        [sys.executable, "-m", "edge_gesture_export.verify_process", str(root), str(ref_file),
         str(out_file)],
        capture_output=True, text=True,
    )
    if r.returncode == _REFUSED:
        raise ExportError(r.stderr.strip())
    if r.returncode != 0:
        how = (f"was killed by {signal.Signals(-r.returncode).name}" if r.returncode < 0
               else f"failed: {(r.stderr.strip().splitlines() or ['no message'])[-1]}")
        raise ExportError(f"the process running {root} for the verification {how}; "
                          "the bundle is not usable as it is")
    with np.load(out_file) as z:
        got = list(z["logits"])
    if len(got) != len(ref.logits):
        raise ExportError(f"the verification process returned {len(got)} steps, not {len(ref.logits)}")
    return got


def _main(argv: list[str]) -> int:
    root, ref_file, out_file = map(Path, argv)
    with np.load(ref_file) as z:
        ref = Reference(str(z["prompt"]), z["input_ids"], z["pixel_values"],
                        [int(t) for t in z["tokens"]], list(z["logits"]))
    try:
        got = run_bundle(root, load_bundle_manifest(root), ref)
    except ExportError as e:
        print(e, file=sys.stderr)
        return _REFUSED
    np.savez(out_file, logits=np.stack(got))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
