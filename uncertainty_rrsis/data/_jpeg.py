"""Check the entropy-coded data of a baseline JPEG file without decoding pixels.

Pillow decodes a JPEG whose compressed data is damaged (a few bytes overwritten in the
middle of the file) without any error: libjpeg only *warns* ("Corrupt JPEG data: 156
extraneous bytes before marker 0xd9", "premature end of data segment") and Pillow drops its
warnings, so the picture comes out with shifted colours and garbage blocks from the damaged
place on. This module walks the Huffman-coded data the way a decoder does, without the
inverse DCT, and reports the first inconsistency:

* a bit pattern that is no code of the scan's Huffman table, or a symbol the baseline
  process never writes (an AC size above 10, an end-of-band run);
* a run of zeros that passes the end of an 8 x 8 block;
* a DC value out of the range an 8-bit picture can produce;
* data that ends before every block of the scan is decoded (libjpeg: "premature end of data
  segment"), or bytes left over after the last block (libjpeg: "extraneous bytes before
  marker");
* missing or misnumbered restart markers, a missing end-of-image marker.

Only the Huffman-coded sequential processes (SOF0, SOF1) at 8 bits are checked; progressive,
arithmetic-coded, lossless or 12-bit files are reported as not checked. Speed: about 0.1-0.2 s
per MB of compressed data in CPython (0.02-0.04 s for an 800 x 800 picture of 120-370 KB; AC
symbols are skipped several at a time), with memory bounded by a 1 MB window.
"""

from __future__ import annotations

from array import array
from functools import lru_cache

import numpy as np

__all__ = ["JpegDataError", "verify_jpeg"]

_CHUNK = 1 << 20  # bytes of scan data unpacked into 32-bit windows at a time
_MARGIN = 4096  # > the longest MCU: 10 blocks x 64 symbols x 27 bits
_EOB, _BAD = 1 << 10, 1 << 11
_RUN_EOB, _RUN_BAD = 1 << 13, 1 << 14  # flags of the several-symbol AC table (see _runs)


class JpegDataError(ValueError):
    """The JPEG's compressed data is inconsistent; the message says where and how."""


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _u16(data: bytes, at: int) -> int:
    return (data[at] << 8) | data[at + 1]


@lru_cache(maxsize=64)  # encoders reuse a few tables (often the standard ones) for every file
def _table(counts: tuple[int, ...], symbols: bytes, *, dc: bool) -> tuple[array, array | None]:
    """Lookups of the next 16 bits of the data: one symbol, and (AC) as many symbols as fit.

    One symbol -> packed (bits to advance, what follows). DC: ``length | size << 5``. AC:
    ``(length + size) | (run + 1) << 5`` for a coefficient, ``length | 16 << 5`` for a run of
    16 zeros, ``length | _EOB`` for the end of the block, ``_BAD`` for a symbol the baseline
    process never writes. 0: no code starts here. The second table is :func:`_runs`'.
    """
    if sum(counts) > len(symbols):
        raise JpegDataError("a Huffman table lists fewer symbols than codes")
    lut = array("H", bytes(2 * 65536))
    code_length = np.zeros(65536, dtype=np.uint32)
    code = k = 0
    for length in range(1, 17):
        for _ in range(counts[length - 1]):
            if code >= 1 << length:
                raise JpegDataError("a Huffman table has more codes than its lengths allow")
            sym = symbols[k]
            k += 1
            if dc:
                entry = length | (sym << 5) if sym <= 11 else _BAD
            else:
                run, size = sym >> 4, sym & 15
                if sym == 0x00:
                    entry = length | _EOB
                elif sym == 0xF0:
                    entry = length | (16 << 5)
                elif size == 0 or size > 10:
                    entry = _BAD
                else:
                    entry = (length + size) | ((run + 1) << 5)
            lo, hi = code << (16 - length), (code + 1) << (16 - length)
            lut[lo:hi] = array("H", [entry]) * (hi - lo)
            code_length[lo:hi] = length
            code += 1
        code <<= 1
    return lut, None if dc else _runs(lut, code_length)


