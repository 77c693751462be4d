"""The LS adapter's per-task memory: remembered labels and correction priors."""

from __future__ import annotations

import numpy as np

from backend.config import Settings
from backend.pipeline import apply_correction_priors
from backend.types import Click, ObjectPrompt
from model import TrackAnythingModel
from tests.conftest import load_fixture, write_frames
from tests.fakes import fake_engine

CONFIG = """<View>
  <Image name="image" valueList="$frames"/>
  <BrushLabels name="brush" toName="image"><Label value="A"/><Label value="B"/></BrushLabels>
  <KeyPointLabels name="kp" toName="image" smart="true">
    <Label value="A" smart="true"/><Label value="B" smart="true"/>
  </KeyPointLabels>
</View>"""


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

    def recording(points, labels, *, mask_prior=None, multimask_output=True):
        priors.append(None if mask_prior is None else mask_prior.copy())
        return predict(points, labels, mask_prior=mask_prior, multimask_output=multimask_output)

    engine.segmenter.predict = recording
    return TrackAnythingModel(settings, engine_factory=lambda: engine), urls, priors


def test_correction_click_refines_the_shown_mask_and_keeps_earlier_frames(tmp_path):
    from backend.ls import rle

    model, urls, priors = make(tmp_path)
    first = model.predict(request(urls, kp(30, 50, 0)))["results"][0]
    assert len(first["result"]) == 6 and priors == [None]
    # the annotator corrects frame 3: only frame 3 is segmented, with the shown mask as prior
    second = model.predict(request(urls, kp(30, 50, 0), kp(60, 50, 3)))["results"][0]
    assert len(priors) == 2, "frame 0's clicks did not change: not segmented again"
    shown3 = next(r for r in first["result"] if r["item_index"] == 3)
    np.testing.assert_array_equal(priors[1] > 0.5, rle.decode(shown3["value"]["rle"], 240, 320))
    by_frame = {r["item_index"]: r for r in second["result"]}
    assert sorted(by_frame) == list(range(6))
    for r in first["result"][:3]:  # frames before the correction are kept as they were
        assert by_frame[r["item_index"]]["value"]["rle"] == r["value"]["rle"]
    assert by_frame[3]["value"]["rle"] != shown3["value"]["rle"], "frame 3 changed"
    jobs = model.list_jobs()["jobs"]
    assert jobs[0]["frames_done"] == 6
    # the restarted tracker gets frame 0's shown mask to learn the object's looks from
    session = model.engine.tracker.sessions[-1]
    shown0 = rle.decode(first["result"][0]["value"]["rle"], 240, 320)
    assert [(f, o) for f, o, _ in session.added] == [(3, 1), (0, 1)]
    np.testing.assert_array_equal(session.added[1][2], shown0)


def test_a_correction_before_the_last_keyframe_runs_in_full(tmp_path):
    model, urls, priors = make(tmp_path)
    model.predict(request(urls, kp(30, 50, 0), kp(60, 50, 4)))
    n = len(priors)
    model.predict(request(urls, kp(30, 50, 0), kp(65, 50, 2), kp(60, 50, 4)))
    assert len(priors) - n == 3, "every keyframe segmented again"


def test_other_labels_are_tracked_jointly_but_not_returned(tmp_path):
    model, urls, _ = make(tmp_path)
    model.predict(request(urls, kp(30, 50, 0, "A")))
    answer = model.predict(request(urls, kp(70, 50, 0, "B")))["results"][0]
    labels = {r["value"]["brushlabels"][0] for r in answer["result"]}
    assert labels == {"B"}
    assert {r["id"] for r in answer["result"]} == {f"tam-o2-f{i}" for i in range(6)}


def test_apply_correction_priors_only_fills_clicked_frames_without_masks():
    painted = np.ones((4, 4), bool)
    obj = ObjectPrompt(1, "A", clicks={0: [Click(1, 1)], 2: [Click(2, 2)]}, masks={2: painted})
    shown = {0: np.eye(4, dtype=bool), 1: np.ones((4, 4), bool)}
    store: dict = {}
    apply_correction_priors([obj], lambda oid, k: shown.get(k), store)
    assert set(obj.masks) == {0, 2}
    assert obj.masks[2] is painted and (obj.masks[0] == np.eye(4, dtype=bool)).all()
    # same clicks later: the same prior, whatever is shown now (no drift)
    again = ObjectPrompt(1, "A", clicks={0: [Click(1, 1)]})
    apply_correction_priors([again], lambda oid, k: np.zeros((4, 4), bool), store)
    assert (again.masks[0] == np.eye(4, dtype=bool)).all()
    # a changed click on that frame takes what is shown now
    changed = ObjectPrompt(1, "A", clicks={0: [Click(1, 1), Click(3, 3)]})
    apply_correction_priors([changed], lambda oid, k: shown[1], store)
    assert changed.masks[0].all()


def test_identical_request_reuses_the_first_answer(tmp_path):
    model, urls, priors = make(tmp_path)
    body = request(urls, kp(30, 50, 0))
    first = model.predict(body)["results"][0]
    assert model.predict(body)["results"][0] == first
    assert len(priors) == 1, "answered from the cache: the segmenter ran once"


def test_fixture_config_still_answers(tmp_path):
    model, _, _ = make(tmp_path)
    write_frames(tmp_path / "media", "frames", 5)
    out = model.predict(load_fixture("07_")["body"])["results"][0]
    assert out["result"]
