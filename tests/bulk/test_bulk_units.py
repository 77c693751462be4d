"""The bulk pieces that need neither Label Studio nor Ray: which prompts a task's run reads,
its signature, the report, the failure classes and the command line's one-line errors."""

from __future__ import annotations

import json

import pytest

from backend.bulk.records import BulkReport, Failure, Outcome, TaskResult
from backend.bulk.worker import classify
from backend.frames import MediaError
from backend.ls.batch import (
    PromptSource,
    choose_prompts,
    prediction_signature,
    prompt_signature,
    sign_prediction,
)
from backend.ls.client import LabelStudioError
from backend.ls.labelconfig import parse_label_config
from backend.ls.tasks import TaskError
from backend.ls.video_task import parse_video_config
from tests.conftest import TWO_LABEL_CONFIG

SCHEMA = parse_label_config(TWO_LABEL_CONFIG)
VIDEO = parse_video_config(
    '<View><Labels name="l" toName="v"><Label value="Car"/></Labels>'
    '<Video name="v" value="$video" framerate="25"/><VideoRectangle name="box" toName="v"/></View>'
)
FRAMES = [f"/data/local-files/?d=c/{i}.jpg" for i in range(4)]


def kp(x: float, frame: int = 0, label: str = "A") -> dict:
    return {"type": "keypointlabels", "from_name": "kp", "to_name": "image", "item_index": frame,
            "original_width": 100, "original_height": 100, "is_positive": True,
            "value": {"x": x, "y": 50.0, "keypointlabels": [label]}}  # fmt: skip


def task(annotations=(), **extra) -> dict:
    return {"id": 7, "data": {"frames": FRAMES}, "annotations": list(annotations), **extra}


def test_the_newest_annotation_with_prompts_wins_over_drafts():
    t = task([{"id": 1, "updated_at": "2026-01-01", "result": [kp(10)]},
              {"id": 2, "updated_at": "2026-01-02", "result": [kp(20)]}])  # fmt: skip
    draft = {"id": 9, "updated_at": "2026-02-01", "result": [kp(30)]}
    chosen = choose_prompts(t, SCHEMA, [draft])
    assert chosen.source is PromptSource.ANNOTATION and chosen.item_id == 2
    assert chosen.result[0]["value"]["x"] == 20


def test_a_draft_is_used_when_no_annotation_holds_prompts():
    t = task([{"id": 1, "updated_at": "2026-01-03", "result": [kp(10)], "was_cancelled": True},
              {"id": 2, "updated_at": "2026-01-01", "result": []}])  # fmt: skip
    drafts = [{"id": 8, "updated_at": "2026-01-01", "result": [kp(30)]},
              {"id": 9, "updated_at": "2026-01-05", "result": [kp(40)]},
              {"id": 10, "updated_at": "2026-01-09", "result": []}]  # fmt: skip
    chosen = choose_prompts(t, SCHEMA, drafts)
    assert chosen.source is PromptSource.DRAFT and chosen.item_id == 9
    assert choose_prompts(task(), SCHEMA, []).source is PromptSource.NONE


def test_the_signature_follows_prompts_and_frames_only():
    a = prompt_signature(task(), SCHEMA, [kp(10)], max_frames=100)
    assert a == prompt_signature(task(), SCHEMA, [dict(kp(10), id="other-id")], max_frames=100)
    assert a != prompt_signature(task(), SCHEMA, [kp(11)], max_frames=100)
    assert a != prompt_signature(task(), SCHEMA, [kp(10, frame=1)], max_frames=100)
    moved = {"id": 7, "data": {"frames": FRAMES[:3]}}
    assert a != prompt_signature(moved, SCHEMA, [kp(10)], max_frames=100)


def test_a_video_signature_covers_boxes_and_the_video():
    region = {"id": "r", "type": "videorectangle", "from_name": "box", "to_name": "v",
              "value": {"labels": ["Car"], "framesCount": 5, "sequence": [
                  {"frame": 1, "x": 10, "y": 10, "width": 20, "height": 20, "enabled": True}]}}  # fmt: skip
    t = {"id": 3, "data": {"video": "/data/local-files/?d=v.mp4"}}
    a = prompt_signature(t, VIDEO, [region], max_frames=100)
    other = {"id": 3, "data": {"video": "/data/local-files/?d=w.mp4"}}
    assert a != prompt_signature(other, VIDEO, [region], max_frames=100)
    region["value"]["sequence"][0]["x"] = 11
    assert a != prompt_signature(t, VIDEO, [region], max_frames=100)


