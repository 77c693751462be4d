"""Round trip against a real Label Studio 1.23.2: import-video → predict → accept → export.

The exported DAVIS masks must equal the masks our pipeline produced, frame for frame, across
two chunks of one video. A second test imports through LS's upload API.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from backend.cli import main as cli_main
from backend.ls.export import read_index_png
from backend.ls.labelconfig import parse_label_config
from backend.ls.results import brush_region
from tests.conftest import DAVIS as DAVIS_DIR

pytestmark = pytest.mark.e2e

FRAMES, SHORT_SIDE, CHUNK = 8, 240, 5


@pytest.fixture
def ls_env(label_studio, monkeypatch):
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio.base_url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.pat)
    monkeypatch.setenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", str(label_studio.media_root))
    return label_studio


def _last_json_line(text: str) -> dict:
    return json.loads([ln for ln in text.splitlines() if ln.startswith("{")][-1])


def _tasks(ls, project_id: int) -> list[dict]:
    tasks = ls.client.get("/api/tasks", params={"project": project_id, "page_size": 100})
    tasks = tasks["tasks"] if isinstance(tasks, dict) else tasks
    return sorted(tasks, key=lambda t: t["data"]["frame_offset"])


def _interior_click(seq_dir, size) -> tuple[int, int]:
    gt = cv2.imread(str(seq_dir / "00000.png"), cv2.IMREAD_GRAYSCALE) > 127
    gt = cv2.resize(gt.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
    dist = cv2.distanceTransform(gt, cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def test_import_predict_accept_export_round_trip(ls_env, tmp_path, capsys):
    ls = ls_env
    seq = DAVIS_DIR / "JPEGImages" / "480p" / "blackswan"
    code = cli_main(
        [
            "import-video",
            str(seq),
            "--create-project",
            "roundtrip",
            "--labels",
            "swan,other",
            "--max-frames",
            str(FRAMES),
            "--resize",
            str(SHORT_SIDE),
            "--chunk-size",
            str(CHUNK),
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    project_id = _last_json_line(out.out)["project"]
    tasks = _tasks(ls, project_id)
    assert [len(t["data"]["frames"]) for t in tasks] == [CHUNK, FRAMES - CHUNK]
    assert [t["data"]["frame_offset"] for t in tasks] == [0, CHUNK]

    # Label Studio serves the extracted frames through the Local Storage we created
    first = ls.client.request("GET", tasks[1]["data"]["frames"][0])
    assert first.status_code == 200
    img = cv2.imdecode(np.frombuffer(first.content, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (240, 427, 3)

    # predict offline with our CLI on the very frames LS serves
    frames_dir = ls.media_root / "videos" / "blackswan"
    x, y = _interior_click(DAVIS_DIR / "Annotations" / "480p" / "blackswan", (427, 240))
    masks_dir = tmp_path / "pred"
    code = cli_main(
        [
            "segment",
            str(frames_dir),
            "--engine",
            "classical",
            "--label",
            "swan",
            "--click",
            f"{x},{y}",
            "--out",
            str(masks_dir),
        ]
    )
    assert code == 0, capsys.readouterr().err
    produced = [read_index_png(masks_dir / f"{i:05d}.png") for i in range(FRAMES)]
    assert all((m == 1).any() for m in produced)

    project = ls.client.get(f"/api/projects/{project_id}")
    schema = parse_label_config(project["label_config"])
    for t in tasks:
        offset = t["data"]["frame_offset"]
        result = [
            brush_region(
                produced[offset + i] == 1, frame=i, label="swan", obj_id=1, schema=schema, score=0.9
            )
            for i in range(len(t["data"]["frames"]))
        ]
        pred = ls.client.post(
            "/api/predictions",
            {"task": t["id"], "result": result, "model_version": "roundtrip", "score": 0.9},
        )
        # "accept": the annotation the UI saves after accepting every suggestion
        ls.client.post(
            f"/api/tasks/{t['id']}/annotations",
            {"result": pred["result"], "parent_prediction": pred["id"], "was_cancelled": False},
        )

    export_dir = tmp_path / "export"
    code = cli_main(
        ["export", "--project", str(project_id), "--format", "davis", "--out", str(export_dir)]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    summary = _last_json_line(out.out)
    assert summary["sequences"] == 1 and summary["frames"] == FRAMES
    assert summary["objects"] == {"swan": 1, "other": 2}
    for i in range(FRAMES):
        got = read_index_png(export_dir / "Annotations" / "blackswan" / f"{i:05d}.png")
        assert np.array_equal(got, produced[i]), f"frame {i} differs"

    code = cli_main(
        ["export", "--project", str(project_id), "--format", "ytvis", "--out", str(tmp_path / "yt")]
    )
    assert code == 0, capsys.readouterr().err
    yt = json.loads((tmp_path / "yt" / "ytvis.json").read_text())
    (track,) = yt["annotations"]
    assert track["track_id"] == 1 and all(s is not None for s in track["segmentations"])
    assert track["areas"] == [int((m == 1).sum()) for m in produced]


def test_import_through_the_upload_api(ls_env, tmp_path, capsys):
    ls = ls_env
    video = tmp_path / "moving dot.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (96, 64))
    for i in range(6):
        img = np.zeros((64, 96, 3), np.uint8)
        cv2.circle(img, (10 + 10 * i, 32), 8, (0, 255, 0), -1)
        writer.write(img)
    writer.release()
    code = cli_main(
        ["import-video", str(video), "--create-project", "upload", "--upload", "--stride", "2"]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    project_id = _last_json_line(out.out)["project"]
    (task,) = _tasks(ls, project_id)
    frames = task["data"]["frames"]
    assert len(frames) == 3 and all(u.startswith("/data/upload/") for u in frames)
    assert task["data"]["fps"] == pytest.approx(5.0)
    r = ls.client.request("GET", frames[2])
    assert r.status_code == 200
    img = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (64, 96, 3)
    assert img[32, 50].tolist()[1] > 150  # the dot of source frame 4 is at x = 50
