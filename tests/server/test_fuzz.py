"""Property-based fuzzing: ≥ 1,000 malformed bodies never yield a 5xx and never hang."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.config import Settings
from backend.server.app import create_app
from model import TrackAnythingModel
from tests.conftest import fake_engine, load_fixture, write_frames

CONFIG = load_fixture("20_")["label_config"]
FRAME_URLS = [f"/data/local-files/?d=frames/frame_{i:03d}.jpg" for i in range(5)]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def keypoint(**over):
    """A keypoint region whose fields hypothesis may replace with junk."""
    region = {
        "original_width": 320,
        "original_height": 240,
        "item_index": 0,
        "value": {"x": 50.0, "y": 50.0, "keypointlabels": ["Object"]},
        "is_positive": True,
        "from_name": "kp",
        "to_name": "image",
        "type": "keypointlabels",
    }
    region.update(over)
    return region


mutated_regions = st.builds(
    keypoint,
    item_index=st.one_of(st.integers(-10, 10), json_values),
    value=st.one_of(
        st.fixed_dictionaries(
            {
                "x": st.one_of(st.floats(-1e3, 1e3), json_values),
                "y": st.one_of(st.floats(-1e3, 1e3), json_values),
                "keypointlabels": st.one_of(
                    st.just(["Object"]), st.lists(st.text(max_size=6), max_size=2), json_values
                ),
            }
        ),
        json_values,
    ),
    is_positive=json_values,
    type=st.sampled_from(["keypointlabels", "brushlabels", "rectanglelabels"]),
)

predict_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {
            "tasks": st.one_of(
                json_values,
                st.lists(
                    st.fixed_dictionaries(
                        {
                            "id": st.one_of(st.integers(0, 5), json_values),
                            "data": st.one_of(
                                json_values,
                                st.fixed_dictionaries(
                                    {
                                        "frames": st.one_of(
                                            st.just(FRAME_URLS),
                                            st.lists(st.sampled_from(FRAME_URLS), max_size=3),
                                            json_values,
                                            st.just(["/data/local-files/?d=../../etc/passwd"]),
                                            st.just(["http://10.0.0.1/x.jpg"]),
                                        )
                                    }
                                ),
                            ),
                        }
                    ),
                    max_size=2,
                ),
            ),
            "label_config": st.one_of(st.just(CONFIG), json_values, st.just("<View><bad")),
            "params": st.one_of(
                json_values,
                st.fixed_dictionaries(
                    {
                        "context": st.one_of(
                            json_values,
                            st.fixed_dictionaries(
                                {"result": st.lists(mutated_regions, min_size=1, max_size=3)}
                            ),
                        )
                    }
                ),
            ),
        }
    ),
)

setup_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"project": json_values, "schema": st.one_of(st.just(CONFIG), json_values)}
    ),
)
webhook_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {
            "action": st.one_of(st.sampled_from(["ANNOTATION_CREATED", "X"]), json_values),
            "task": json_values,
        }
    ),
)
raw_bytes = st.binary(max_size=200)


_CLIENT = {}


def client(tmp_path_factory):
    if "c" not in _CLIENT:
        root = tmp_path_factory.mktemp("media")
        write_frames(root, "frames", 5)
        (root / "frames" / "frame_004.jpg").write_bytes(b"not a jpeg")  # one corrupt frame
        s = Settings(local_files_root=root, max_frames=50, model_dir=root / "md")
        model = TrackAnythingModel(s, engine_factory=fake_engine)
        _CLIENT["c"] = create_app(s, model, metrics=model.metrics).test_client()
    return _CLIENT["c"]


FUZZ = settings(
    max_examples=400,
    deadline=5000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _post(c, path, body):
    data = body if isinstance(body, bytes) else json.dumps(body, allow_nan=True)
    resp = c.post(path, data=data, content_type="application/json")
    assert resp.status_code < 500, (path, resp.status_code, resp.get_data()[:500])
    assert resp.is_json, (path, resp.get_data()[:200])
    return resp


@FUZZ
@given(body=st.one_of(predict_bodies, raw_bytes))
def test_fuzz_predict(tmp_path_factory, body):
    _post(client(tmp_path_factory), "/predict", body)


@settings(max_examples=300, deadline=2000, suppress_health_check=list(HealthCheck))
@given(body=st.one_of(setup_bodies, raw_bytes))
def test_fuzz_setup(tmp_path_factory, body):
    _post(client(tmp_path_factory), "/setup", body)


@settings(max_examples=300, deadline=2000, suppress_health_check=list(HealthCheck))
@given(body=st.one_of(webhook_bodies, raw_bytes))
def test_fuzz_webhook(tmp_path_factory, body):
    _post(client(tmp_path_factory), "/webhook", body)


def test_server_still_answers_after_fuzzing(tmp_path_factory):
    c = client(tmp_path_factory)
    assert c.get("/health").status_code == 200
    body = load_fixture("07_")["body"]
    body["tasks"][0]["data"]["frames"] = FRAME_URLS[:4]  # frame 4 is the corrupt one
    resp = c.post("/predict", json=body)
    assert resp.status_code == 200 and resp.get_json()["results"][0]["result"]
    body["tasks"][0]["data"]["frames"] = FRAME_URLS
    resp = c.post("/predict", json=body)
    assert resp.status_code == 422 and "frame 4" in resp.get_json()["errors"][0]


def brush_region(rle, width, height, index):
    return {
        "type": "brushlabels",
        "from_name": "brush",
        "to_name": "image",
        "item_index": index,
        "original_width": width,
        "original_height": height,
        "value": {"format": "rle", "rle": rle, "brushlabels": ["Object"]},
    }


brush_bodies = st.builds(
    lambda regions: {
        "tasks": [{"id": 3, "data": {"frames": FRAME_URLS[:4]}}],
        "label_config": CONFIG,
        "params": {"context": {"result": regions}},
    },
    st.lists(
        st.builds(
            brush_region,
            st.one_of(
                st.lists(st.integers(-5, 300), max_size=64),
                st.lists(st.integers(0, 255), min_size=4, max_size=4).map(lambda h: h + [0] * 8),
                json_values,
            ),
            st.one_of(st.just(320), st.integers(-2, 40000), json_values),
            st.one_of(st.just(240), st.integers(-2, 40000), json_values),
            st.one_of(st.integers(-1, 5), json_values),
        ),
        min_size=1,
        max_size=3,
    ),
)
nested_bodies = st.integers(1, 3000).map(lambda d: '{"tasks": ' + "[" * d + "]" * d + "}")


@FUZZ
@given(body=st.one_of(brush_bodies, nested_bodies))
def test_fuzz_brush_rle_and_deep_nesting(tmp_path_factory, body):
    _post(client(tmp_path_factory), "/predict", body.encode() if isinstance(body, str) else body)
