"""A tracker's own presence probability is the frame's quality, and below one half the object is
lost there: no mask (so no brush region and no video box on that frame)."""

from __future__ import annotations

import dataclasses

import numpy as np

from backend.pipeline import LOST_BELOW, segment_video
from backend.types import Click, ObjectPrompt
from tests.fakes import CopyTracker, fake_engine

PRESENCE = [0.97, 0.8, 0.2, 0.6]  # frame 2: the tracker says the object is gone


class PresenceTracker(CopyTracker):
    def start(self, frames):
        session = super().start(frames)
        copy = session.propagate

        def propagate(start, *, reverse=False, stop=None):
            for tf in copy(start, reverse=reverse, stop=stop):
                yield dataclasses.replace(tf, presence={o: PRESENCE[tf.index] for o in tf.obj_ids})

        session.propagate = propagate
        return session


def test_presence_is_the_quality_and_marks_lost_frames():
    frames = [np.zeros((40, 60, 3), np.uint8) for _ in PRESENCE]
    engine = dataclasses.replace(fake_engine(), tracker=PresenceTracker())
    obj = ObjectPrompt(1, "A", clicks={0: [Click(30, 20)]})
    out = {fp.index: fp for fp in segment_video(engine, frames, [obj])}
    assert sorted(out) == [0, 1, 2, 3]
    assert out[1].scores[1] == PRESENCE[1] and out[3].scores[1] == PRESENCE[3]
    assert out[0].scores[1] == 0.9, "the keyframe keeps the segmenter's score"
    assert PRESENCE[2] < LOST_BELOW and not out[2].masks[1].any() and out[2].scores[1] == 0.2
    assert out[1].masks[1].any() and out[3].masks[1].any()
