"""The heatmap's colour codes and lines, cell by cell (tensor.heat_codes, tensor.heat_strips)."""
import numpy as np
from rich.style import Style

from nnstep.tui.widgets.tensorbox import C_NAN, C_NINF, C_PINF, LEVELS, PALETTE, _cell_style, heat_codes, heat_strips


def _cells(strip):
    return [(ch, seg.style) for seg in strip for ch in seg.text]


def test_block_means_and_scale():
    # a 4x4 array in 2x2 blocks: the block means are 1.5, 3.5 / -2, 0; the scale is max |a| = 4
    a = np.array([[1.0, 2.0, 3.0, 4.0],
                  [1.0, 2.0, 3.0, 4.0],
                  [-2.0, -2.0, 0.0, 0.0],
                  [-2.0, -2.0, 0.0, 0.0]])
    q, scale = heat_codes(a, 2, 2)
    assert scale == 4.0
    expect = np.rint(np.array([[1.5, 3.5], [-2.0, 0.0]]) / 4 * LEVELS).astype(int) + LEVELS
    assert np.array_equal(q, expect)


def test_uneven_blocks_are_means_over_their_own_size():
    # 3 columns into 2 blocks: linspace(0, 3, 3) -> bins at 0 and 1: [a0] and [a1, a2]
    a = np.array([[3.0, 1.0, -3.0]])
    q, scale = heat_codes(a, 1, 2)
    assert scale == 3.0
    assert q.tolist() == [[2 * LEVELS, LEVELS + int(np.rint(-1.0 / 3 * LEVELS))]]


def test_a_block_holding_nan_or_inf_shows_it():
    a = np.zeros((2, 6))
    a[0, 0], a[1, 3], a[0, 5] = np.nan, np.inf, -np.inf
    q, _ = heat_codes(a, 1, 3)
    assert q.tolist() == [[C_NAN, C_PINF, C_NINF]]


def test_lines_two_rows_a_cell_runs_merged():
    t, b = LEVELS + 1, LEVELS - 2
    codes = np.array([[t, t, t, C_NAN, LEVELS],
                      [b, b, b, b, LEVELS],
                      [t, b, t, t, t]])            # an odd last row: top half only
    bg = Style(bgcolor="#000000")
    lines = heat_strips(codes, 7, bg)
    assert len(lines) == 2 and all(s.cell_length == 7 for s in lines)
    first = _cells(lines[0])
    assert first[:3] == [("▀", _cell_style(t, b))] * 3
    assert first[3] == ("N", _cell_style(C_NAN, b))
    assert first[4] == ("▀", _cell_style(LEVELS, LEVELS))
    assert [ch for ch, _ in first[5:]] == [" ", " "]          # padded to the box's width
    assert len(lines[0]._segments) < 5                       # the run of three is one segment
    second = _cells(lines[1])
    assert second[:5] == [("▀", Style(color=PALETTE[c])) for c in (t, b, t, t, t)]