def _runs(lut: array, code_length: np.ndarray) -> array:
    """AC lookup of several symbols at once: as many as the 16 bits hold (their codes whole).

    Entry: ``bits | advance << 5`` (bits to skip, block positions covered) for coefficients and
    runs of zeros only; ``| _RUN_EOB`` when the last symbol is the end of the block (``advance``
    then counts the positions before it); ``_RUN_BAD`` or 0 when the first symbol is bad or no
    code. Whether a block ends inside (``position + advance`` reaching 64) is for the caller to
    check; extra bits are skipped, never read, so they may run past the 16.
    """
    single = np.frombuffer(lut, dtype=np.uint16).astype(np.uint32)
    window = np.arange(65536, dtype=np.uint32)
    bits = np.zeros(65536, dtype=np.uint32)
    advance = np.zeros(65536, dtype=np.uint32)
    ended = np.zeros(65536, dtype=bool)
    active = np.ones(65536, dtype=bool)
    for step in range(16):
        ahead = (window << np.minimum(bits, 16)) & 0xFFFF
        entry, length = single[ahead], code_length[ahead]
        fits = active & (length > 0) & (bits + length <= 16) & (entry & _BAD == 0)
        if step == 0:
            fits = active & (length > 0) & (entry & _BAD == 0)
        eob = fits & (entry & _EOB != 0)
        coefficient = fits & ~eob
        bits[coefficient] += entry[coefficient] & 31
        advance[coefficient] += entry[coefficient] >> 5
        bits[eob] += length[eob]
        ended |= eob
        active = coefficient & (bits < 16)
        if not active.any():
            break
    out = bits | (advance << 5) | np.where(ended, _RUN_EOB, 0).astype(np.uint32)
    first_bad = (code_length == 0) | (single & _BAD != 0)
    out[first_bad] = np.where(code_length[first_bad] == 0, 0, _RUN_BAD)
    return array("H", out.astype(np.uint16).tobytes())


def _windows(seg: bytes) -> array:
    """For each bit offset p of ``seg``: the 16 bits starting there (zero-padded)."""
    a = np.frombuffer(seg + bytes(8), dtype=np.uint8).astype(np.uint32)
    u = (a[:-3] << 24) | (a[1:-2] << 16) | (a[2:-1] << 8) | a[3:]
    shifts = np.arange(16, 8, -1, dtype=np.uint32)  # offset o in the byte: shift by 16 - o
    return array("H", ((u[:, None] >> shifts[None, :]) & 0xFFFF).astype(np.uint16).tobytes())


