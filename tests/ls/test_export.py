"""Export: LS tasks JSON → DAVIS / COCO / YouTube-VIS, without Label Studio."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from backend.cli import main as cli_main
from backend.frames import ArrayFrameSource
from backend.ls import rle
from backend.ls.export import (
    collect_sequences,
    davis_palette,
    export_tasks,
    masks_to_index,
    read_index_png,
    write_index_png,
)
from backend.ls.labelconfig import parse_label_config
from backend.ls.results import ObjectInfo, build_prediction
from backend.pipeline import segment_video
from backend.types import Click, ObjectPrompt
from tests.conftest import REPO, fake_engine, load_fixture

H, W = 24, 32


def disk(cx: int, cy: int, r: int, shape=(H, W)) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def region(mask: np.ndarray, label: str, item: int, from_name: str = "brush") -> dict:
    h, w = mask.shape
    return {
        "type": "brushlabels",
        "from_name": from_name,
        "to_name": "image",
        "original_width": w,
        "original_height": h,
        "item_index": item,
        "value": {"format": "rle", "rle": rle.encode(mask), "brushlabels": [label]},
    }


def task(tid: int, n: int, result: list[dict] | None, **data) -> dict:
    anns = [] if result is None else [{"id": tid, "result": result, "was_cancelled": False}]
    return {
        "id": tid,
        "data": {"frames": [f"/data/local-files/?d=c/{tid}_{i}.jpg" for i in range(n)], **data},
        "annotations": anns,
        "predictions": [],
    }


def test_palette_and_index_png_round_trip(tmp_path):
    pal = davis_palette()
    assert pal[0].tolist() == [0, 0, 0]
    assert pal[1].tolist() == [128, 0, 0] and pal[2].tolist() == [0, 128, 0]
    assert pal[3].tolist() == [128, 128, 0] and pal[4].tolist() == [0, 0, 128]
    index = np.arange(H * W, dtype=np.int64).reshape(H, W) % 7
    write_index_png(tmp_path / "m.png", index.astype(np.uint8))
    from PIL import Image

    with Image.open(tmp_path / "m.png") as img:
        assert img.mode == "P"
    assert np.array_equal(read_index_png(tmp_path / "m.png"), index)


def test_masks_to_index_lowest_id_wins():
    a, b = disk(10, 10, 6), disk(14, 10, 6)
    index = masks_to_index({2: b, 1: a}, (H, W))
    assert index[10, 10] == 1 and index[10, 12] == 1 and index[10, 18] == 2
    assert (index == 0).sum() == (~(a | b)).sum()
    with pytest.raises(ValueError, match="does not match"):
        masks_to_index({1: np.zeros((3, 3), bool)}, (H, W))


def test_real_ls_annotation_fixture_to_davis(tmp_path):
    ann = load_fixture("23_")
    tasks = [
        {
            "id": 1,
            "data": {
                "frames": [f"/data/local-files/?d=f/{i}.jpg" for i in range(5)],
                "video_id": "clip1",
            },
            "annotations": [ann],
        }
    ]
    config = load_fixture("20_")["label_config"]
    schema = parse_label_config(config)
    summary = export_tasks(
        tasks,
        "davis",
        tmp_path,
        config_labels=schema.brush_labels,
        frames_key=schema.frames_key,
        brush_name=schema.brush_name,
    )
    assert summary.sequences == 1 and summary.frames == 5 and summary.objects == {"Object": 1}
    out = tmp_path / "Annotations" / "task-1"
    for i in range(5):
        got = read_index_png(out / f"{i:05d}.png")
        assert got.shape == (240, 320)
        expected = np.zeros((240, 320), bool)
        for r in ann["result"]:
            if r["item_index"] == i:
                expected |= rle.decode(r["value"]["rle"], 240, 320)
        assert expected.any()
        assert np.array_equal(got == 1, expected) and set(np.unique(got)) <= {0, 1}
    meta = json.loads((tmp_path / "objects.json").read_text())
    assert meta["objects"] == {"1": "Object"} and meta["sequences"]["task-1"]["tasks"] == [1]


def test_chunks_of_one_video_merge_in_frame_offset_order(tmp_path):
    m = [disk(4 + 3 * i, 12, 4) for i in range(5)]
    late = task(
        8, 2, [region(m[3], "car", 0), region(m[4], "car", 1)], video="v.mp4", frame_offset=6
    )
    early = task(9, 3, [region(m[i], "car", i) for i in range(3)], video="v.mp4", frame_offset=0)
    other = task(10, 1, [region(disk(5, 5, 3), "dog", 0)], video="w.mp4", frame_offset=0)
    seqs, ids = collect_sequences([late, other, early], config_labels=["dog", "car"])
    assert ids == {"dog": 1, "car": 2}
    assert [s.name for s in seqs] == ["v", "w"]
    v = seqs[0]
    assert v.task_ids == [9, 8] and len(v.frames) == 5
    assert v.frames[3] == "/data/local-files/?d=c/8_0.jpg"
    for i in range(5):
        assert np.array_equal(v.frame_masks(i)[2], m[i])
    summary = export_tasks([late, other, early], "davis", tmp_path, config_labels=["dog", "car"])
    assert summary.frames == 6
    assert np.array_equal(read_index_png(tmp_path / "Annotations/v/00004.png") == 2, m[4])


def test_result_choice_cancelled_ground_truth_and_predictions(tmp_path):
    a, b, c = disk(5, 5, 3), disk(20, 12, 4), disk(12, 12, 5)
    t = task(1, 1, None)
    t["annotations"] = [
        {"id": 1, "was_cancelled": True, "result": [region(a, "x", 0)]},
        {"id": 2, "ground_truth": True, "updated_at": "2020-01-01", "result": [region(b, "x", 0)]},
        {"id": 3, "updated_at": "2030-01-01", "result": [region(c, "x", 0)]},
    ]
    p = task(2, 1, None)
    p["predictions"] = [
        {"id": 5, "result": [region(a, "x", 0)]},
        {"id": 6, "result": [region(c, "x", 0)]},
    ]
    seqs, _ = collect_sequences([t, p])
    assert np.array_equal(seqs[0].frame_masks(0)[1], b)  # ground truth beats newer
    assert seqs[1].frame_masks(0) == {}  # predictions ignored by default
    seqs, _ = collect_sequences([t, p], use_predictions=True)
    assert np.array_equal(seqs[1].frame_masks(0)[1], c)  # latest prediction


def test_coco_and_ytvis(tmp_path):
    car = [disk(6 + 2 * i, 10, 4) for i in range(3)]
    dog = disk(25, 15, 5)
    t = task(
        1,
        3,
        [
            region(car[0], "car", 0),
            region(car[2], "car", 2),
            region(dog, "dog", 1),
            region(disk(1, 1, 1), "kp", 0, from_name="other"),
        ],
        video="clip.mp4",
    )
    export_tasks([t], "coco", tmp_path / "c", config_labels=["car", "dog"], brush_name="brush")
    coco = json.loads((tmp_path / "c" / "coco.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["car", "dog"]
    assert [im["file_name"] for im in coco["images"]] == [f"clip/{i:05d}.jpg" for i in range(3)]
    assert [(a["image_id"], a["category_id"]) for a in coco["annotations"]] == [
        (1, 1),
        (2, 2),
        (3, 1),
    ]
    first = coco["annotations"][0]
    got = mask_utils.decode(
        {"size": first["segmentation"]["size"], "counts": first["segmentation"]["counts"].encode()}
    )
    assert np.array_equal(got.astype(bool), car[0])
    assert first["area"] == int(car[0].sum())
    ys, xs = np.nonzero(car[0])
    assert first["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]

    export_tasks([t], "ytvis", tmp_path / "y", config_labels=["car", "dog"], brush_name="brush")
    yt = json.loads((tmp_path / "y" / "ytvis.json").read_text())
    (video,) = yt["videos"]
    assert (video["length"], video["width"], video["height"]) == (3, W, H)
    tracks = {a["track_id"]: a for a in yt["annotations"]}
    assert set(tracks) == {1, 2}
    assert tracks[1]["segmentations"][1] is None and tracks[2]["segmentations"][0] is None
    seg2 = tracks[1]["segmentations"][2]
    got = mask_utils.decode({"size": seg2["size"], "counts": seg2["counts"].encode()})
    assert np.array_equal(got.astype(bool), car[2])


def test_sequence_without_masks_needs_a_frame_size(tmp_path):
    empty = task(4, 2, [], video="e.mp4")
    summary = export_tasks([empty], "davis", tmp_path / "a")
    assert summary.sequences == 0 and summary.skipped == ["e"]
    summary = export_tasks([empty], "davis", tmp_path / "b", frame_size=lambda url: (H, W))
    assert summary.sequences == 1
    assert not read_index_png(tmp_path / "b/Annotations/e/00001.png").any()


def test_pipeline_masks_round_trip_through_ls_results(tmp_path):
    """segment_video → LS brush results (as the server answers) → export == the masks."""
    frames = [np.full((60, 80, 3), 30 + i, np.uint8) for i in range(4)]
    objects = [
        ObjectPrompt(1, "Object 1", clicks={0: [Click(20, 30)]}),
        ObjectPrompt(2, "Object 3", clicks={1: [Click(60, 20)]}),
    ]
    preds = list(segment_video(fake_engine(), ArrayFrameSource(frames), objects))
    schema = parse_label_config((REPO / "docs" / "labeling-config.xml").read_text())
    prediction = build_prediction(
        preds, [ObjectInfo(o.obj_id, o.label) for o in objects], schema, model_version="t"
    )
    t = {
        "id": 3,
        "data": {"frames": [f"u{i}" for i in range(4)], "video": "v"},
        "annotations": [{"id": 1, "result": prediction["result"]}],
    }
    export_tasks(
        [t], "davis", tmp_path, config_labels=schema.brush_labels, brush_name=schema.brush_name
    )
    label_id = {"Object 1": 1, "Object 3": 3}  # id = label position in the config
    for fp in preds:
        expected = masks_to_index(
            {label_id[o.label]: fp.masks[o.obj_id] for o in objects}, (60, 80)
        )
        assert np.array_equal(
            read_index_png(tmp_path / f"Annotations/v/{fp.index:05d}.png"), expected
        )


def test_cli_export_from_tasks_json(tmp_path, capsys):
    t = task(1, 2, [region(disk(10, 10, 5), "Object 2", 1)], video="clip")
    (tmp_path / "tasks.json").write_text(json.dumps([t]))
    code = cli_main(
        [
            "export",
            "--tasks-json",
            str(tmp_path / "tasks.json"),
            "--format",
            "davis",
            "--out",
            str(tmp_path / "out"),
            "--label-config",
            str(REPO / "docs" / "labeling-config.xml"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert (read_index_png(tmp_path / "out/Annotations/clip/00001.png") == 2).sum() == int(
        disk(10, 10, 5).sum()
    )
    (tmp_path / "bad.json").write_text("{not json")
    assert (
        cli_main(
            [
                "export",
                "--tasks-json",
                str(tmp_path / "bad.json"),
                "--format",
                "coco",
                "--out",
                str(tmp_path / "o2"),
            ]
        )
        == 2
    )
    assert "cannot read tasks JSON" in capsys.readouterr().err
    assert (
        cli_main(
            [
                "export",
                "--tasks-json",
                str(tmp_path / "missing.json"),
                "--format",
                "coco",
                "--out",
                str(tmp_path / "o3"),
            ]
        )
        == 2
    )
    with pytest.raises(SystemExit):
        cli_main(["export", "--tasks-json", "x.json", "--format", "voc", "--out", "o"])
