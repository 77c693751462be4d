from __future__ import annotations

import pytest

from backend.ls.labelconfig import LabelConfigError, parse_label_config
from tests.conftest import load_fixture


def test_shipped_config_parses():
    from pathlib import Path

    xml = (Path(__file__).resolve().parents[2] / "docs" / "labeling-config.xml").read_text()
    s = parse_label_config(xml)
    assert s.is_sequence and s.keypoint_name and s.brush_labels == s.keypoint_labels


def test_fixture_config():
    s = parse_label_config(load_fixture("20_")["label_config"])
    assert (s.image_name, s.frames_key, s.brush_name, s.keypoint_name) == (
        "image",
        "frames",
        "brush",
        "kp",
    )


def test_single_image_config_is_not_a_sequence():
    s = parse_label_config(
        '<View><Image name="i" value="$image"/>'
        '<BrushLabels name="b" toName="i"><Label value="A"/></BrushLabels></View>'
    )
    assert not s.is_sequence and s.frames_key == "image" and s.keypoint_name is None


@pytest.mark.parametrize(
    "xml, message",
    [
        ("", "empty"),
        ("<View><bad", "not valid XML"),
        (load_fixture("21_")["label_config"], "Video"),
        ('<View><Image name="i" value="$x"/></View>', "no <BrushLabels>"),
    ],
)
def test_unusable_configs(xml, message):
    with pytest.raises(LabelConfigError, match=message):
        parse_label_config(xml)
