"""LS context → prompts: grouping, polarity, coordinates, identity and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from backend.ls import rle
from backend.ls.labelconfig import parse_label_config
from backend.ls.prompts import PromptError, object_id, parse_context, to_object_prompts
from tests.conftest import load_fixture

CONFIG = """<View>
  <Image name="img" valueList="$clip"/>
  <BrushLabels name="masks" toName="img"><Label value="Car"/><Label value="Person"/></BrushLabels>
  <KeyPointLabels name="clicks" toName="img" smart="true">
    <Label value="Car" smart="true"/><Label value="Person" smart="true"/>
  </KeyPointLabels>
</View>"""
SCHEMA = parse_label_config(CONFIG)


def kp(x, y, frame, label="Car", positive=None, **extra):
    region = {
        "type": "keypointlabels",
        "from_name": "clicks",
        "to_name": "img",
        "item_index": frame,
        "original_width": 200,
        "original_height": 100,
        "value": {"x": x, "y": y, "keypointlabels": [label]},
    }
    if positive is not None:
        region["is_positive"] = positive
    region.update(extra)
    return region


def test_names_come_from_the_config():
    assert (SCHEMA.image_name, SCHEMA.frames_key, SCHEMA.brush_name, SCHEMA.keypoint_name) == (
        "img",
        "clip",
        "masks",
        "clicks",
    )


def test_groups_by_frame_and_label_missing_polarity_is_positive():
    ctx = {
        "result": [
            kp(10, 20, 2),
            kp(30, 40, 2, positive=False),
            kp(50, 50, 5, label="Person", positive=True),
        ]
    }
    p = parse_context(ctx, SCHEMA, num_frames=8)
    assert sorted(p.clicks) == ["Car", "Person"]
    car = p.clicks["Car"][2]
    assert [c.positive for c in car] == [True, False]
    assert car[0].fx == pytest.approx(0.10) and car[0].fy == pytest.approx(0.20)
    objs = to_object_prompts(p, SCHEMA, (200, 100), rle.decode)
    assert [o.obj_id for o in objs] == [1, 2]
    assert objs[0].clicks[2][0].x == pytest.approx(20) and objs[0].clicks[2][0].y == pytest.approx(
        20
    )
    assert objs[1].keyframes == [5]


def test_object_ids_are_stable_label_positions():
    assert object_id("Car", SCHEMA) == 1 and object_id("Person", SCHEMA) == 2


def test_fingerprint_changes_with_clicks_only():
    a = parse_context({"result": [kp(10, 20, 2)]}, SCHEMA, 8)
    b = parse_context({"result": [kp(10, 20, 2)]}, SCHEMA, 8)
    c = parse_context({"result": [kp(10, 21, 2)]}, SCHEMA, 8)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


@pytest.mark.parametrize(
    "region, message",
    [
        (kp(101, 20, 0), "outside the frame"),
        (kp(-1, 20, 0), "outside the frame"),
        (kp("a", 20, 0), "not a number"),
        (kp(10, 20, 8), "out of range"),
        (kp(10, 20, -1), "out of range"),
        (kp(10, 20, 1.5), "not an integer"),
        (kp(10, 20, 0, label="Dog"), "not a label"),
        ({**kp(10, 20, 0), "value": 7}, "must be an object"),
    ],
)
def test_bad_regions_raise_clear_errors(region, message):
    with pytest.raises(PromptError, match=message):
        parse_context({"result": [region]}, SCHEMA, num_frames=8)


def test_brush_mask_in_context_is_a_keyframe():
    mask = np.zeros((100, 200), bool)
    mask[10:30, 40:90] = True
    region = {
        "type": "brushlabels",
        "from_name": "masks",
        "item_index": 3,
        "original_width": 200,
        "original_height": 100,
        "value": {"format": "rle", "rle": rle.encode(mask), "brushlabels": ["Person"]},
    }
    p = parse_context({"result": [region]}, SCHEMA, 8)
    objs = to_object_prompts(p, SCHEMA, (200, 100), rle.decode)
    assert objs[0].obj_id == 2 and objs[0].keyframes == [3]
    assert (objs[0].masks[3] == mask).all()


def test_brush_mask_must_match_the_frames_and_decode():
    mask = np.zeros((100, 200), bool)
    region = {
        "id": "r7",
        "type": "brushlabels",
        "from_name": "masks",
        "item_index": 3,
        "original_width": 200,
        "original_height": 100,
        "value": {"format": "rle", "rle": rle.encode(mask), "brushlabels": ["Person"]},
    }
    p = parse_context({"result": [region]}, SCHEMA, 8)
    with pytest.raises(PromptError, match="r7.*200x100.*400x200"):
        to_object_prompts(p, SCHEMA, (400, 200), rle.decode)  # decoded at no other size
    huge = dict(region, original_width=32768, original_height=32767)
    p = parse_context({"result": [huge]}, SCHEMA, 8)
    with pytest.raises(PromptError, match="32768x32767"):
        to_object_prompts(p, SCHEMA, (200, 100), rle.decode)  # refused before decoding
    for junk in ([1, 2, 3, 255, 7], [0] * 50, ["a"], [10**30]):
        bad = dict(region, value=dict(region["value"], rle=junk))
        p = parse_context({"result": [bad]}, SCHEMA, 8)
        with pytest.raises(PromptError, match="r7: brush RLE cannot be read"):
            to_object_prompts(p, SCHEMA, (200, 100), rle.decode)


@pytest.mark.parametrize(
    ("raw", "positive"),
    [(True, True), (False, False), ("false", False), ("True", True), (0, False)],
)
def test_is_positive_is_read_strictly(raw, positive):
    region = {
        "type": "keypointlabels",
        "from_name": "clicks",
        "value": {"x": 10, "y": 10, "keypointlabels": ["Person"]},
        "is_positive": raw,
    }
    p = parse_context({"result": [region]}, SCHEMA, 8)
    assert p.clicks["Person"][0][0].positive is positive


def test_bad_is_positive_and_huge_numbers_are_refused():
    base = {"type": "keypointlabels", "from_name": "clicks", "id": "k1"}
    for value, flag in (({"x": 10, "y": 10}, "maybe"), ({"x": 10**30, "y": 10}, True)):
        region = dict(base, value={**value, "keypointlabels": ["Person"]}, is_positive=flag)
        with pytest.raises(PromptError, match="k1"):
            parse_context({"result": [region]}, SCHEMA, 8)


def test_real_frontend_context_parses():
    body = load_fixture("06_")["body"]
    schema = parse_label_config(body["label_config"])
    p = parse_context(body["params"]["context"], schema, len(body["tasks"][0]["data"]["frames"]))
    flags = [c.positive for clicks in p.clicks["Object"].values() for c in clicks]
    assert False in flags and True in flags


BOX_CONFIG = """<View>
  <Image name="img" valueList="$clip"/>
  <BrushLabels name="masks" toName="img"><Label value="Car"/></BrushLabels>
  <RectangleLabels name="boxes" toName="img" smart="true"><Label value="Car"/></RectangleLabels>
