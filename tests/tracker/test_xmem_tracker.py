"""XMemTracker behind the Tracker/TrackerSession API, and bounded memory."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.frames import ArrayFrameSource
from backend.tracker.base import Tracker, TrackerSession
from backend.tracker.xmem.checkpoint import network_from_state_dict
from backend.tracker.xmem.config import XMemConfig
from backend.tracker.xmem.memory import MemoryManager
from backend.tracker.xmem.tracker import XMemTracker, internal_shape

GOLDEN = Path(__file__).resolve().parents[2] / ".." / "shared" / "xmem-golden"


def _golden_module(name: str):
    spec = importlib.util.spec_from_file_location(f"golden_{name}", GOLDEN / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def network():
    sd = _golden_module("make_weights").as_torch_state_dict(
        str(GOLDEN / "xmem_state_dict_keys.tsv")
    )
    net = network_from_state_dict(sd)
    net.fold_batchnorm()
    return net


@pytest.fixture(scope="module")
def case():
    return _golden_module("compare_outputs").load_case(str(GOLDEN / "data"), "tam_2obj")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class CountingSource(ArrayFrameSource):
    """Records every frame access, to check frames are streamed one at a time."""

    def __init__(self, frames):
        super().__init__(frames)
        self.reads: list[int] = []

    def __getitem__(self, index):
        self.reads.append(index)
        return super().__getitem__(index)


def small_clip(n: int = 6, h: int = 48, w: int = 64) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]
    mask = np.zeros((h, w), bool)
    mask[10:30, 15:40] = True
    return frames, mask


def test_implements_the_tracker_protocol(network):
    tracker = XMemTracker(network, internal_size=None)
    assert isinstance(tracker, Tracker)
    frames, _ = small_clip(2)
    assert isinstance(tracker.start(ArrayFrameSource(frames)), TrackerSession)


def test_native_size_tracking_reproduces_the_official_outputs(network, case):
    """Object ids 9 and 4: the smaller id takes slot 1, as golden object 1."""
    tracker = XMemTracker(network, internal_size=None, channels_last=True)
    source = CountingSource(list(case["frames"]))
    session = tracker.start(source)
    gt = case["gt_index_masks"][0]
    session.add_mask(0, 9, gt == 2)
    session.add_mask(0, 4, gt == 1)
    source.reads.clear()
    out = list(session.propagate(0, stop=5))
    assert [f.index for f in out] == list(range(6))
    assert source.reads == list(range(6))  # streamed, each frame read once
    assert all(f.obj_ids == [4, 9] for f in out)
    probs = np.stack([f.probs for f in out])
    assert probs.dtype == np.float32
    assert np.abs(probs - case["probs_f32"][:6]).max() <= 1e-4


def test_internal_resolution_and_native_output(network):
    frames, mask = small_clip(4, 48, 64)
    tracker = XMemTracker(network, internal_size=32)
    session = tracker.start(ArrayFrameSource(frames))
    session.add_mask(0, 1, mask)
    out = list(session.propagate(0))
    assert [f.probs.shape for f in out] == [(2, 48, 64)] * 4
    for f in out:
        assert np.allclose(f.probs.sum(0), 1, atol=1e-5)
    start_mask = out[0].masks()[1]
    assert (start_mask == mask).mean() > 0.97  # nearest down, bilinear up


def test_internal_shape():
    assert internal_shape(1080, 1920, 480) == (480, 853)
    assert internal_shape(480, 854, 480) == (480, 854)
    assert internal_shape(99, 149, None) == (99, 149)
    assert internal_shape(99, 149, 0) == (99, 149)


def test_corrections_new_objects_and_reverse(network):
    frames, mask = small_clip(6)
    other = np.zeros_like(mask)
    other[30:45, 45:60] = True
    fix = np.roll(mask, 5, axis=1)
    tracker = XMemTracker(network, internal_size=None)
    session = tracker.start(ArrayFrameSource(frames))
    session.add_mask(0, 3, mask)
    session.add_mask(2, 8, other)  # a new object on a later keyframe
    session.add_mask(4, 3, fix)  # a correction of object 3 only
    out = list(session.propagate(0))
    assert [f.obj_ids for f in out] == [[3], [3], [3, 8], [3, 8], [3, 8], [3, 8]]
    assert [f.probs.shape[0] for f in out] == [2, 2, 3, 3, 3, 3]
    assert np.array_equal(out[2].masks()[8], other)
    assert np.array_equal(out[4].masks()[3], fix)
    assert np.array_equal(out[0].masks()[3], mask)

    back = list(session.propagate(4, reverse=True))
    assert [f.index for f in back] == [4, 3, 2, 1, 0]
    assert back[0].obj_ids == [3]  # object 8 enters at frame 2 on the way back
    assert back[2].obj_ids == [3, 8]


def test_each_propagation_starts_from_clean_memory(network):
    frames, mask = small_clip(5)
    session = XMemTracker(network, internal_size=None).start(ArrayFrameSource(frames))
    session.add_mask(0, 1, mask)
    first = [f.probs for f in session.propagate(0)]
    list(session.propagate(0, stop=2))
    second = [f.probs for f in session.propagate(0)]
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a, b)


def test_remove_object_and_errors(network):
    frames, mask = small_clip(4)
    session = XMemTracker(network, internal_size=None).start(ArrayFrameSource(frames))
    with pytest.raises(ValueError, match="shape"):
        session.add_mask(0, 1, mask[:10])
    with pytest.raises(IndexError):
        session.add_mask(9, 1, mask)
    session.add_mask(0, 1, mask)
    session.add_mask(0, 2, ~mask)
    with pytest.raises(ValueError, match="wrong side"):
        session.propagate(0, reverse=True, stop=2)
    with pytest.raises(ValueError, match="no mask"):
        session.propagate(1)
    session.remove_object(2)
    assert next(iter(session.propagate(0))).obj_ids == [1]
    session.remove_object(1)
    with pytest.raises(ValueError, match="no mask"):
        session.propagate(0)
    session.close()
    with pytest.raises(RuntimeError):
        session.propagate(0)


SMALL = XMemConfig(
    mem_every=1,
    max_mid_term_frames=4,
    min_mid_term_frames=2,
    num_prototypes=8,
    max_long_term_elements=40,
    top_k=30,
)


def test_memory_manager_stays_bounded_on_a_long_stream():
    """500 memory frames of synthetic features (h×w = 4×4): sizes plateau at the caps."""
    gen = torch.Generator().manual_seed(0)
    memory = MemoryManager(SMALL, hidden_dim=8)
    sizes = []
    for t in range(500):
        key = torch.randn(1, 16, 4, 4, generator=gen)
        shrinkage = torch.rand(1, 1, 4, 4, generator=gen) + 1
        selection = torch.rand(1, 16, 4, 4, generator=gen)
        slots = [0] if t < 50 else [0, 1]  # a second group joins later
        if t:
            memory.read(key, selection)
        memory.add_memory(
            key, shrinkage, torch.randn(len(slots), 32, 4, 4, generator=gen), slots, selection
        )
        sizes.append((memory.work.size, memory.long.size))
    work, long = np.array(sizes).T
    assert work.max() < SMALL.max_mid_term_frames * 16
    assert long.max() <= SMALL.max_long_term_elements
    assert long[-100:].min() > 0  # long-term memory in use, obsolete elements removed
    assert len(set(work[-100:].tolist())) <= SMALL.max_mid_term_frames  # cycles, no growth
    assert memory.work.num_groups == memory.long.num_groups == 2
    for store in (memory.work, memory.long):
        assert all(store.value_size(g) <= store.size for g in range(store.num_groups))


def test_tracker_memory_plateaus_on_a_long_video(network):
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(80)]
    mask = np.zeros((32, 32), bool)
    mask[8:20, 8:24] = True
    tracker = XMemTracker(network, SMALL, internal_size=None)
    cores = []
    make_core = tracker.new_core
    tracker.new_core = lambda: cores.append(make_core()) or cores[-1]
    session = tracker.start(ArrayFrameSource(frames))
    session.add_mask(0, 1, mask)
    sizes = []
    for _ in session.propagate(0):
        memory = cores[-1].memory
        sizes.append(memory.work.size + memory.long.size)
    assert len(sizes) == 80
    cap = SMALL.max_mid_term_frames * 4 + SMALL.max_long_term_elements
    assert max(sizes) <= cap
    assert max(sizes[40:]) <= max(sizes[:40])  # no growth in the second half


def test_reference_mode_and_dense_readout_agree_with_the_fast_path(network):
    """The official-like compute path used as the benchmark baseline gives the same result."""
    frames, mask = small_clip(4)
    other = np.zeros_like(mask)
    other[30:45, 45:60] = True

    def run(reference: bool) -> np.ndarray:
        network.set_reference_mode(reference)
        try:
            tracker = XMemTracker(
                network,
                XMemConfig(mem_every=2),
                internal_size=None,
                channels_last=False,
                dense_readout=reference,
            )
            session = tracker.start(ArrayFrameSource(frames))
            session.add_mask(0, 1, mask)
            session.add_mask(0, 2, other)
            return np.stack([f.probs for f in session.propagate(0)])
        finally:
            network.set_reference_mode(False)

    fast, reference = run(False), run(True)
    assert np.abs(fast - reference).max() <= 1e-4
