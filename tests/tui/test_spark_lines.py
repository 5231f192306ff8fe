"""widgets.curves.spark_lines draws what Textual's Sparkline renderable draws through rich, segment for
segment (it makes one colour a column instead of one a bar)."""
import math
import random

from rich.color import Color
from rich.console import Console
from rich.style import Style
from textual.renderables.sparkline import Sparkline

from nnstep.tui.widgets.curves import spark_lines


def test_the_same_segments_as_textuals_sparkline():
    rng = random.Random(7)
    console = Console(width=200, color_system="truecolor", force_terminal=True)
    base = Style.parse("#e0e0e0 on #121212")
    lo, hi = Color.parse("#004578"), Color.parse("#e0b040")
    cases = [[], [2.3], [1.0, 1.0], [2.3, 2.1], [3, 1, 2]]
    cases += [[rng.uniform(-5, 5) for _ in range(n)] for n in (2, 7, 31, 32, 100, 2001)]
    cases += [[math.log10(1 + i) for i in range(50)], [2.0 - 1e-9 * i for i in range(40)]]
    compared = 0
    for data in cases:
        for W, H in ((31, 3), (31, 1), (25, 2), (1, 3), (90, 5)):
            for summary in (max, min):
                spark = Sparkline(data, width=W, height=H, min_color=lo, max_color=hi, summary_function=summary)
                want = console.render_lines(spark, console.options.update_dimensions(W, H), style=base, pad=True)
                got = spark_lines(spark, H, base)
                assert got == want, (data[:5], W, H, summary)
                compared += sum(len(line) for line in want)
    assert compared > 5000