</View>"""


def rect(x, y, w, h, frame=1, **extra):
    value = {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": ["Car"]}
    value.update(extra)
    return {"id": "box1", "type": "rectanglelabels", "from_name": "boxes", "item_index": frame,
            "value": value}  # fmt: skip


def test_rectangle_regions_are_box_prompts():
    schema = parse_label_config(BOX_CONFIG)
    assert schema.rectangle_name == "boxes"
    p = parse_context({"result": [rect(10, 20, 30, 40)]}, schema, 4)
    (obj,) = to_object_prompts(p, schema, (200, 100), rle.decode)
    assert obj.keyframes == [1]
    box = obj.boxes[1]
    assert (box.x0, box.y0, box.x1, box.y1) == pytest.approx((20, 20, 80, 60))
    assert (
        p.fingerprint()
        != parse_context({"result": [rect(11, 20, 30, 40)]}, schema, 4).fingerprint()
    )


@pytest.mark.parametrize(
    ("region", "message"),
    [
        (rect(10, 10, 0, 5), "no size"),
        (rect(90, 10, 20, 5), "outside the frame"),
        (rect(10, 10, 20, 5, rotation=30), "rotated boxes"),
        (rect(10, 10, "wide", 5), "width="),
    ],
)
def test_bad_boxes_are_refused(region, message):
    schema = parse_label_config(BOX_CONFIG)
    with pytest.raises(PromptError, match=message):
        parse_context({"result": [region]}, schema, 4)
