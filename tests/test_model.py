"""The LS adapter's per-task memory: remembered labels and correction priors."""

from __future__ import annotations

import numpy as np

from backend.config import Settings
from backend.ls import rle
from model import TrackAnythingModel
from tests.conftest import TWO_LABEL_CONFIG as CONFIG
from tests.conftest import load_fixture, write_frames
from tests.fakes import fake_engine


def kp(x, y, frame, label="A", positive=True):
    return {
        "type": "keypointlabels",
        "from_name": "kp",
        "to_name": "image",
        "item_index": frame,
        "original_width": 320,
        "original_height": 240,
        "value": {"x": x, "y": y, "keypointlabels": [label]},
        "is_positive": positive,
    }


def request(urls, *regions):
    return {
        "tasks": [{"id": 4, "data": {"frames": urls}}],
        "label_config": CONFIG,
        "params": {"context": {"result": list(regions)}},
    }


def make(tmp_path):
    urls = write_frames(tmp_path / "media", "f", 6)
    settings = Settings(local_files_root=tmp_path / "media", model_dir=tmp_path / "md")
    engine = fake_engine()
    priors = []
    predict = engine.segmenter.predict

    def recording(points, labels, *, mask_prior=None, **kw):
        priors.append(None if mask_prior is None else mask_prior.copy())
        return predict(points, labels, mask_prior=mask_prior, **kw)

    engine.segmenter.predict = recording
    return TrackAnythingModel(settings, engine_factory=lambda: engine), urls, priors


def test_correction_click_refines_the_shown_mask_and_reaches_back_to_the_keyframe(tmp_path):
    from backend.ls import rle

    model, urls, priors = make(tmp_path)
    first = model.predict(request(urls, kp(30, 50, 0)))["results"][0]
    assert len(first["result"]) == 6 and priors == [None]
    # the annotator corrects frame 3: only frame 3 is segmented, with the shown mask as prior
    second = model.predict(request(urls, kp(30, 50, 0), kp(34, 50, 3)))["results"][0]
    assert len(priors) == 2, "frame 0's clicks did not change: not segmented again"
    shown3 = next(r for r in first["result"] if r["item_index"] == 3)
    np.testing.assert_array_equal(priors[1] > 0.5, rle.decode(shown3["value"]["rle"], 240, 320))
    by_frame = {r["item_index"]: r for r in second["result"]}
    assert sorted(by_frame) == list(range(6))
    # frames 1-2 splice the kept masks and a backward pass from frame 3: the fake tracker's
    # passes agree alike on both, so they meet at the later middle frame, 2
    changed = [
        f for f in range(6) if by_frame[f]["value"]["rle"] != first["result"][f]["value"]["rle"]
    ]
    assert changed == [2, 3, 4, 5], "the keyframe and the frame nearer to it are kept"
    assert by_frame[2]["value"]["rle"] == by_frame[3]["value"]["rle"]
    jobs = model.list_jobs()["jobs"]
    assert jobs[0]["frames_done"] == 6
    # both restarted passes (forward, then back) get frame 0's shown mask to learn the
    # object's looks from, besides the corrected mask on frame 3
    shown0 = rle.decode(first["result"][0]["value"]["rle"], 240, 320)
    for session in model.engine.tracker.sessions[-2:]:
        assert [(f, o) for f, o, _ in session.added] == [(3, 1), (0, 1)]
        np.testing.assert_array_equal(session.added[1][2], shown0)


