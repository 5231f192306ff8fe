"""`nnstep screenshot` SVGs keep their spaces when course authors convert them with rsvg-convert
(which dropped Textual's leading no-break spaces: numbers left-aligned, "-0.2968=  -0.2968"). The
check converts a real screenshot to PNG and measures where the ink starts on two program rows:
"✓  1 forward linear1" and "Σ loss" below it start at the same column, and the op rows, indented
by their spaces, start three cells further right."""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
RSVG = shutil.which("rsvg-convert")


def read_png(path: str) -> np.ndarray:
    """A PNG (8-bit RGB or RGBA, not interlaced, as rsvg-convert writes) as an (H, W, C) array."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and ctype in (2, 6)
            c = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = w * c
    out = np.zeros((h, stride), dtype=np.int32)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=y * (stride + 1) + 1).astype(np.int32)
        cur = np.zeros(stride, dtype=np.int32)
        for x in range(stride):
            a = cur[x - c] if x >= c else 0
            b = prev[x]
            cc = prev[x - c] if x >= c else 0
            if f == 0:
                p = 0
            elif f == 1:
                p = a
            elif f == 2:
                p = b
            elif f == 3:
                p = (a + b) // 2
            else:
                pa, pb, pc = abs(b - cc), abs(a - cc), abs(a + b - 2 * cc)
                p = a if pa <= pb and pa <= pc else (b if pb <= pc else cc)
            cur[x] = (line[x] + p) & 0xFF
        out[y] = cur
        prev = cur
    return out.reshape(h, w, c)


@pytest.mark.skipif(RSVG is None and not os.environ.get("CI"), reason="rsvg-convert (librsvg2-bin) is not installed")
@pytest.mark.slow
def test_a_screenshot_converted_by_rsvg_keeps_its_spaces(tmp_path):
    assert RSVG is not None, "CI installs librsvg2-bin (.ci/run)"
    svg, png = tmp_path / "shot.svg", tmp_path / "shot.png"
    r = subprocess.run([sys.executable, "-m", "nnstep", "screenshot", os.path.join(HERE, "scenarios", "mazur.toml"),
                        "--size", "80x24", "-o", str(svg)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    text = svg.read_text()
    assert 'xml:space="preserve"' in text
    subprocess.run([RSVG, "-o", str(png), str(svg)], check=True, timeout=60)
    img = read_png(str(png))
    import re

    def run_y(content: str) -> float:
        m = re.search(r'<text class="[^"]*" x="[\d.]+" y="([\d.]+)"[^>]*>' + re.escape(content) + "</text>", text)
        assert m, content
        return float(m.group(1))

    cell = 12.2                     # Textual's SVG cell: 12.2 units wide, rendered 1 unit a pixel
    assert img.shape[1] == round(80 * cell + 18)
    dx, dy = (float(v) for v in re.search(r'transform="translate\((\d+), (\d+)\)"', text).groups())

    def ink_start(y: float) -> float:
        """The first pixel column with ink on the terminal row whose baseline is ``y``, right of
        the program panel's border (column 0)."""
        y += dy
        band = img[int(y) - 12:int(y) + 1, :, :3].astype(int)
        bg = band[:, int(dx + 40 * cell)].mean(axis=0)        # (mid-screen: the panel's background)
        cols = np.flatnonzero(np.abs(band - bg).sum(axis=2).max(axis=0) > 150)
        return float(cols[cols > dx + cell].min() - dx)

    # "Σ loss" starts in the panel's first column; the op row below it, "   5 loss" in the column
    # after the border's, starts with three spaces: its "5" four cells right of the "Σ". Without
    # xml:space="preserve", rsvg-convert drops the spaces and the "5" sits one cell right.
    shift = ink_start(run_y("&#160;&#160;&#160;5&#160;loss")) - ink_start(run_y("Σ&#160;loss"))
    assert 3.5 * cell < shift < 4.5 * cell, shift / cell
