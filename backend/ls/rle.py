"""Label Studio brush RLE (``@thi.ng/rle-pack`` over RGBA bytes), vectorised with NumPy.

Format (what the Label Studio frontend decodes into an ``ImageData``): the payload is the
RGBA image as bytes, row-major, ``num = H*W*4`` values. The bitstream is MSB-first:

* header: ``num`` (32 bits), ``word_size - 1`` (5 bits), four ``rle_size - 1`` (4 bits each);
* records: a flag bit (1 = one value repeated, 0 = literal chunk), a 2-bit size class,
  ``count - 1`` in ``rle_sizes[class]`` bits, then one value (run) or ``count`` values
  (literal) of ``word_size`` bits each;
* zero padding to a whole byte.

:func:`encode` reproduces ``label_studio_sdk.converter.brush.mask2rle`` byte for byte for
0/255 masks (including its quirks: single values become one-value literals, runs longer than
65536 are split into 65536-value records, and a whole extra zero byte is appended when the
bitstream already ends on a byte boundary), but works on the run list instead of a bit string,
so its cost grows with the number of runs, not with Python work per run. :func:`decode` reads
any valid stream (also literal chunks written by the JS encoder).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

WORD_SIZE = 8
RLE_SIZES = (3, 4, 8, 16)
_HEADER_BITS = 32 + 5 + 4 * 4
_MAX_RUN = 1 << 16


class RLEError(ValueError):
    """The RLE payload is malformed or does not match the expected image size."""


# ---------------------------------------------------------------------------------------------
# encoding


def encode(mask: np.ndarray) -> list[int]:
    """Encode an H×W mask (nonzero = foreground) as Label Studio brush RLE.

    Foreground pixels get value 255 in all four RGBA channels, background 0, so the result is
    byte-identical to ``mask2rle(mask_as_0_255_uint8)`` of the Label Studio SDK.
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {m.shape}")
    flat = (m != 0).ravel()
    if flat.size == 0:
        raise ValueError("mask is empty (zero pixels)")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate(([0], change))
    lengths = np.diff(np.append(starts, flat.size)) * 4
    values = flat[starts].astype(np.int64) * 255
    return _encode_runs(lengths, values, 4 * flat.size)


def encode_array(values: np.ndarray) -> list[int]:
    """Encode a flat uint8 array exactly like the SDK's ``encode_rle(values)``."""
    arr = np.asarray(values).ravel()
    if arr.size == 0:
        raise ValueError("nothing to encode")
    if arr.min() < 0 or arr.max() > 255:
        raise ValueError("values must fit in 8 bits")
    change = np.flatnonzero(arr[1:] != arr[:-1]) + 1
    starts = np.concatenate(([0], change))
    lengths = np.diff(np.append(starts, arr.size))
    return _encode_runs(lengths, arr[starts].astype(np.int64), arr.size)


