"""The adapter on real DAVIS frames: a task id reused for another clip gets a fresh session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backend.config import Settings
from backend.eval.clicks import first_frame_clicks
from backend.eval.davis import load_sequence, read_ground_truth
from backend.eval.remote import keypoint, label_config, local_files_url
from backend.ls import rle
from backend.masks import jaccard
from model import TrackAnythingModel

DAVIS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "davis2016-val"
FRAMES = 8


def _task(name: str, task_id: int):
    seq = load_sequence(DAVIS, name, FRAMES)
    gt = read_ground_truth(seq)
    (click,) = first_frame_clicks(gt[0], [1]).values()
    h, w = gt[0].shape
    body = {
        "tasks": [{"id": task_id, "data": {"frames": [local_files_url(p, DAVIS) for p in seq.images]}}],
        "label_config": label_config(1),
        "params": {"context": {"result": [keypoint(click, 0, "object 1", (w, h), 0)]}},
    }  # fmt: skip
    return body, [g == 1 for g in gt]


def _mean_j(answer, gt) -> float:
    h, w = gt[0].shape
    masks = [np.zeros((h, w), bool) for _ in gt]
    for r in answer["result"]:
        masks[r["item_index"]] = rle.decode(r["value"]["rle"], h, w)
    return float(np.mean([jaccard(g, m) for g, m in zip(gt, masks, strict=True)]))


def test_reused_task_id_with_other_frames_is_a_fresh_task(tmp_path):
    if not DAVIS.is_dir():
        pytest.fail(f"{DAVIS} is missing (../shared beside the checkout)")

    def model():
        settings = Settings(local_files_root=DAVIS, model_dir=tmp_path / "md", engine="classical")
        return TrackAnythingModel(settings)

    first, _ = _task("blackswan", 7)
    second, gt = _task("cows", 7)  # the same task id, another clip
    fresh = _mean_j(model().predict(_task("cows", 8)[0])["results"][0], gt)
    server = model()
    server.predict(first)
    reused = _mean_j(server.predict(second)["results"][0], gt)
    assert fresh > 0.6, fresh
    assert reused == pytest.approx(fresh, abs=1e-9), (fresh, reused)
