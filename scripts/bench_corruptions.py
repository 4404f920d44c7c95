"""Corruption speed vs the reference `imagecorruptions` 1.1.2, side by side on one core.

The reference is not a project dependency; install it apart, e.g.

    pip install --no-deps --target /tmp/imagecorruptions-1.1.2 imagecorruptions==1.1.2
    python scripts/bench_corruptions.py --reference-path /tmp/imagecorruptions-1.1.2

(its own dependencies numpy, scipy, scikit-image, opencv and pillow are already
ours). 1.1.2 predates NumPy 2 and scikit-image 0.25, so a few shims are
applied at import time here (never by editing its files). Writes
scripts/results/corruptions.json (seconds per 224×224 image, mean over
severities 1..5, best of --repeats) and scripts/results/corruptions_grid.png
(rows = corruptions, columns = clean + severities 1..5) to look at.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
import warnings  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stages.corruptions import CORRUPTIONS, corrupt  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SIDE = 224


def load_reference(path: str | None) -> types.ModuleType:
    """Import imagecorruptions 1.1.2 with the shims it needs on current NumPy / scikit-image."""
    if path:
        sys.path.insert(0, path)
    if not hasattr(np, "float_"):
        np.float_ = np.float64  # removed in NumPy 2; used by its plasma fractal
    if "pkg_resources" not in sys.modules:  # gone from recent setuptools; only resource_filename is used
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda package, name: str(
            Path(importlib.util.find_spec(package).origin).parent / name)
        sys.modules["pkg_resources"] = shim
    import skimage.filters

    gaussian = skimage.filters.gaussian

    def gaussian_multichannel(image, *args, multichannel=None, **kwargs):
        if multichannel:  # `multichannel=` was removed in scikit-image 0.21
            kwargs.setdefault("channel_axis", -1)
        return gaussian(image, *args, **kwargs)

    skimage.filters.gaussian = gaussian_multichannel
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import imagecorruptions

    return imagecorruptions


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(reference, image: np.ndarray, repeats: int) -> dict[str, dict[str, float]]:
    """Per corruption: seconds per image for both, averaged over severities 1..5."""
    rows = {}
    for name in CORRUPTIONS:
        ours, theirs = [], []
        for severity in range(1, 6):
            np.random.seed(severity)  # the reference draws from NumPy's global generator
            reference_call = partial(reference.corrupt, image, severity, corruption_name=name)
            theirs.append(best_time(reference_call, repeats))
            ours.append(best_time(partial(corrupt, image, name, severity, seed=severity), repeats))
        rows[name] = {"shiftforge_s": float(np.mean(ours)), "reference_s": float(np.mean(theirs)),
                      "speedup": float(np.mean(theirs) / np.mean(ours))}
        row = rows[name]
        print(f"{name:18s} ours {row['shiftforge_s'] * 1e3:8.2f} ms   "
              f"reference {row['reference_s'] * 1e3:9.2f} ms   ×{row['speedup']:.1f}", flush=True)
    return rows


def contact_sheet(image: np.ndarray, cell: int = 112) -> np.ndarray:
    """Rows = corruptions, columns = clean + severities 1..5, labelled."""
    label_width = 150
    rows = []
    for name in CORRUPTIONS:
        cells = [image] + [corrupt(image, name, s, seed=0) for s in range(1, 6)]
        thumbs = [cv2.resize(c, (cell, cell), interpolation=cv2.INTER_AREA) for c in cells]
        strip = np.concatenate(thumbs, axis=1)
        label = np.full((cell, label_width, 3), 255, np.uint8)
        cv2.putText(label, name, (4, cell // 2 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
        rows.append(np.concatenate([label, strip], axis=1))
    return np.concatenate(rows, axis=0)


def test_image() -> np.ndarray:
    import skimage.data

    return cv2.resize(skimage.data.astronaut(), (SIDE, SIDE), interpolation=cv2.INTER_AREA)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-path", help="folder holding the imagecorruptions 1.1.2 package")
    parser.add_argument("--repeats", type=int, default=3,
                        help="best of this many runs per severity (default 3)")
    args = parser.parse_args()

    cv2.setNumThreads(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    load_before = os.getloadavg()  # shared machine: figures taken under load are suspect
    reference = load_reference(args.reference_path)
    image = test_image()
    rows = measure(reference, image, args.repeats)

    ours = sum(r["shiftforge_s"] for r in rows.values())
    theirs = sum(r["reference_s"] for r in rows.values())
    slowest = min(rows, key=lambda n: rows[n]["speedup"])
    summary = {
        "image": f"skimage.data.astronaut resized to {SIDE}x{SIDE}, uint8 RGB",
        "method": f"seconds per image, best of {args.repeats} per severity, mean over severities 1..5; "
                  "one core (cv2.setNumThreads(1), BLAS/OpenMP threads 1, pinned to one CPU)",
        "reference": f"imagecorruptions {getattr(reference, '__version__', '1.1.2')} with import-time shims",
        "machine": {"python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__,
                    "processor": platform.processor() or platform.machine(),
                    "load_average": {"before": load_before, "after": os.getloadavg()}},
        "corruptions": rows,
        "total": {"shiftforge_s": ours, "reference_s": theirs, "speedup": theirs / ours},
        "slowest_speedup": {"corruption": slowest, "speedup": rows[slowest]["speedup"]},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "corruptions.json").write_text(json.dumps(summary, indent=2) + "\n")
    cv2.imwrite(str(RESULTS / "corruptions_grid.png"), cv2.cvtColor(contact_sheet(image), cv2.COLOR_RGB2BGR))
    print(f"total: ours {ours * 1e3:.1f} ms, reference {theirs * 1e3:.1f} ms, ×{theirs / ours:.1f}; "
          f"slowest ×{rows[slowest]['speedup']:.2f} ({slowest})")


if __name__ == "__main__":
    main()
