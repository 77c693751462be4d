"""backend.rle against the Label Studio SDK encoder/decoder (the format's reference)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from label_studio_sdk.converter.brush import decode_rle, encode_rle, mask2rle

from backend.ls import rle

# Pixel run lengths around the size-class limits 8/16/256/65536 values (4 values per pixel).
BOUNDARY_PIXEL_RUNS = [1, 2, 3, 4, 5, 63, 64, 65, 16383, 16384, 16385, 32768, 32769]
# Value run lengths around the same limits, for the generic encoder (1 = literal).
BOUNDARY_VALUE_RUNS = [1, 2, 7, 8, 9, 15, 16, 17, 255, 256, 257, 65535, 65536, 65537, 131073]


def sdk_alpha(code: list[int], h: int, w: int) -> np.ndarray:
    return decode_rle(code).reshape(h, w, 4)[:, :, 3] != 0


@st.composite
def masks(draw) -> np.ndarray:
    h = draw(st.integers(1, 24))
    w = draw(st.integers(1, 24))
    kind = draw(st.sampled_from(["zeros", "ones", "noise", "blob", "runs"]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    if kind == "zeros":
        return np.zeros((h, w), bool)
    if kind == "ones":
        return np.ones((h, w), bool)
    if kind == "noise":
        return rng.random((h, w)) < draw(st.floats(0.0, 1.0))
    if kind == "blob":
        yy, xx = np.mgrid[:h, :w]
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.5, h), rng.uniform(0.5, w)
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    runs = draw(st.lists(st.integers(1, 70), min_size=1, max_size=20))
    flat = np.repeat(np.arange(len(runs)) % 2 == 1, runs)
    flat = np.resize(flat, h * w) if flat.size < h * w else flat[: h * w]
    return flat.reshape(h, w)


@settings(max_examples=300, deadline=None)
@given(masks())
def test_encode_is_byte_identical_to_sdk_and_round_trips(mask: np.ndarray) -> None:
    h, w = mask.shape
    expected = mask2rle(mask.astype(np.uint8) * 255)
    got = rle.encode(mask)
    assert got == expected
    assert np.array_equal(rle.decode(got, h, w), mask)
    assert np.array_equal(rle.decode_array(got), decode_rle(expected))


def test_encode_accepts_bool_and_0_255_and_0_1_alike() -> None:
    rng = np.random.default_rng(1)
    mask = rng.random((9, 13)) < 0.4
    expected = mask2rle(mask.astype(np.uint8) * 255)
    assert rle.encode(mask) == expected
    assert rle.encode(mask.astype(np.uint8) * 255) == expected
    assert rle.encode(mask.astype(np.uint8)) == expected


@pytest.mark.parametrize("run", BOUNDARY_PIXEL_RUNS)
@pytest.mark.parametrize("lead", [0, 1, 3])
def test_long_and_boundary_runs_match_sdk(run: int, lead: int) -> None:
    width = lead + run + 2
    mask = np.zeros((1, width), np.uint8)
    mask[0, lead : lead + run] = 255
    code = rle.encode(mask)
    assert code == mask2rle(mask)
    assert np.array_equal(rle.decode(code, 1, width), mask > 0)
    assert np.array_equal(sdk_alpha(code, 1, width), mask > 0)


@pytest.mark.parametrize("run", BOUNDARY_VALUE_RUNS)
def test_encode_array_matches_sdk_encode_rle(run: int) -> None:
    values = np.concatenate(
        [np.full(run, 7, np.uint8), np.array([1, 2, 2, 3], np.uint8), np.full(run, 200, np.uint8)]
    )
    code = rle.encode_array(values)
    assert code == encode_rle(values)
    assert np.array_equal(rle.decode_array(code), values)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 255), min_size=1, max_size=400), st.integers(1, 5))
def test_encode_array_random_values(values: list[int], stretch: int) -> None:
    arr = np.repeat(np.asarray(values, np.uint8), stretch)
    code = rle.encode_array(arr)
    assert code == encode_rle(arr)
    assert np.array_equal(rle.decode_array(code), decode_rle(code))


def _write_stream(records: list[tuple[bool, int, int, list[int]]], num: int) -> list[int]:
    """Test-only bit writer for streams with literal chunks (as the JS encoder emits)."""
    bits = f"{num:032b}{7:05b}" + "".join(f"{s - 1:04b}" for s in rle.RLE_SIZES)
    for is_run, cls, count, vals in records:
        bits += (
            ("1" if is_run else "0") + f"{cls:02b}" + format(count - 1, f"0{rle.RLE_SIZES[cls]}b")
        )
        bits += "".join(f"{v:08b}" for v in vals)
    bits += "0" * (-len(bits) % 8)
    return [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)]


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_decode_literal_chunks_like_sdk(data) -> None:
    limits = [8, 16, 256, 65536]
    records = []
    num = 0
    for _ in range(data.draw(st.integers(1, 12))):
        is_run = data.draw(st.booleans())
        cls = data.draw(st.integers(0, 3))
        count = data.draw(st.integers(1, min(limits[cls], 40)))
        if is_run:
            vals = [data.draw(st.integers(0, 255))]
        else:
            vals = data.draw(st.lists(st.integers(0, 255), min_size=count, max_size=count))
        records.append((is_run, cls, count, vals))
        num += count
    code = _write_stream(records, num)
    assert np.array_equal(rle.decode_array(code), decode_rle(code))


def test_decode_checks_size_and_truncation() -> None:
    mask = np.zeros((4, 5), bool)
    mask[1:3, 2:4] = True
    code = rle.encode(mask)
    with pytest.raises(rle.RLEError):
        rle.decode(code, 5, 5)
    with pytest.raises(rle.RLEError):
        rle.decode(code[:7], 4, 5)
    with pytest.raises(rle.RLEError):
        rle.decode(code[:3], 4, 5)
    assert np.array_equal(rle.decode(bytes(code), 4, 5), mask)
    assert np.array_equal(rle.decode(np.asarray(code), 4, 5), mask)


def test_encode_rejects_non_2d() -> None:
    with pytest.raises(ValueError):
        rle.encode(np.zeros((2, 2, 2), bool))