def verify_jpeg(data: bytes) -> str | None:
    """Check a whole JPEG file's structure and compressed data.

    Returns None when the file was checked and is consistent, or a short reason when its
    coding is not one this check reads (``"progressive"``, ...); the file then still has to be
    decoded to be trusted.

    Raises:
        JpegDataError: the data is truncated or damaged; the message says where.
    """
    n = len(data)
    if data[:2] != b"\xff\xd8":
        raise JpegDataError("the file does not start with a JPEG start-of-image marker")
    pos = 2
    dc_tables: dict[int, tuple[array, array | None]] = {}
    ac_tables: dict[int, tuple[array, array | None]] = {}
    quant: dict[int, int] = {}
    frame: tuple[int, int, dict[int, tuple[int, int, int]]] | None = None
    restart = 0
    scans = 0
    while True:
        if pos + 2 > n:
            raise JpegDataError("the file ends before its end-of-image marker (truncated)")
        if data[pos] != 0xFF:
            raise JpegDataError(f"expected a marker at byte {pos}; found data (damaged header or scan)")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 2
            continue
        if pos + 4 > n:
            raise JpegDataError("the file ends inside a header segment (truncated)")
        length = _u16(data, pos + 2)
        body = data[pos + 4 : pos + 2 + length]
        if length < 2 or len(body) != length - 2:
            raise JpegDataError(f"header segment 0xFF{marker:02X} at byte {pos} runs past the end of the file")
        pos += 2 + length
        if marker == 0xDB:  # quantisation tables: keep each table's DC step
            i = 0
            while i < len(body):
                precision, slot = body[i] >> 4, body[i] & 15
                quant[slot] = _u16(body, i + 1) if precision else body[i + 1]
                i += 129 if precision else 65
        elif marker == 0xC4:  # Huffman tables
            i = 0
            while i + 17 <= len(body):
                kind, slot = body[i] >> 4, body[i] & 15
                counts = tuple(body[i + 1 : i + 17])
                total = sum(counts)
                table = _table(counts, bytes(body[i + 17 : i + 17 + total]), dc=kind == 0)
                (dc_tables if kind == 0 else ac_tables)[slot] = table
                i += 17 + total
        elif marker == 0xDD:
            restart = _u16(body, 0) if len(body) >= 2 else 0
        elif marker in (0xC0, 0xC1):
            if len(body) < 6 or body[0] != 8:
                return "not an 8-bit sequential JPEG"
            height, width, ncomp = _u16(body, 1), _u16(body, 3), body[5]
            if height == 0 or width == 0 or len(body) < 6 + 3 * ncomp:
                return "a frame header this check does not read"
            comps = {}
            for j in range(ncomp):
                cid, hv, slot = body[6 + 3 * j], body[7 + 3 * j], body[8 + 3 * j]
                if not (1 <= hv >> 4 <= 4 and 1 <= hv & 15 <= 4):
                    raise JpegDataError(f"component {cid} has sampling factors {hv >> 4}x{hv & 15}")
                comps[cid] = (hv >> 4, hv & 15, slot)
            frame = (height, width, comps)
        elif 0xC2 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return "progressive" if marker in (0xC2, 0xC6) else "arithmetic-coded, lossless or hierarchical"
        elif marker == 0xDC:
            return "a number-of-lines segment"
        elif marker == 0xDA:
            if frame is None:
                raise JpegDataError("a scan starts before the frame header")
            count = body[0] if body else 0
            scan = []
            for j in range(count):
                cid, slots = body[1 + 2 * j], body[2 + 2 * j]
                if cid not in frame[2]:
                    raise JpegDataError(f"a scan names component {cid}, which the frame does not have")
                if slots >> 4 not in dc_tables or slots & 15 not in ac_tables:
                    raise JpegDataError(f"a scan uses a Huffman table that is not defined (component {cid})")
                scan.append((cid, dc_tables[slots >> 4][0], ac_tables[slots & 15]))
            end = pos
            while True:  # the scan's data runs to the next marker that is not a restart
                end = data.find(b"\xff", end)
                if end < 0 or end + 1 >= n:
                    raise JpegDataError("the file ends inside the compressed data (truncated)")
                following = data[end + 1]
                if following == 0 or 0xD0 <= following <= 0xD7:
                    end += 2
                    continue
                break
            _check_scan(data[pos:end], frame, scan, quant, restart)
            pos = end
            scans += 1
    if scans == 0:
        raise JpegDataError("the file has no image data (no scan)")
    return None


