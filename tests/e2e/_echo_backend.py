"""Known-answer ML backend for checking the e2e harness itself (not our model).

For an interactive call it answers one ``brushlabels`` region per frame of the task: a disk of
radius ``ECHO_RADIUS`` px centred on the first positive smart keypoint. A test can then compare
what comes back through Label Studio with the exact expected disk, which isolates harness and
protocol bugs (RLE, ``item_index``, auth, relaying) from segmentation quality.

Run: ``python _echo_backend.py --host 127.0.0.1 --port P``.
"""

from __future__ import annotations

import argparse
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np
from flask import Flask, jsonify, request
from label_studio_sdk.converter.brush import mask2rle

ECHO_RADIUS = 40
MODEL_VERSION = "echo-e2e"


def disk_mask(width: int, height: int, cx: float, cy: float, radius: float) -> np.ndarray:
    """0/255 uint8 disk around pixel-coordinate ``(cx, cy)`` (pixel centres at +0.5)."""
    yy, xx = np.mgrid[0:height, 0:width]
    inside = (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= radius**2
    return inside.astype(np.uint8) * 255


def brush_names(label_config: str) -> tuple[str, str]:
    """``(from_name, to_name)`` of the first BrushLabels control."""
    for el in ET.fromstring(label_config).iter("BrushLabels"):
        return el.get("name", "brush"), el.get("toName", "image")
    return "brush", "image"


def echo_regions(task: dict[str, Any], context: dict[str, Any], label_config: str) -> list[dict]:
    """One disk region per frame around the first positive keypoint of the context."""
    clicks = [r for r in context.get("result", []) if r.get("is_positive", True)]
    if not clicks:
        return []
    click = clicks[0]
    w, h = int(click["original_width"]), int(click["original_height"])
    cx, cy = click["value"]["x"] * w / 100.0, click["value"]["y"] * h / 100.0
    rle = mask2rle(disk_mask(w, h, cx, cy, ECHO_RADIUS))
    from_name, to_name = brush_names(label_config)
    label = click["value"]["keypointlabels"][0]
    return [
        {
            "id": f"echo_{i}",
            "from_name": from_name,
            "to_name": to_name,
            "type": "brushlabels",
            "original_width": w,
            "original_height": h,
            "image_rotation": 0,
            "item_index": i,
            "value": {"format": "rle", "rle": rle, "brushlabels": [label]},
        }
        for i in range(len(task["data"]["frames"]))
    ]


def create_app() -> Flask:
    app = Flask(__name__)

    @app.get("/health")
    def health() -> Any:
        return jsonify({"status": "UP", "model_class": "Echo"})

    @app.post("/setup")
    def setup() -> Any:
        return jsonify({"model_version": MODEL_VERSION})

    @app.post("/webhook")
    def webhook() -> Any:
        return jsonify({"status": "ignored"}), 201

    @app.post("/predict")
    def predict() -> Any:
        body = request.get_json(force=True)
        context = (body.get("params") or {}).get("context") or {}
        results = [
            {
                "result": echo_regions(task, context, body.get("label_config", "<View/>")),
                "score": 1.0,
                "model_version": MODEL_VERSION,
            }
            for task in body.get("tasks", [])
        ]
        return jsonify({"results": results, "model_version": MODEL_VERSION})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    create_app().run(host=args.host, port=args.port, threaded=True)


if __name__ == "__main__":
    main()