def test_a_correction_between_keyframes_reaches_the_next_keyframe_only(tmp_path):
    model, urls, priors = make(tmp_path)
    first = model.predict(request(urls, kp(30, 50, 0), kp(60, 50, 4)))["results"][0]
    n = len(priors)
    second = model.predict(request(urls, kp(30, 50, 0), kp(26, 50, 2), kp(60, 50, 4)))
    assert len(priors) - n == 1, "only the corrected frame is segmented"
    before = {r["item_index"]: r["value"]["rle"] for r in first["result"]}
    after = {r["item_index"]: r["value"]["rle"] for r in second["results"][0]["result"]}
    assert sorted(after) == list(range(6))
    # frames 2-3 re-propagated; frame 1, the only one between frame 0 and the correction, is
    # where the passes meet: it takes the backward pass from frame 2
    assert [f for f in range(6) if after[f] != before[f]] == [1, 2, 3]
    old, new, mid = (rle.decode(d[f], 240, 320) for d, f in ((before, 1), (after, 2), (after, 1)))
    assert np.array_equal(mid, new) and not np.array_equal(mid, old)


def test_other_labels_are_tracked_jointly_but_not_returned(tmp_path):
    model, urls, _ = make(tmp_path)
    model.predict(request(urls, kp(30, 50, 0, "A")))
    answer = model.predict(request(urls, kp(70, 50, 0, "B")))["results"][0]
    labels = {r["value"]["brushlabels"][0] for r in answer["result"]}
    assert labels == {"B"}
    assert {r["id"] for r in answer["result"]} == {f"tam-o2-f{i}" for i in range(6)}


def test_identical_request_reuses_the_first_answer(tmp_path):
    model, urls, priors = make(tmp_path)
    body = request(urls, kp(30, 50, 0))
    first = model.predict(body)["results"][0]
    runs = len(model.engine.tracker.sessions)
    assert model.predict(body)["results"][0] == first
    assert len(priors) == 1, "answered from the session: the segmenter ran once"
    assert len(model.engine.tracker.sessions) == runs, "and nothing was propagated again"


def test_a_task_with_other_frames_gets_a_fresh_session(tmp_path):
    model, urls, priors = make(tmp_path)
    model.predict(request(urls, kp(30, 50, 0)))
    other = write_frames(tmp_path / "media", "g", 6)
    answer = model.predict(request(other, kp(70, 50, 0)))["results"][0]
    assert priors[-1] is None, "no prior from the other clip's masks"
    assert len(answer["result"]) == 6
    assert len(model.sessions) == 1, "the old clip's session is dropped"


def test_two_instances_with_equal_task_ids_do_not_share_state(tmp_path):
    model, urls, priors = make(tmp_path)
    body_a = request(urls, kp(30, 50, 0, "A"))
    body_a["tasks"][0]["created_at"] = "2026-11-01T10:00:00Z"
    model.predict(body_a)
    body_b = request(urls, kp(70, 50, 0, "B"))
    body_b["tasks"][0]["created_at"] = "2026-11-02T09:00:00Z"
    model.predict(body_b)
    session = model.engine.tracker.sessions[-1]
    assert {o for _, o, _ in session.added} == {2}, "instance B does not track A's object"


def test_fixture_config_still_answers(tmp_path):
    model, _, _ = make(tmp_path)
    write_frames(tmp_path / "media", "frames", 5)
    out = model.predict(load_fixture("07_")["body"])["results"][0]
    assert out["result"]


def test_batch_without_prompts_stores_nothing(tmp_path):
    model, urls, _ = make(tmp_path)
    bare = {"tasks": [{"id": 9, "data": {"frames": urls}}], "label_config": CONFIG}
    assert model.predict(bare) == {"results": []}, "Label Studio stores no empty prediction"
    annotated = {"id": 10, "data": {"frames": urls}, "annotations": [{"result": [kp(30, 50, 0)]}]}
    mixed = dict(bare, tasks=[bare["tasks"][0], annotated])
    results = model.predict(mixed)["results"]
    assert len(results) == 2 and results[0]["result"] == [] and len(results[1]["result"]) == 6


