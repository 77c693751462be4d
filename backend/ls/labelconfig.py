"""What our engine needs from a project's labeling config, read with the SDK.

We need three names and the label set: the ``<Image valueList=...>`` object
(its name and the task-data key holding the frame list), the ``BrushLabels``
control we answer with, and the (smart) ``KeyPointLabels`` control whose
clicks we read. Nothing is hard-coded: any names work.
"""

from __future__ import annotations

from dataclasses import dataclass

from label_studio_sdk.label_interface import LabelInterface


class LabelConfigError(ValueError):
    """The labeling config cannot drive this backend; the message says how to fix it."""


@dataclass(frozen=True)
class ProjectSchema:
    """Names taken from the labeling config."""

    image_name: str  # to_name of our results
    frames_key: str  # task.data key with the frame URL list ($frames → "frames")
    brush_name: str  # from_name of our brushlabels results
    keypoint_name: str | None  # from_name of the clicks (None: batch only)
    rectangle_name: str | None  # from_name of box prompts (RectangleLabels on the image)
    brush_labels: tuple[str, ...]
    keypoint_labels: tuple[str, ...]
    is_sequence: bool  # True for valueList (one task = many frames)


def _labels(control) -> tuple[str, ...]:
    return tuple(getattr(control, "labels", None) or ())


MAX_CONFIG_BYTES = 256 * 1024  # real labeling configs are a few kB


def check_config_size(config: str, max_bytes: int = MAX_CONFIG_BYTES) -> None:
    """Refuse an empty or oversized config before any parsing."""
    if not isinstance(config, str) or not config.strip():
        raise LabelConfigError("label config is empty")
    if len(config) > max_bytes:
        raise LabelConfigError(
            f"label config is {len(config)} characters; the limit is {max_bytes} "
            "(LABEL_CONFIG_MAX_BYTES)"
        )


def parse_label_config(config: str, *, max_bytes: int = MAX_CONFIG_BYTES) -> ProjectSchema:
    """Parse an LS labeling config into a :class:`ProjectSchema`.

    Raises :class:`LabelConfigError` when the config is malformed, larger than
    ``max_bytes`` (refused before parsing), or lacks an ``Image`` with a
    ``BrushLabels`` control.
    """
    check_config_size(config, max_bytes)
    try:
        li = LabelInterface(config)
    except Exception as exc:  # the SDK raises several XML/validation types
        raise LabelConfigError(f"label config is not valid XML: {exc}") from None

    brush = next((c for c in li.controls if c.tag == "BrushLabels" and c.to_name), None)
    if brush is None and any(o.tag == "Video" for o in li.objects):
        raise LabelConfigError(
            "this project labels a <Video>: Label Studio 1.23 cannot hold masks on <Video>. "
            'Import the video as frames (<Image valueList="$frames">, see '
            "docs/labeling-config.xml and docs/importing-video.md)"
        )
    if brush is None:
        raise LabelConfigError(
            "label config has no <BrushLabels> control; this backend answers with brush masks "
            "(see docs/labeling-config.xml)"
        )
    image_name = brush.to_name[0]
    image = next((o for o in li.objects if o.name == image_name), None)
    if image is None or image.tag != "Image":
        raise LabelConfigError(
            f"<BrushLabels name={brush.name!r}> must point to an <Image>, not "
            f"{getattr(image, 'tag', 'nothing')!r}: Label Studio 1.23 cannot hold masks on <Video>; "
            "import the video as frames (see docs/importing-video.md)"
        )
    value_list = image.attr.get("valueList")
    raw = value_list or image.attr.get("value") or ""
    frames_key = raw[1:] if raw.startswith("$") else raw
    if not frames_key:
        raise LabelConfigError(f"<Image name={image_name!r}> has no value/valueList")

    keypoint = next(
        (
            c
            for c in li.controls
            if c.tag == "KeyPointLabels" and c.to_name and c.to_name[0] == image_name
        ),
        None,
    )
    rectangle = next(
        (
            c
            for c in li.controls
            if c.tag == "RectangleLabels" and c.to_name and c.to_name[0] == image_name
        ),
        None,
    )
    return ProjectSchema(
        image_name=image_name,
        frames_key=frames_key,
        brush_name=brush.name,
        keypoint_name=keypoint.name if keypoint is not None else None,
        rectangle_name=rectangle.name if rectangle is not None else None,
        brush_labels=_labels(brush),
        keypoint_labels=_labels(keypoint) if keypoint is not None else (),
        is_sequence=bool(value_list),
    )
