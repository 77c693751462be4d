"""The SAM 2 engine behind /predict on real DAVIS frames (random weights: the masks mean nothing;
what is tested is the path — clicks, a correction, a box, two objects, backward propagation —
and that a broken checkpoint is a 503, never another engine)."""

from __future__ import annotations

import shutil

import pytest

from backend.config import Settings
from backend.sam2_engine import tracker as tracker_module
from backend.server.app import create_app
from model import TrackAnythingModel
from tests.conftest import DAVIS, TWO_LABEL_CONFIG
from tests.sam2_engine.conftest import SIDE

FRAMES = 5
BOX_CONFIG = TWO_LABEL_CONFIG.replace(
    "</View>",
    '<RectangleLabels name="box" toName="image" smart="true"><Label value="A"/>'
    '<Label value="B"/></RectangleLabels></View>',
)


def kp(x, y, frame, label="A", positive=True):
    return {"type": "keypointlabels", "from_name": "kp", "to_name": "image", "item_index": frame,
            "original_width": 854, "original_height": 480, "is_positive": positive,
            "value": {"x": x, "y": y, "keypointlabels": [label]}}  # fmt: skip


def body(task_id, urls, *regions, config=TWO_LABEL_CONFIG):
    return {"tasks": [{"id": task_id, "data": {"frames": urls}}], "label_config": config,
            "params": {"context": {"result": list(regions)}}}  # fmt: skip


@pytest.fixture
def served(tmp_path, sam2_checkpoint, monkeypatch):
    src = DAVIS / "JPEGImages" / "480p" / "car-roundabout"
    media = tmp_path / "media" / "cr"
    media.mkdir(parents=True)
    urls = []
    for name in sorted(p.name for p in src.glob("*.jpg"))[:FRAMES]:
        shutil.copy(src / name, media / name)
        urls.append(f"/data/local-files/?d=cr/{name}")
    runs: list[tuple[int, bool, list[int]]] = []
    propagate = tracker_module.Sam2Session.propagate

    def recording(self, start, *, reverse=False, stop=None):
        run = (start, reverse, [])
        runs.append(run)
        for tf in propagate(self, start, reverse=reverse, stop=stop):
            run[2].append(tf.index)
            yield tf

    monkeypatch.setattr(tracker_module.Sam2Session, "propagate", recording)
    settings = Settings(
        engine="sam2",
        sam2_checkpoint=sam2_checkpoint,
        sam2_image_size=SIDE,
        local_files_root=tmp_path / "media",
        model_dir=tmp_path / "md",
        predict_budget_s=300,
    )
    model = TrackAnythingModel(settings)
    return create_app(settings, model, metrics=model.metrics).test_client(), urls, runs


def answer(client, request):
    resp = client.post("/predict", json=request)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["results"][0]["result"]


def by_frame(regions, label):
    return {
        r["item_index"]: r["value"]["rle"] for r in regions if r["value"]["brushlabels"] == [label]
    }


def test_clicks_correction_box_two_objects_backward(served):
    client, urls, runs = served
    health = client.get("/health").get_json()
    assert (health["status"], health["engine"], health["device"]) == ("UP", "sam2", "cpu")
    assert health["checkpoints"]["sam2"] is True

    click = kp(50, 60, 0)
    first = answer(client, body(1, urls, click))
    assert runs[-1][:2] == (0, False) and runs[-1][2] == list(range(FRAMES))
    a_first = by_frame(first, "A")
    assert set(a_first) <= set(range(FRAMES)) and 0 in a_first

    # a correction on frame 2: frames 2.. are propagated again, frame 1 spliced with a
    # backward pass from frame 2, the keyframe 0 kept as it was
    runs.clear()
    corrected = answer(client, body(1, urls, click, kp(20, 20, 2, positive=False)))
    assert [(s, r) for s, r, _ in runs] == [(2, False), (2, True)]
    assert runs[0][2] == [2, 3, 4] and runs[1][2] == [2, 1]
    assert by_frame(corrected, "A").get(0) == a_first.get(0)

    # a second object whose first click is on frame 3: tracked backward to frame 0 as well
    runs.clear()
    second = answer(client, body(1, urls, click, kp(20, 20, 2, positive=False), kp(70, 40, 3, "B")))
    assert (3, True) in [(s, r) for s, r, _ in runs]
    backward = next(idx for s, r, idx in runs if r)
    assert backward == [3, 2, 1, 0]
    assert set(by_frame(second, "B")) <= set(range(FRAMES))

    # a box as the only prompt, on another task
    runs.clear()
    box = {"type": "rectanglelabels", "from_name": "box", "to_name": "image", "item_index": 0,
           "original_width": 854, "original_height": 480,
           "value": {"x": 30, "y": 40, "width": 40, "height": 40, "rectanglelabels": ["A"]}}  # fmt: skip
    boxed = answer(client, body(2, urls, box, config=BOX_CONFIG))
    assert runs and runs[0][2] == list(range(FRAMES))
    assert set(by_frame(boxed, "A")) <= set(range(FRAMES))


def test_a_broken_checkpoint_is_503_not_another_engine(tmp_path):
    bad = tmp_path / "sam2.1_hiera_tiny.pt"
    bad.write_bytes(b"\x00" * 64)
    settings = Settings(engine="auto", sam2_checkpoint=bad, model_dir=tmp_path / "md")
    model = TrackAnythingModel(settings)
    client = create_app(settings, model, metrics=model.metrics).test_client()
    health = client.get("/health")
    assert health.status_code == 503
    assert health.get_json()["engine"] == "sam2" and "SAM2_CHECKPOINT" in health.get_json()["error"]
    resp = client.post("/predict", json=body(1, ["/data/local-files/?d=x/a.jpg"], kp(5, 5, 0)))
    assert resp.status_code == 503 and "SAM2_CHECKPOINT" in str(resp.get_json())