def test_a_box_through_predict(tmp_path):
    model, urls, _ = make(tmp_path)
    config = CONFIG.replace(
        "</View>",
        '<RectangleLabels name="box" toName="image" smart="true"><Label value="A"/>'
        "</RectangleLabels></View>",
    )
    box = {"type": "rectanglelabels", "from_name": "box", "to_name": "image", "item_index": 1,
           "value": {"x": 25, "y": 25, "width": 50, "height": 50, "rectanglelabels": ["A"]}}  # fmt: skip
    body = {"tasks": [{"id": 11, "data": {"frames": urls}}], "label_config": config,
            "params": {"context": {"result": [box]}}}  # fmt: skip
    answer = model.predict(body)["results"][0]["result"]
    assert sorted(r["item_index"] for r in answer) == list(range(6))
    frame1 = next(r for r in answer if r["item_index"] == 1)
    mask = rle.decode(frame1["value"]["rle"], 240, 320)
    assert mask[60:180, 80:240].all() and mask.sum() == 120 * 160


def test_after_accept_all_a_lone_correction_keeps_the_earlier_clicks(tmp_path):
    """Label Studio drops the clicks of accepted suggestions: the correction arrives alone,
    with our accepted regions in the task's draft. The first click must still count."""
    model, urls, priors = make(tmp_path)
    first = model.predict(request(urls, kp(30, 50, 0)))["results"][0]["result"]
    accepted = [dict(r, origin="prediction") for r in first]  # ids tam-o1-f<k> kept by LS
    body = request(urls, kp(60, 50, 3))
    body["tasks"][0]["drafts"] = [{"id": 1, "result": accepted}]
    second = model.predict(body)["results"][0]["result"]
    before = {r["item_index"]: r["value"]["rle"] for r in first}
    after = {r["item_index"]: r["value"]["rle"] for r in second}
    # the corrected disk does not touch the carried one: frames before it keep their masks
    assert [f for f in range(6) if after[f] != before[f]] == [3, 4, 5], "forward from frame 3"
    assert len(priors) == 2, "frame 0 was not segmented again"
    # without the accepted regions the same lone click means: frame 0's click was removed
    model2, urls2, _ = make(tmp_path / "other")
    model2.predict(request(urls2, kp(30, 50, 0)))
    alone = model2.predict(request(urls2, kp(60, 50, 3)))["results"][0]["result"]
    assert {r["item_index"] for r in alone} == set(range(6))
    assert model2.sessions and all(
        set(o.keyframes) == {3} for s in model2.sessions._sessions.values() for o in s.prompts()
    )


def test_frames_below_the_quality_threshold_are_logged(tmp_path, caplog):
    model, urls, _ = make(tmp_path)
    model.settings = Settings(**{**vars(model.settings), "quality_threshold": 0.85})
    with caplog.at_level("INFO", logger="tam.model"):
        model.predict(request(urls, kp(30, 50, 0)))
    (line,) = [r.getMessage() for r in caplog.records if "below quality" in r.getMessage()]
    assert "5 frame(s) below quality 0.85: [1, 2, 3, 4, 5]" in line, line


def test_correction_reach_forward_keeps_every_earlier_frame(tmp_path):
    model, urls, _ = make(tmp_path)
    model.settings = Settings(**{**vars(model.settings), "correction_reach": "forward"})
    model.sessions = type(model.sessions)(model.sessions.budget_bytes, reach_back=False)
    first = model.predict(request(urls, kp(30, 50, 0)))["results"][0]["result"]
    second = model.predict(request(urls, kp(30, 50, 0), kp(60, 50, 3)))["results"][0]["result"]
    before = {r["item_index"]: r["value"]["rle"] for r in first}
    after = {r["item_index"]: r["value"]["rle"] for r in second}
    assert [f for f in range(6) if after[f] != before[f]] == [3, 4, 5]
    settings = Settings(local_files_root=tmp_path / "media", model_dir=tmp_path / "md",
                        correction_reach="forward")  # fmt: skip
    assert not TrackAnythingModel(settings, engine_factory=fake_engine).sessions.reach_back
