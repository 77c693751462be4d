"""<Video> tasks through the adapter: boxes in, tracked VideoRectangle regions out."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from backend.config import Settings
from backend.server.app import create_app
from model import TrackAnythingModel
from tests.conftest import FIXTURES
from tests.fakes import fake_engine

CONFIG = json.loads(sorted((FIXTURES / "video").glob("01_*.json"))[0].read_text())["body"][
    "label_config"
]  # <Video framerate="25.0"> + <VideoRectangle name="box"> + <Labels>: Car, Person
W, H, N = 320, 240, 50


def square(i: int) -> tuple[int, int, int, int]:
    """The moving object's box on real frame i (x0, y0, x1, y1)."""
    return 40 + 3 * i, 60, 100 + 3 * i, 120


@pytest.fixture
def app(tmp_path):
    root = tmp_path / "media"
    (root / "v").mkdir(parents=True)
    writer = cv2.VideoWriter(
        str(root / "v" / "clip.webm"), cv2.VideoWriter_fourcc(*"VP80"), 25, (W, H)
    )
    for i in range(N):
        img = np.full((H, W, 3), 30, np.uint8)
        x0, y0, x1, y1 = square(i)
        img[y0:y1, x0:x1] = (40, 200, 60)
        writer.write(img)
    writer.release()
    settings = Settings(local_files_root=root, model_dir=tmp_path / "md")
    model = TrackAnythingModel(settings, engine_factory=fake_engine)
    return model, create_app(settings, model).test_client()


def rect(rid="r1", frame=1, box=None, label="Car"):
    x0, y0, x1, y1 = box or square(frame - 1)
    key = {"frame": frame, "enabled": True, "rotation": 0, "time": frame / 25,
           "x": 100 * x0 / W, "y": 100 * y0 / H, "width": 100 * (x1 - x0) / W,
           "height": 100 * (y1 - y0) / H}  # fmt: skip
    return {"id": rid, "type": "videorectangle", "from_name": "box", "to_name": "video",
            "origin": "manual", "value": {"framesCount": N, "duration": 2, "sequence": [key],
                                          "labels": [label]}}  # fmt: skip


def body(*regions, context=True, task_id=5):
    task = {"id": task_id, "data": {"video": "/data/local-files/?d=v/clip.webm"}}
    if not context:
        task["annotations"] = [{"id": 1, "result": list(regions)}]
        return {"tasks": [task], "label_config": CONFIG}
    return {"tasks": [task], "label_config": CONFIG,
            "params": {"context": {"result": list(regions)}}}  # fmt: skip


def test_interactive_box_returns_a_track_replacing_the_users_box(app):
    model, client = app
    resp = client.post("/predict", json=body(rect()))
    assert resp.status_code == 200, resp.get_json()
    (pred,) = resp.get_json()["results"]
    (region,) = pred["result"]
    assert region["id"] == "r1" and region["type"] == "videorectangle"
    value = region["value"]
    assert value["labels"] == ["Car"] and value["framesCount"] == N
    first = value["sequence"][0]
    assert first["frame"] == 1 and first["enabled"]
    assert first["x"] == pytest.approx(100 * 40 / W, abs=0.5)
    assert first["width"] == pytest.approx(100 * 60 / W, abs=0.5)
    assert value["sequence"][-1]["frame"] <= N


def test_after_submit_the_empty_context_gets_no_result(app):
    _, client = app
    resp = client.post("/predict", json=body())
    assert resp.status_code == 200 and resp.get_json()["results"][0]["result"] == []


def test_batch_tracks_every_region_of_the_newest_annotation(app):
    _, client = app
    resp = client.post(
        "/predict",
        json=body(rect("a"), rect("b", 20, (200, 150, 260, 200), "Person"), context=False),
    )
    results = resp.get_json()["results"][0]["result"]
    assert sorted(r["id"] for r in results) == ["a", "b"]
    assert {r["value"]["labels"][0] for r in results} == {"Car", "Person"}


def test_webhook_starts_a_background_job(app):
    model, client = app
    event = {"action": "ANNOTATION_CREATED", "project": {"id": 1, "label_config": CONFIG},
             "task": body(rect())["tasks"][0], "annotation": {"id": 3, "result": [rect()]}}  # fmt: skip
    answer = client.post("/webhook", json=event).get_json()
    assert answer["status"] == "ok" and answer["job"]
    job = model.jobs.live(answer["job"])
    assert job.finished.wait(30) and job.prediction["result"][0]["id"] == "r1"


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        (lambda: body(rect(box=(300, 10, 400, 60))), 422, "outside the frame"),
        (lambda: body(rect(frame=N + 1)), 422, "past the end"),
        (lambda: {**body(rect()), "tasks": [{"id": 5, "data": {"video": "/data/local-files/?d=v/none.webm"}}]},
         422, "no such video"),
        (lambda: {**body(rect()), "label_config": CONFIG.replace('<VideoRectangle name="box" toName="video"/>', "")},
         422, "no <VideoRectangle>"),
    ],
)  # fmt: skip
def test_bad_video_inputs_get_a_reason(app, payload, status, message):
    _, client = app
    resp = client.post("/predict", json=payload())
    assert resp.status_code == status and message in resp.get_json()["errors"][0], resp.get_json()


def test_a_framerate_that_disagrees_with_the_file_is_reported(app):
    _, client = app
    wrong = body(rect())
    wrong["label_config"] = CONFIG.replace('framerate="25.0"', 'framerate="30"')
    (region,) = client.post("/predict", json=wrong).get_json()["results"][0]["result"]
    assert "25" in region["meta"]["text"] and "30" in region["meta"]["text"]
    right = client.post("/predict", json=body(rect("r9"))).get_json()["results"][0]["result"]
    assert "text" not in right[0].get("meta", {})


def test_a_box_of_the_same_label_missing_from_the_request_was_deleted(app):
    model, client = app
    client.post("/predict", json=body(rect("a"), rect("b", 20, (200, 150, 260, 200))))
    client.post("/predict", json=body(rect("p", 1, (10, 10, 40, 40), "Person")))
    (session,) = [s for s in model.sessions._sessions.values() if s.key.origin.startswith("video")]
    assert sorted(session.labels.values()) == ["Car", "Car", "Person"]
    answer = client.post("/predict", json=body(rect("a"))).get_json()["results"][0]["result"]
    assert [r["id"] for r in answer] == ["a"]
    assert sorted(session.labels.values()) == ["Car", "Person"], "box b was deleted, p stays"


def test_an_unreadable_video_is_a_422(app, tmp_path):
    _, client = app
    bad = tmp_path / "media" / "v" / "broken.webm"
    bad.write_bytes(b"\x1a\x45\xdf\xa3 not really a video" * 50)
    payload = body(rect())
    payload["tasks"][0]["data"]["video"] = "/data/local-files/?d=v/broken.webm"
    resp = client.post("/predict", json=payload)
    assert resp.status_code == 422, resp.get_json()
    assert "broken.webm" in resp.get_json()["errors"][0]
