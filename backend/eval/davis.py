"""DAVIS folders: list sequences, read ground truth as label maps, write index PNGs.

Layout: ``ROOT/JPEGImages/480p/<seq>/*.jpg`` and ``ROOT/Annotations/480p/<seq>/*.png``, one
annotation per frame with the same file stem.

Ground-truth rule: a sequence whose annotation PNGs only ever hold the values {0, 255} is a
single-object (DAVIS-2016 style) sequence and 255 becomes object 1. Otherwise the PNGs are
index maps (DAVIS-2017 style, usually palette images): 0 is background, 1..k are objects and
255 is void.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from backend.frames import list_image_files
from backend.masks import write_index_png  # noqa: F401 - predictions are saved as index PNGs

log = logging.getLogger(__name__)

RESOLUTION = "480p"


class DavisError(ValueError):
    """The folder is not a usable DAVIS layout; the message says what is missing."""


@dataclass(frozen=True)
class DavisSequence:
    name: str
    images: tuple[Path, ...]
    annotations: tuple[Path, ...]

    def __len__(self) -> int:
        return len(self.images)


def image_dir(root: Path, name: str) -> Path:
    return Path(root) / "JPEGImages" / RESOLUTION / name


def annotation_dir(root: Path, name: str) -> Path:
    return Path(root) / "Annotations" / RESOLUTION / name


def list_sequences(root: str | Path) -> list[str]:
    """Sequence names with both images and annotations, sorted."""
    ann = Path(root) / "Annotations" / RESOLUTION
    if not ann.is_dir():
        raise DavisError(f"{ann}: missing (expected ROOT/Annotations/{RESOLUTION}/<sequence>)")
    names = sorted(p.name for p in ann.iterdir() if p.is_dir())
    return [n for n in names if image_dir(Path(root), n).is_dir()]


def load_sequence(root: str | Path, name: str, max_frames: int | None = None) -> DavisSequence:
    """Frame and annotation paths of one sequence (annotations must cover every frame)."""
    root = Path(root)
    img_dir, ann_dir = image_dir(root, name), annotation_dir(root, name)
    if not img_dir.is_dir() or not ann_dir.is_dir():
        raise DavisError(f"sequence {name!r}: need {img_dir} and {ann_dir}")
    images = list_image_files(img_dir)
    by_stem = {p.stem: p for p in ann_dir.glob("*.png")}
    missing = [p.name for p in images if p.stem not in by_stem]
    if missing:
        raise DavisError(f"sequence {name!r}: no annotation for {missing[:3]} (dense GT needed)")
    if max_frames is not None:
        images = images[: max(1, max_frames)]
    return DavisSequence(name, tuple(images), tuple(by_stem[p.stem] for p in images))


def read_png_values(path: Path) -> np.ndarray:
    """Raw values of an annotation PNG: palette indices for 'P', grey levels for 'L'."""
    with Image.open(path) as im:
        if im.mode not in ("P", "L", "1", "I;16", "I"):
            raise DavisError(f"{path}: mode {im.mode}, expected an index or grey PNG")
        arr = np.array(im)
    return arr.astype(np.uint8) if arr.dtype == bool else arr


def read_ground_truth(seq: DavisSequence) -> list[np.ndarray]:
    """Label maps (uint8, 0 = background, 255 = void) following the module's rule."""
    raw = [read_png_values(p) for p in seq.annotations]
    values = set()
    for arr in raw:
        values.update(np.unique(arr).tolist())
    if values <= {0, 255}:
        return [(arr == 255).astype(np.uint8) for arr in raw]
    if max(values) > 255:
        raise DavisError(f"sequence {seq.name!r}: labels above 255")
    return [arr.astype(np.uint8) for arr in raw]