def test_the_signature_rides_in_the_first_regions_meta():
    pred = {"result": [{"id": "a", "meta": {"text": "kept"}}, {"id": "b"}], "score": 0.5}
    signed = sign_prediction(pred, "abc")
    assert prediction_signature(signed) == "abc"
    assert signed["result"][0]["meta"]["text"] == "kept" and "meta" not in signed["result"][1]
    assert "meta" not in pred["result"][1] and prediction_signature(pred) is None
    assert prediction_signature(sign_prediction({"result": []}, "abc")) is None


@pytest.mark.parametrize(
    ("exc", "failure"),
    [
        (MediaError("frame 3 (x): not a readable image (corrupt or unsupported format)"),
         Failure.PERMANENT),
        (MediaError("x: not complete within MEDIA_TIMEOUT_S=30 s"), Failure.TRANSIENT),
        (MediaError("x: HTTP 503"), Failure.TRANSIENT),
        (MediaError("x: HTTP 404"), Failure.PERMANENT),
        (TaskError("task 1: data has no 'frames'"), Failure.PERMANENT),
        (LabelStudioError("cannot reach Label Studio at http://h (ConnectError)"),
         Failure.TRANSIENT),
        (LabelStudioError("task 5: not found in Label Studio (HTTP 404)"), Failure.PERMANENT),
        (OSError("disk full"), Failure.TRANSIENT),
    ],
)  # fmt: skip
def test_which_failures_are_retried(exc, failure):
    assert classify(exc) is failure


def test_the_report_table_and_json(tmp_path):
    report = BulkReport(7, model_version="tam-x", workers=2, seconds=2.0)
    report.add(TaskResult(1, Outcome.DONE, frames=10))
    report.add(TaskResult(2, Outcome.FAILED, "frame 3: not a readable image", Failure.PERMANENT))
    report.add(TaskResult(3, Outcome.NO_PROMPTS))
    report.add(TaskResult(4, Outcome.SKIPPED, frames=0))
    table = report.table()
    assert "5.00 frames/s" in table and "task 2 (after 1 attempt(s)): frame 3" in table
    assert "no prompts (not touched): tasks 3" in table
    path = tmp_path / "r.json"
    report.write(path)
    data = json.loads(path.read_text())
    assert data["counts"] == {"done": 1, "skipped": 1, "no-prompts": 1, "failed": 1,
                              "not-run": 0}  # fmt: skip
    assert data["tasks"][1]["failure"] == "permanent" and data["frames"] == 10


def _cli(monkeypatch, capsys, env: dict, *argv: str) -> tuple[int, str]:
    from backend.cli import main

    for key in ("LABEL_STUDIO_URL", "LABEL_STUDIO_HOST", "LABEL_STUDIO_API_KEY",
                "LABEL_STUDIO_ACCESS_TOKEN"):  # fmt: skip
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code = main(["bulk", *argv])
    return code, capsys.readouterr().err


def test_command_line_without_settings_is_one_line(monkeypatch, capsys):
    code, err = _cli(monkeypatch, capsys, {}, "--project", "1")
    assert code == 2 and err.strip() == "error: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY"


def test_command_line_unreachable_label_studio_is_one_line(monkeypatch, capsys):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    code, err = _cli(monkeypatch, capsys, {"LABEL_STUDIO_URL": url, "LABEL_STUDIO_API_KEY": "k"},
                     "--project", "1")  # fmt: skip
    assert code == 2
    assert err.strip().startswith(f"error: cannot reach Label Studio at {url}")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_help_names_the_options(capsys):
    from backend.cli import main

    with pytest.raises(SystemExit) as done:
        main(["bulk", "--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    for option in ("--project", "--address", "--workers", "--gpus-per-worker", "--report"):
        assert option in out


def test_the_progress_bar_shows_frames_per_second():
    import io

    from tqdm import tqdm

    from backend.bulk.cli import _updater

    out = io.StringIO()
    bar = tqdm(total=3, file=out, mininterval=0)
    report = BulkReport(1)
    update = _updater(bar, 0.0)
    report.add(TaskResult(5, Outcome.DONE, frames=20))
    update(report.results[5], report)
    bar.refresh()
    assert bar.n == 1 and "frames/s done=1 skipped=0 failed=0" in out.getvalue()
    bar.close()
