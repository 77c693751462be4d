"""Bad inputs get a 4xx whose message says what to fix, and never poison a task's memory."""

from __future__ import annotations

import base64
import json

import pytest

from backend.config import Settings
from backend.ls import rle
from backend.server.app import create_app
from model import TrackAnythingModel
from tests.conftest import TWO_LABEL_CONFIG as CONFIG
from tests.conftest import write_frames
from tests.fakes import fake_engine


@pytest.fixture
def app(tmp_path):
    urls = write_frames(tmp_path / "media", "f", 4)
    settings = Settings(
        local_files_root=tmp_path / "media", model_dir=tmp_path / "md", label_config_max_bytes=4096
    )
    model = TrackAnythingModel(settings, engine_factory=fake_engine)
    return create_app(settings, model, metrics=model.metrics).test_client(), urls


def kp(label="A", frame=0, **over):
    region = {
        "id": f"kp-{label}-{frame}",
        "type": "keypointlabels",
        "from_name": "kp",
        "to_name": "image",
        "item_index": frame,
        "value": {"x": 40, "y": 40, "keypointlabels": [label]},
        "is_positive": True,
    }
    region.update(over)
    return region


def brush(rle, w=320, h=240, label="A"):
    return {
        "id": f"brush-{label}",
        "type": "brushlabels",
        "from_name": "brush",
        "to_name": "image",
        "item_index": 0,
        "original_width": w,
        "original_height": h,
        "value": {"format": "rle", "rle": rle, "brushlabels": [label]},
    }


def body(urls, *regions, task_id=1):
    return {
        "tasks": [{"id": task_id, "data": {"frames": urls}}],
        "label_config": CONFIG,
        "params": {"context": {"result": list(regions)}},
    }


def post(client, payload, **kw):
    data = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    resp = client.post("/predict", data=data, content_type="application/json", **kw)
    return resp.status_code, (resp.get_json() or {}).get("errors", [""])[0]


@pytest.mark.parametrize(
    ("regions", "status", "message"),
    [
        ([brush([1, 2, 3, 255, 7])], 422, "brush-A: brush RLE cannot be read"),
        ([brush([0] * 50)], 422, "brush-A: brush RLE cannot be read"),
        ([brush(["a"])], 422, "brush-A: brush RLE cannot be read"),
        ([brush([0, 0, 0, 1], 32768, 32767)], 422, "brush-A: brush mask on frame 0 is 32768x32767"),
        ([kp(value={"x": 10**30, "y": 5, "keypointlabels": ["A"]})], 422, "kp-A-0: point x="),
        ([kp(is_positive="maybe")], 422, "kp-A-0: is_positive='maybe'"),
    ],
)
def test_bad_regions_get_422_naming_the_region(app, regions, status, message):
    client, urls = app
    code, text = post(client, body(urls, *regions))
    assert code == status and message in text, text


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b["tasks"][0].update(id=2**63), "task id 9223372036854775808 is out of range"),
        (lambda b: b["tasks"][0]["data"]["frames"].__setitem__(1, "/data/local-files/?d=f/%00.jpg"),
         "frame 1 URL contains control characters"),
        (lambda b: b["tasks"][0]["data"]["frames"].__setitem__(0, "/x/\\ud800.jpg"),
         "frame 0 URL is not valid Unicode text"),
        (lambda b: b.update(label_config=CONFIG + " " * 5000), "LABEL_CONFIG_MAX_BYTES"),
    ],
)  # fmt: skip
def test_bad_tasks_get_a_reason(app, mutate, message):
    client, urls = app
    payload = body(urls, kp())
    mutate(payload)
    data = json.dumps(payload).replace("\\\\ud800", "\\ud800")  # a lone surrogate, as JSON allows
    code, text = post(client, data)
    assert code in (400, 422) and message in text, (code, text)


def test_deeply_nested_body_is_refused(app):
    client, _ = app
    code, text = post(client, '{"tasks": ' + "[" * 1000 + "]" * 1000 + "}")
    assert code == 400 and "nested too deeply" in text


def test_a_bad_region_does_not_poison_the_task(app):
    client, urls = app
    code, _ = post(client, body(urls, brush([0, 0, 0, 1], 100, 100, label="A")))
    assert code == 422
    code, text = post(client, body(urls, kp("B")))
    assert code == 200, text
    code, text = post(client, body(urls, kp("A")))
    assert code == 200, text


def test_is_positive_false_as_a_string_is_negative(app):
    client, urls = app
    negative = kp(id="neg", is_positive="false", value={"x": 45, "y": 40, "keypointlabels": ["A"]})
    resp = client.post("/predict", json=body(urls, kp(), negative))
    assert resp.status_code == 200
    frame0 = next(r for r in resp.get_json()["results"][0]["result"] if r["item_index"] == 0)
    mask = rle.decode(frame0["value"]["rle"], 240, 320)
    assert mask[96, 113] and not mask[96, 144], "the negative click (x=144) removed its side"


def test_basic_auth_scheme_is_case_insensitive(tmp_path):
    settings = Settings(model_dir=tmp_path / "md", basic_auth_user="u", basic_auth_pass="p")
    model = TrackAnythingModel(settings, engine_factory=fake_engine)
    client = create_app(settings, model).test_client()
    token = base64.b64encode(b"u:p").decode()
    for scheme in ("Basic", "basic", "BASIC"):
        assert (
            client.get("/health", headers={"Authorization": f"{scheme} {token}"}).status_code == 200
        )
    assert client.get("/health", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_frames_of_different_sizes_get_a_reason(app, tmp_path):
    client, urls = app
    other = write_frames(tmp_path / "media", "g", 1, size=(400, 300))
    code, text = post(client, body([*urls[:2], *other, urls[2]], kp()))
    assert code == 422 and "frame 2 is 400x300 but frame 0 is 320x240" in text, text