def _check_scan(raw: bytes, frame: tuple, scan: list, quant: dict[int, int], restart: int) -> None:
    height, width, comps = frame
    hmax = max(c[0] for c in comps.values())
    vmax = max(c[1] for c in comps.values())
    blocks: list[int] = []  # the component (index in the scan) of each block of one MCU
    tables = []
    if len(scan) == 1:
        h, v, _ = comps[scan[0][0]]
        cols = _ceil_div(_ceil_div(width * h, hmax), 8)
        rows = _ceil_div(_ceil_div(height * v, vmax), 8)
        blocks = [0]
        row_height = 8 * vmax // v
    else:
        cols = _ceil_div(width, 8 * hmax)
        rows = _ceil_div(height, 8 * vmax)
        for j, (cid, _, _) in enumerate(scan):
            blocks += [j] * (comps[cid][0] * comps[cid][1])
        row_height = 8 * vmax
    for cid, dc, (ac, runs) in scan:
        step = quant.get(comps[cid][2], 1) or 1
        tables.append((dc, ac, runs, step, 1024 + 2 * step))
    total = cols * rows
    parts: list[bytes]
    if restart:
        parts, start, i = [], 0, 0
        while True:
            i = raw.find(b"\xff", i)
            if i < 0:
                break
            if raw[i + 1] == 0:
                i += 2
                continue
            if raw[i + 1] != 0xD0 + len(parts) % 8:
                raise JpegDataError(
                    f"restart marker {len(parts) + 1} is RST{raw[i + 1] - 0xD0}, expected RST{len(parts) % 8}"
                )
            parts.append(raw[start:i])
            start = i = i + 2
        parts.append(raw[start:])
        per = restart
    else:
        parts, per = [raw], total
    expected = _ceil_div(total, per)
    if len(parts) != expected:
        raise JpegDataError(f"the scan has {len(parts)} restart intervals; its size needs {expected}")
    first = 0
    for number, part in enumerate(parts):
        count = min(per, total - first)
        label = f"restart interval {number}" if restart else "the scan"
        _check_interval(part.replace(b"\xff\x00", b"\xff"), first, count, cols, row_height, blocks, tables, label)
        first += count


def _check_interval(
    seg: bytes, first: int, count: int, cols: int, row_height: int, blocks: list[int], tables: list, label: str
) -> None:
    """Decode ``count`` MCUs from ``seg`` (unstuffed) and check that they fill it exactly."""
    nbits = 8 * len(seg)
    pred = [0] * len(tables)
    base = 0
    u = _windows(seg[: _CHUNK + _MARGIN])
    p = 0  # bit position inside the current window

    def where(k: int) -> str:
        mcu = first + k
        return f"block row {mcu // cols} (image rows from {mcu // cols * row_height}), column {mcu % cols}"

    k = 0
    try:
        for k in range(count):
            if p >> 3 > _CHUNK and base + _CHUNK + _MARGIN < len(seg):
                base += p >> 3
                p &= 7
                u = _windows(seg[base : base + _CHUNK + _MARGIN])
            for j in blocks:
                dc, ac, runs, step, bound = tables[j]
                e = dc[u[p]]
                if e == 0 or e == _BAD:
                    raise JpegDataError(f"invalid DC code at {where(k)}")
                p += e & 31
                size = e >> 5
                if size:
                    v = u[p] >> (16 - size)
                    if v < 1 << (size - 1):
                        v -= (1 << size) - 1
                    p += size
                    value = pred[j] + v
                    pred[j] = value
                    if value * step > bound or -value * step > bound:
                        raise JpegDataError(f"a DC value out of the 8-bit range at {where(k)}")
                n = 1
                while True:
                    w = u[p]
                    e = runs[w]  # several symbols at once, while the block cannot end among them
                    if 0 < e < _RUN_EOB:
                        if n + (e >> 5) < 64:
                            p += e & 31
                            n += e >> 5
                            continue
                    elif _RUN_EOB <= e < _RUN_BAD and n + ((e >> 5) & 255) < 64:
                        p += e & 31
                        break
                    e = ac[w]  # one symbol
                    if e < _EOB:
                        if e == 0:
                            raise JpegDataError(f"invalid AC code at {where(k)}")
                        p += e & 31
                        n += e >> 5
                        if n >= 64:
                            if n > 64:
                                raise JpegDataError(f"a run of zeros past the end of a block at {where(k)}")
                            break
                    elif e < _BAD:
                        p += e & 31
                        break
                    else:
                        raise JpegDataError(f"a Huffman symbol baseline JPEG never uses at {where(k)}")
            if 8 * base + p > nbits:
                raise IndexError
    except IndexError:
        raise JpegDataError(
            f"the compressed data ends before the last block (premature end at {where(k)})"
        ) from None
    left = nbits - 8 * base - p
    if left >= 8:
        raise JpegDataError(
            f"{left // 8} bytes of compressed data are left after the last block of {label} "
            "(the data is damaged somewhere before)"
        )
