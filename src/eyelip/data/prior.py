"""Landmark priors: where a pretrained face mesh puts the eyes and lips, as extra input channels.

With ``resize.prior: facemesh`` every model input carries two channels after R, G, B: each pixel's
coverage (0-255) by the two eye outlines and by the lip ring (outer lip outline minus the inner
one) of MediaPipe Face Mesh's 478 landmarks. The mesh runs on the photo at its full resolution
(its own detector finds and crops the face); the outlines are filled at 4x the input size and
box-averaged, the same coverage rule as the masks. A photo in which no face is found gets all-zero
prior channels, and the U-Net falls back on the pixels alone; :class:`NoFaceWarning` names the
photo. ``facemesh_flip`` also runs the mesh on the mirrored photo and averages the two coverages:
the mesh's errors are not mirror-symmetric, so the average is steadier, for one more mesh run per
photo (``benchmarks/prior.py``).

Why: the outlines alone score below the U-Net against the mini set's ground truth, but their errors
are unlike the U-Net's; as input channels they lifted test IoU on real faces (docs/experiments.md).
The mesh is a pretrained model installed from PyPI (``mediapipe==0.10.14``, the last release whose
wheel carries the face models; later ones download them at run time). eyelip's own network is
still trained only on the data given.

mediapipe is the optional extra ``eyelip[prior]`` (it brings a second ML stack, and has no wheels
past Python 3.12): :func:`require` lets whatever computes a prior refuse at once without it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from eyelip.errors import EyelipError

# the names of the channels each prior adds
CHANNELS = {"none": (), "facemesh": ("eyes", "lips"), "facemesh_flip": ("eyes", "lips")}
PRIORS = tuple(CHANNELS)
SUPERSAMPLE = 4  # outlines are filled at this multiple of the input size, then box-averaged

# Face Mesh landmark indices of closed outlines, in drawing order (mediapipe's FACEMESH_* edges).
_LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
_RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
_LIPS_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
_LIPS_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)

EXTRA = "pip install 'eyelip[prior]'"  # how to install the face mesh (mediapipe)

_local = threading.local()  # one mesh graph per thread: a graph is not safe to share


class NoFaceWarning(UserWarning):
    """The face mesh found no face in a photo: its prior channels are empty."""


def channels(kind: str) -> int:
    """Input channels a prior adds to R, G, B."""
    if kind not in CHANNELS:
        raise ValueError(f"unknown prior {kind!r}; expected one of {list(PRIORS)}")
    return len(CHANNELS[kind])


def require(kind: str, who: str) -> None:
    """Refuse at once (before any photo is read) a prior that needs mediapipe when it is not installed;
    ``who`` names what asked for the prior (a params key, a model file)."""
    if channels(kind) and importlib.util.find_spec("mediapipe") is None:
        raise EyelipError(
            f"{who}: the face-mesh prior {kind!r} needs mediapipe, which is not installed; "
            f"{EXTRA} (Python 3.11 or 3.12)"
        )


def landmarks(rgb: np.ndarray) -> np.ndarray | None:
    """(478, 2) landmark x, y in [0, 1] of the image's most prominent face, or None without one."""
    rgb = np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)
    mesh: Any = getattr(_local, "mesh", None)
    # mediapipe's C++ runtime logs set-up notes (TFLite delegate, absl) to the process's stderr when
    # a graph starts and first runs, once per worker; they say nothing to act on.
    with _quiet_stderr() if mesh is None else contextlib.nullcontext():
        if mesh is None:
            # mediapipe 0.10.14 calls a protobuf API that protobuf 4.25 deprecates, on every image.
            warnings.filterwarnings("ignore", message="SymbolDatabase.GetPrototype", category=UserWarning)
            try:
                from mediapipe.python.solutions.face_mesh import FaceMesh  # heavy import, only when used
            except ImportError as exc:  # callers check first (require); this names the fix should one not
                raise EyelipError(f"the face-mesh prior needs mediapipe ({exc}); {EXTRA}") from exc

            # refine_landmarks runs the attention model, which refines the eye and lip outlines.
            mesh = _local.mesh = FaceMesh(
                static_image_mode=True, max_num_faces=1, refine_landmarks=True, min_detection_confidence=0.3
            )
        found = mesh.process(rgb).multi_face_landmarks
    if not found:
        return None
    return np.array([(p.x, p.y) for p in found[0].landmark], dtype=np.float32)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 (where C++ libraries write) to /dev/null for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def outline_coverage(points: np.ndarray | None, size: int) -> np.ndarray:
    """uint8 (size, size, 2): coverage of each pixel by the eye outlines and by the lip ring."""
    if points is None:
        return np.zeros((size, size, 2), dtype=np.uint8)
    fine = size * SUPERSAMPLE

    def fill(*outlines: tuple[int, ...]) -> np.ndarray:
        canvas = Image.new("L", (fine, fine), 0)
        draw = ImageDraw.Draw(canvas)
        for outline in outlines:
            draw.polygon([(float(x) * fine, float(y) * fine) for x, y in points[list(outline)]], fill=255)
        return np.asarray(canvas, dtype=np.float32)

    eyes = fill(_LEFT_EYE, _RIGHT_EYE)
    lips = np.clip(fill(_LIPS_OUTER) - fill(_LIPS_INNER), 0, 255)
    stacked = np.stack([eyes, lips], axis=-1).reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 2).mean((1, 3))
    return stacked.round().astype(np.uint8)


def compute(kind: str, rgb: np.ndarray, size: int, where: str = "photo") -> np.ndarray:
    """uint8 (size, size, channels(kind)) prior of a full-resolution RGB photo, for a kind that adds
    channels (``"none"`` adds none: callers skip it, and the photo's full decode with it). Without a
    face in it the channels are all zero, and a :class:`NoFaceWarning` names ``where``."""
    if not CHANNELS.get(kind):
        raise ValueError(
            f"prior {kind!r} has no channels to compute; expected one of "
            f"{[name for name, added in CHANNELS.items() if added]}"
        )
    views = [landmarks(rgb)]
    if kind == "facemesh_flip":
        mirrored = landmarks(np.ascontiguousarray(rgb[:, ::-1]))
        if mirrored is not None:
            mirrored[:, 0] = 1 - mirrored[:, 0]  # back to the photo's frame; the outlines are filled per side alike
        views.append(mirrored)
    found = [outline_coverage(points, size).astype(np.uint16) for points in views if points is not None]
    if not found:
        warnings.warn(
            NoFaceWarning(
                f"{where}: no face found by the face mesh; its prior channels are empty, so the "
                f"model sees the pixels alone and its mask may miss the eyes and lips"
            ),
            stacklevel=2,
        )
        return outline_coverage(None, size)
    return ((sum(found) + len(found) // 2) // len(found)).astype(np.uint8)
