"""An image's self-check: ``docker run --rm [--gpus all] IMAGE python /app/selfcheck.py``.

Builds the engine that the container's settings select (the weights-free one, or SAM + XMem
when checkpoints are mounted and named) on the configured ``DEVICE``, then sends one click on
synthetic frames (a disc moving over a textured background) through the backend's predict
path. Exits 0 when ``DEVICE`` is usable and every frame's mask matches the disc; prints a
one-line JSON summary either way. Needs no network, no Label Studio and no media.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

FRAMES, WIDTH, HEIGHT, RADIUS = 8, 320, 240, 36
MIN_JACCARD = 0.5

log = logging.getLogger("selfcheck")


def disc(i: int) -> tuple[int, int]:
    return WIDTH // 3 + 6 * i, HEIGHT // 2


def write_frames(root: Path) -> tuple[list[str], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(
        rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8), (0, 0), 4
    )
    urls, truth = [], []
    for i in range(FRAMES):
        img = (background // 2 + 30).astype(np.uint8)
        cv2.circle(img, disc(i), RADIUS, (40, 200, 70), -1)
        cv2.imwrite(str(root / f"{i:05d}.png"), img)
        mask = np.zeros((HEIGHT, WIDTH), np.uint8)
        cv2.circle(mask, disc(i), RADIUS, 1, -1)
        urls.append(f"/data/local-files/?d={i:05d}.png")
        truth.append(mask.astype(bool))
    return urls, truth


def check_device(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"DEVICE={device} but torch {torch.__version__} sees no GPU")
        x = torch.ones(64, 64, device=device)
        if float((x @ x).sum()) != 64.0**3:
            raise RuntimeError(f"a matrix product on {device} gave a wrong answer")
        return torch.cuda.get_device_name(torch.device(device))
    return "cpu"


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from backend.config import Settings
    from backend.eval.clicks import click_at
    from backend.eval.remote import keypoint, label_config
    from backend.ls import rle
    from backend.masks import jaccard
    from model import TrackAnythingModel

    summary: dict = {"ok": False}
    try:
        settings = Settings.from_env()
        summary["device"] = settings.device
        summary["device_name"] = check_device(settings.device)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            urls, truth = write_frames(root)
            settings = dataclasses.replace(settings, local_files_root=root, model_dir=root / "md")
            model = TrackAnythingModel(settings)
            health = model.health()
            summary["engine"] = health.get("engine")
            if health.get("error"):
                raise RuntimeError(f"engine failed to load: {health['error']}")
            x, y = disc(0)
            click = click_at((y, x), True)
            body = {
                "tasks": [{"id": 1, "data": {"frames": urls}}],
                "label_config": label_config(1),
                "params": {
                    "context": {"result": [keypoint(click, 0, "object 1", (WIDTH, HEIGHT), 0)]}
                },
            }
            (prediction,) = model.predict(body)["results"]
            masks = {
                r["item_index"]: rle.decode(r["value"]["rle"], HEIGHT, WIDTH)
                for r in prediction["result"]
            }
            scores = [jaccard(t, masks[i]) if i in masks else 0.0 for i, t in enumerate(truth)]
            summary["frames"] = len(masks)
            summary["jaccard_min"] = round(min(scores), 3)
            summary["ok"] = len(masks) == FRAMES and min(scores) >= MIN_JACCARD
    except Exception as exc:  # the summary says what failed
        summary["error"] = f"{type(exc).__name__}: {exc}"
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
