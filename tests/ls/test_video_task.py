"""Video projects: config controls and box prompts from real Label Studio captures."""

from __future__ import annotations

import pytest

from backend.ls.labelconfig import LabelConfigError
from backend.ls.prompts import PromptError
from backend.ls.video_task import parse_video_config, video_regions
from tests.conftest import FIXTURES, load_fixture

VIDEO = FIXTURES / "video"


def capture(prefix: str) -> dict:
    import json

    (path,) = sorted(VIDEO.glob(f"{prefix}*.json"))
    return json.loads(path.read_text())


def test_video_config_names_come_from_the_config():
    body = capture("01_")["body"]
    schema = parse_video_config(body["label_config"])
    assert schema is not None
    assert (schema.video_name, schema.video_key, schema.rect_name) == ("video", "video", "box")
    assert schema.framerate == 25.0 and schema.labels == ("Car", "Person")
    assert parse_video_config(load_fixture("20_")["label_config"]) is None, "frames project"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('<View><Video name="v" value="$video"/><Labels name="l" toName="v"><Label value="A"/>'
         "</Labels></View>", "no <VideoRectangle>"),
        ('<View><Video name="v" value="$video" framerate="fast"/><VideoRectangle name="b" '
         'toName="v"/></View>', "framerate"),
    ],
)  # fmt: skip
def test_bad_video_configs(config, message):
    with pytest.raises(LabelConfigError, match=message):
        parse_video_config(config)


def test_interactive_context_boxes():
    body = capture("01_")["body"]
    schema = parse_video_config(body["label_config"])
    regions = video_regions(body["params"]["context"]["result"], schema)
    assert [r.region_id for r in regions] == ["4Zbku5S0QE", "fGuHBpw8js"]
    first = regions[0]
    assert first.label == "Car" and first.frames_count == 50
    (box,) = first.boxes(640, 480).items()
    frame, b = box
    assert frame == 9, "LS frame 10 is frame index 9"
    assert (b.x0, b.y0) == pytest.approx((0.3507 * 640, 0.25 * 480), abs=0.1)


def _region(**kf):
    key = {"frame": 3, "x": 10, "y": 10, "width": 20, "height": 20, "enabled": True, "rotation": 0}
    key.update(kf)
    return {"id": "r1", "type": "videorectangle", "from_name": "box",
            "value": {"framesCount": 10, "sequence": [key], "labels": ["Car"]}}  # fmt: skip


@pytest.mark.parametrize(
    ("kf", "message"),
    [
        ({"width": 0}, "no size"),
        ({"x": 95}, "outside the frame"),
        ({"frame": 11}, "past the end"),
        ({"frame": 0}, "not a frame"),
        ({"rotation": 15}, "rotated"),
        ({"y": "top"}, "y='top'"),
    ],
)
def test_bad_boxes_name_the_region(kf, message):
    schema = parse_video_config(capture("01_")["body"]["label_config"])
    with pytest.raises(PromptError, match=f"r1.*{message}"):
        video_regions([_region(**kf)], schema)


def test_disabled_keyframes_end_spans_and_are_no_prompts():
    schema = parse_video_config(capture("01_")["body"]["label_config"])
    (region,) = video_regions([_region(enabled=False, width=0)], schema)
    assert region.boxes(100, 100) == {}
