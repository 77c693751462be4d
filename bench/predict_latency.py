"""/predict latency for a 50-frame 854×480 task (real DAVIS frames, one click).

The request goes through the whole server (Flask app, label config parsing, local-files
media, engine, brush RLE) exactly as Label Studio sends it. Prints cold (frames not yet
decoded), warm (another click, frames cached) and repeated (same click: result cache).

    python bench/predict_latency.py [--sequence blackswan] [--engine classical]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.config import Settings  # noqa: E402
from backend.demo import DAVIS_DIR as DAVIS  # noqa: E402
from backend.engine import build_engine  # noqa: E402
from backend.server.app import create_app  # noqa: E402
from model import TrackAnythingModel  # noqa: E402

CONFIG = (ROOT / "docs" / "labeling-config.xml").read_text()


def click_at_center(mask: np.ndarray) -> tuple[float, float]:
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(x) + 0.5, float(y) + 0.5


def body(n: int, w: int, h: int, x: float, y: float) -> dict:
    urls = [f"/data/local-files/?d=JPEGImages/480p/{SEQ}/{i:05d}.jpg" for i in range(n)]
    region = {
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "item_index": 0,
        "value": {"x": 100 * x / w, "y": 100 * y / h, "keypointlabels": ["Object 1"]},
        "is_positive": True,
        "from_name": "kp",
        "to_name": "image",
        "type": "keypointlabels",
    }
    return {
        "tasks": [{"id": 1, "data": {"frames": urls}}],
        "label_config": CONFIG,
        "params": {"context": {"result": [region]}},
    }


SEQ = "blackswan"


def main() -> int:
    global SEQ
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sequence", default=SEQ)
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--engine", default="classical")
    args = ap.parse_args()
    SEQ = args.sequence
    gt = cv2.imread(str(DAVIS / "Annotations/480p" / SEQ / "00000.png"), cv2.IMREAD_GRAYSCALE) > 0
    h, w = gt.shape
    x, y = click_at_center(gt)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            local_files_root=DAVIS.resolve(), model_dir=Path(tmp), predict_budget_s=95
        )
        model = TrackAnythingModel(
            settings, engine_factory=lambda: build_engine(args.engine, settings)
        )
        client = create_app(settings, model, metrics=model.metrics).test_client()
        rows = []
        for name, bx, by in (
            ("cold", x, y),
            ("warm (new click)", x + 3, y),
            ("repeat (cached)", x + 3, y),
        ):
            t0 = time.perf_counter()
            resp = client.post("/predict", json=body(args.frames, w, h, bx, by))
            elapsed = time.perf_counter() - t0
            assert resp.status_code == 200, resp.get_json()
            regions = resp.get_json()["results"][0]["result"]
            rows.append((name, elapsed, len(regions)))
        health = []
        for _ in range(200):
            t0 = time.perf_counter()
            client.get("/health")
            health.append(time.perf_counter() - t0)
        setup = []
        for _ in range(50):
            t0 = time.perf_counter()
            client.post("/setup", json={"schema": CONFIG, "project": "1.1"})
            setup.append(time.perf_counter() - t0)
    print(
        f"/health median {1000 * np.median(health):.2f} ms (max {1000 * max(health):.2f}); "
        f"/setup median {1000 * np.median(setup):.2f} ms (max {1000 * max(setup):.2f})"
    )
    print(f"/predict, {args.frames} frames {w}x{h} ({SEQ}), engine {args.engine}, 1 click")
    print(f"{'call':<18} {'seconds':>8} {'regions':>8} {'frames/s':>9}")
    for name, elapsed, n in rows:
        print(f"{name:<18} {elapsed:8.2f} {n:8d} {args.frames / elapsed:9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
