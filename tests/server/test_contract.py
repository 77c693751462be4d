"""Replay every request Label Studio 1.23.2 really sent (../shared/ls-fixtures) against the app."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle

from backend.config import Settings
from backend.server.app import create_app
from model import TrackAnythingModel
from tests.conftest import FIXTURES, fake_engine, load_fixture, write_frames

CAPTURES = sorted(p.name for p in FIXTURES.glob("[01]*_ls_to_ml__*.json"))
USER, PASSWORD = "ls-user", "s3cret-pass"


def _client(tmp_path, **overrides):
    write_frames(tmp_path / "media", "frames", 5)
    settings = Settings(local_files_root=tmp_path / "media", model_dir=tmp_path / "md", **overrides)
    model = TrackAnythingModel(settings, engine_factory=fake_engine)
    return create_app(settings, model, metrics=model.metrics).test_client()


def _replay(client, capture: dict):
    headers = {
        k: v
        for k, v in capture["headers"].items()
        if k.lower() not in ("host", "content-length", "authorization")
    }
    if "Authorization" in capture["headers"]:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    body = json.dumps(capture["body"]) if capture["body"] is not None else None
    return client.open(capture["path"], method=capture["method"], headers=headers, data=body)


def test_every_capture_is_covered():
    assert len(CAPTURES) == 13, CAPTURES


@pytest.mark.parametrize("name", CAPTURES)
def test_replay_capture(tmp_path, name):
    capture = json.loads((FIXTURES / name).read_text())
    auth = "Authorization" in capture["headers"]
    overrides = {"basic_auth_user": USER, "basic_auth_pass": PASSWORD} if auth else {}
    resp = _replay(_client(tmp_path, **overrides), capture)
    body = resp.get_json()
    assert body is not None, "every answer is JSON"
    path, body_in = capture["path"], capture["body"] or {}
    schema = body_in.get("schema") or body_in.get("label_config") or ""
    assert resp.status_code == 200, body
    if "<Video" in schema:  # <Video> + <VideoRectangle>: tracked boxes
        if path == "/predict":  # no box in the task's annotations: no prediction
            assert body == {"results": []}
        else:
            assert body == {"model_version": "tam-fake-test"}
        return
    if path == "/health":
        assert body["status"] == "UP" and body["engine"] in ("classical", "sam-xmem")
        assert "model_version" in body and "checkpoints" in body
    elif path == "/setup":
        assert body == {"model_version": "tam-fake-test"}
    elif path == "/versions":
        assert body == {"versions": ["tam-fake-test"]}
    elif path == "/webhook":
        assert body["status"] in ("ok", "ignored")
    elif path == "/predict":
        _check_predict(capture["body"], body)


def _check_predict(request: dict, body: dict):
    tasks = request["tasks"]
    context = (request.get("params") or {}).get("context")
    results = body["results"]
    if not context:
        # no clicks or masks in these tasks: no prediction at all (Label Studio stores nothing)
        assert results == []
        return
    assert len(results) == 1
    pred = results[0]
    assert pred["model_version"] == "tam-fake-test"
    regions = pred["result"]
    assert regions, "an interactive click yields masks"
    frames = sorted(r["item_index"] for r in regions)
    assert frames == list(range(len(tasks[0]["data"]["frames"])))
    for r in regions:
        assert r["type"] == "brushlabels" and r["from_name"] == "brush" and r["to_name"] == "image"
        assert r["value"]["format"] == "rle" and r["value"]["brushlabels"] == ["Object"]
        h, w = r["original_height"], r["original_width"]
        mask = np.reshape(decode_rle(r["value"]["rle"]), (h, w, 4))[:, :, 3]
        assert set(np.unique(mask)) <= {0, 255} and mask.any()


def test_interactive_click_lands_where_clicked(tmp_path):
    capture = load_fixture("07_")
    click = capture["body"]["params"]["context"]["result"][0]
    resp = _replay(_client(tmp_path), capture)
    regions = resp.get_json()["results"][0]["result"]
    region = next(r for r in regions if r["item_index"] == click["item_index"])
    mask = np.reshape(decode_rle(region["value"]["rle"]), (240, 320, 4))[:, :, 3]
    x = int(click["value"]["x"] / 100 * 320)
    y = int(click["value"]["y"] / 100 * 240)
    assert mask[y, x] == 255


def test_negative_click_removes_area(tmp_path):
    capture = load_fixture("06_")
    ctx = capture["body"]["params"]["context"]["result"]
    assert any(r.get("is_positive") is False for r in ctx)
    resp = _replay(_client(tmp_path), capture)
    assert resp.status_code == 200, resp.get_json()
    neg = next(r for r in ctx if r.get("is_positive") is False)
    region = next(
        r for r in resp.get_json()["results"][0]["result"] if r["item_index"] == neg["item_index"]
    )
    mask = np.reshape(decode_rle(region["value"]["rle"]), (240, 320, 4))[:, :, 3]
    x = int(neg["value"]["x"] / 100 * 320)
    y = int(neg["value"]["y"] / 100 * 240)
    assert mask[y, x] == 0


def test_basic_auth_rejects_missing_credentials(tmp_path):
    client = _client(tmp_path, basic_auth_user=USER, basic_auth_pass=PASSWORD)
    resp = client.get("/health")
    assert resp.status_code == 401 and resp.get_json()["errors"]
    bad = base64.b64encode(b"ls-user:wrong").decode()
    assert client.get("/health", headers={"Authorization": f"Basic {bad}"}).status_code == 401