def _run_records(lengths: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(code, width) of each record, in stream order, following the SDK's choices."""
    lengths = lengths.astype(np.int64)
    # Runs longer than 65536 become full 65536 records plus a remainder record.
    full = np.where(lengths > _MAX_RUN, (lengths - 1) // _MAX_RUN, 0)
    nrec = full + 1
    rec_run = np.repeat(np.arange(lengths.size), nrec)
    first = np.cumsum(nrec) - nrec
    k = np.arange(rec_run.size) - np.repeat(first, nrec)
    run_len = lengths[rec_run]
    is_long = run_len > 256
    counts = np.where(
        is_long, np.where(k < full[rec_run], _MAX_RUN, run_len - full[rec_run] * _MAX_RUN), run_len
    )
    # Size class is chosen from the whole run's length (a short remainder keeps class 3).
    cls = np.select([run_len <= 8, run_len <= 16, run_len <= 256], [0, 1, 2], 3)
    nbits = np.asarray(RLE_SIZES, dtype=np.int64)[cls]
    flag = (run_len > 1).astype(np.int64)
    vals = values[rec_run]
    code = (flag << (2 + nbits + WORD_SIZE)) | (cls << (nbits + WORD_SIZE))
    code |= (counts - 1) << WORD_SIZE
    code |= vals
    return code, 3 + nbits + WORD_SIZE


def _encode_runs(lengths: np.ndarray, values: np.ndarray, num: int) -> list[int]:
    if num >= 1 << 32:
        raise ValueError("image too large for a 32-bit RLE header")
    code, width = _run_records(lengths, values)
    head_code = np.array([num, WORD_SIZE - 1, *(s - 1 for s in RLE_SIZES)], dtype=np.int64)
    head_width = np.array([32, 5, 4, 4, 4, 4], dtype=np.int64)
    code = np.concatenate((head_code, code)).astype(np.uint64)
    width = np.concatenate((head_width, width))
    return _pack_fields(code, width)


def _pack_fields(code: np.ndarray, width: np.ndarray) -> list[int]:
    """Concatenate MSB-first bit fields (each <= 32 bits) into bytes, SDK padding included.

    Each field lands in at most two 32-bit words; fields never overlap, so summing their
    shifted halves per word (``bincount``, exact below 2**53) is the same as OR-ing them.
    """
    offset = np.cumsum(width) - width
    total = int(offset[-1] + width[-1])
    # The SDK always pads 1..8 zero bits (a whole zero byte when already aligned).
    nbytes = (total + 8 - total % 8) // 8
    nwords = nbytes // 4 + 2
    word = offset >> 5
    shifted = code << (64 - (offset & 31) - width).astype(np.uint64)
    high = (shifted >> np.uint64(32)).astype(np.float64)
    low = (shifted & np.uint64(0xFFFFFFFF)).astype(np.float64)
    words = np.bincount(word, weights=high, minlength=nwords)[:nwords]
    words += np.bincount(word + 1, weights=low, minlength=nwords)[:nwords]
    return list(words.astype(">u4").tobytes()[:nbytes])


# ---------------------------------------------------------------------------------------------
# decoding


def decode(rle: Sequence[int] | bytes | np.ndarray, height: int, width: int) -> np.ndarray:
    """Decode brush RLE to an H×W bool mask (alpha channel != 0, like the SDK's layers)."""
    num, values, starts, lengths = _decode_segments(rle)
    if num != height * width * 4:
        raise RLEError(
            f"RLE holds {num} values, expected {height}x{width}x4 = {height * width * 4}"
        )
    # Alpha is value 4k+3; the values before offset e hold e // 4 alpha entries.
    ends = np.minimum(starts + lengths, num)
    per_pixel = ends // 4 - np.minimum(starts, num) // 4
    return np.repeat(values != 0, per_pixel).reshape(height, width)


def decode_array(rle: Sequence[int] | bytes | np.ndarray) -> np.ndarray:
    """Decode brush RLE to the flat uint8 value array (same as the SDK's ``decode_rle``)."""
    num, values, _, lengths = _decode_segments(rle)
    return np.repeat(values.astype(np.uint8), lengths)[:num]


def _as_bytes(rle: Sequence[int] | bytes | np.ndarray) -> np.ndarray:
    if isinstance(rle, bytes | bytearray):
        return np.frombuffer(rle, dtype=np.uint8)
    if isinstance(rle, np.ndarray):
        return rle.astype(np.uint8).ravel()
    try:
        return np.frombuffer(bytes(rle), dtype=np.uint8)
    except (TypeError, ValueError) as exc:
        raise RLEError(f"RLE must be a list of ints 0..255 ({exc})") from None


def _reader(data: np.ndarray):
    """32-bit big-endian window at every byte, and a vectorised ``read(pos, nbits <= 25)``."""
    padded = np.concatenate((data, np.zeros(4, dtype=np.uint8))).astype(np.int64)
    window = (padded[:-3] << 24) | (padded[1:-2] << 16) | (padded[2:-1] << 8) | padded[3:]

    def read(pos: np.ndarray, nbits: np.ndarray | int) -> np.ndarray:
        w = window[pos >> 3]
        return (w >> (32 - (pos & 7) - nbits)) & ((np.int64(1) << nbits) - 1)

    return window, read


def _decode_segments(rle) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Parse the stream into (num, segment values, segment starts, segment lengths).

    A run record is one segment of ``count`` values; a literal record is ``count`` segments
    of one value each. Record boundaries are found by following, from the first record, a
    per-bit-position table of "record width if a record started here"; only that walk is a
    Python loop (one step per record), everything else is array arithmetic.
    """
    data = _as_bytes(rle)
    total_bits = data.size * 8
    if total_bits < _HEADER_BITS:
        raise RLEError("RLE shorter than its header")
    window, read = _reader(data)
    head = read(np.array([0, 16, 32, 37, 41, 45, 49]), np.array([16, 16, 5, 4, 4, 4, 4]))
    num = int(head[0]) << 16 | int(head[1])
    word = int(head[2]) + 1
    sizes = head[3:] + 1
    if word > 16:
        raise RLEError(f"word size {word} > 16 bits is not supported")
    if num == 0:
        empty = np.zeros(0, np.int64)
        return 0, empty, empty, empty

    # 32 bits starting at every bit position (one window per byte, shifted by 0..7), uint32
    # to keep these per-bit tables small.
    shift = np.tile(np.arange(8, dtype=np.uint64), data.size)
    at = ((np.repeat(window[: data.size].astype(np.uint64), 8) << shift) & 0xFFFFFFFF).astype(
        np.uint32
    )
    flag = at >> 31
    nbits = sizes.astype(np.uint32)[(at >> 29) & 3]
    count = ((at >> (29 - nbits)) & ((np.uint32(1) << nbits) - 1)) + 1
    step_bits = 3 + nbits + np.where(flag == 1, np.uint32(word), np.uint32(word) * count)
    step = memoryview(step_bits)
    elems = memoryview(count)

    starts: list[int] = []
    p, i, limit = _HEADER_BITS, 0, total_bits
    append = starts.append
    while i < num:
        if p >= limit:
            raise RLEError(f"RLE truncated: decoded {i} of {num} values")
        append(p)
        i += elems[p]
        p += step[p]
    if p > limit:
        raise RLEError("RLE truncated inside the last record")

    rs = np.asarray(starts, dtype=np.int64)
    r_flag, r_n, r_cnt = (a[rs].astype(np.int64) for a in (flag, nbits, count))
    nseg = np.where(r_flag == 1, 1, r_cnt)
    seg_rec = np.repeat(np.arange(rs.size), nseg)
    k = np.arange(seg_rec.size) - np.repeat(np.cumsum(nseg) - nseg, nseg)
    vpos = rs[seg_rec] + 3 + r_n[seg_rec] + word * k
    if vpos.size and int(vpos[-1]) + word > total_bits:
        raise RLEError("RLE truncated inside the last record")
    values = read(vpos, word)
    seg_len = np.where(r_flag[seg_rec] == 1, r_cnt[seg_rec], 1)
    seg_start = np.cumsum(seg_len) - seg_len
    return num, values, seg_start, seg_len
