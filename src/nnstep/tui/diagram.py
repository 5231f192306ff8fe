"""The network diagram: the layers of a scenario as a graph drawn in text, no Textual here.

Two forms, chosen by the room there is:

* :func:`graph_lines`, the graph: one node per layer in the scenario's (topological) order, from
  the batch (``input``) down to the loss. A layer that reads the layer just above it is joined to
  it by the trunk (``│``); every other edge (a skip, a second input of a merge, a fork's second
  reader) is drawn in a lane to the left of the trunk, from its source down to an arrow (``▶``)
  into its reader, like ``git log --graph``. Two text lines per node.
* :func:`list_lines`, the fallback for a narrow or short panel: one line per layer,
  ``name  type ← its inputs``.

Each line is a list of (text, style) parts, the form the program panel draws. The layer of the
current op is marked, so the diagram follows the stepping.
"""
from __future__ import annotations

from dataclasses import dataclass

CURRENT = "bold reverse"
MERGE_SIGN = {"add": " + ", "mul": " ⊙ ", "matmul": " @ ", "concat": ", "}


@dataclass(frozen=True)
class Node:
    name: str
    label: str                  # what follows the name: type and shape, or the merge
    reads: tuple[str, ...]      # node names it reads, in order


def nodes(scenario) -> list[Node]:
    """input, every layer, the loss: with what each reads (a layer's ``inputs`` without ``.out``)."""
    def src(t):
        return "input" if t == "input" else t[:-4] if t.endswith(".out") else t

    x = tuple(scenario.x.shape[1:]) if getattr(scenario, "x", None) is not None else ()
    out = [Node("input", f"batch {_shape(x)}" if x else "batch", ())]
    prev = "input"
    for L in scenario.layers:
        reads = tuple(src(t) for t in L.inputs) or (prev,)
        if L.type in MERGE_SIGN:
            label = f"{L.type} = " + MERGE_SIGN[L.type].join(reads).strip()
            if L.type == "concat":
                label = f"concat = [{', '.join(reads)}]"
        else:
            label = f"{L.type} {_shape(L.out_shape)}"
        out.append(Node(L.name, label, reads))
        prev = L.name
    if scenario.loss is not None:
        out.append(Node("loss", scenario.loss.type, (prev,)))
    return out


def _shape(s) -> str:
    return "(" + ", ".join(str(d) for d in s) + ")"


def _edges(ns: list[Node]) -> tuple[set[int], list[tuple[int, int, int]]]:
    """(rows joined to the row above by the trunk, lane edges (src row, dst row, lane))."""
    row = {n.name: r for r, n in enumerate(ns)}
    trunk: set[int] = set()
    lane_edges: list[tuple[int, int]] = []
    for r, n in enumerate(ns):
        seen = set()
        for s in n.reads:
            if s in seen or s not in row:
                continue
            seen.add(s)
            if row[s] == r - 1:
                trunk.add(r)
            else:
                lane_edges.append((row[s], r))
    # shorter edges nearer the trunk, so that nested skips do not cross: each edge takes the lowest
    # lane free over its whole span (it holds lines 2s+1 .. 2d of its lane)
    lane_edges.sort(key=lambda e: (e[1] - e[0], e[0]))
    held: list[list[tuple[int, int]]] = []
    out = []
    for s, d in lane_edges:
        for lane, spans in enumerate(held):
            if all(d <= s2 or d2 <= s for s2, d2 in spans):
                spans.append((s, d))
                break
        else:
            lane = len(held)
            held.append([(s, d)])
        out.append((s, d, lane))
    out.sort()
    return trunk, out


_CROSS = {" ": "─", "│": "┼", "┌": "┬", "└": "┴", "─": "─", "┼": "┼", "┬": "┬", "┴": "┴", "▶": "▶"}


def graph_width(scenario) -> int:
    """Columns the lanes and the trunk take (the labels come after)."""
    _, lanes = _edges(nodes(scenario))
    return 2 * (1 + max((l for *_, l in lanes), default=-1)) + 2


def graph_lines(scenario, current: str | None = None) -> tuple[list[list[tuple[str, str]]], int]:
    """The graph, two lines per node, and the line of the current layer's node."""
    ns = nodes(scenario)
    trunk, lanes = _edges(ns)
    n_lanes = 1 + max((l for *_, l in lanes), default=-1)
    T = 2 * n_lanes + 1                       # the trunk's column
    H = 2 * len(ns) - 1
    grid = [[" "] * (T + 1) for _ in range(H)]
    for r in range(len(ns)):
        grid[2 * r][T] = "●"
        if r + 1 in trunk:
            grid[2 * r + 1][T] = "│"
    for s, d, lane in lanes:                  # corners first, then the lanes, then the crossings
        c = T - 2 - 2 * lane
        grid[2 * s + 1][c] = "┌"
        grid[2 * d][c] = "└"
        for y in range(2 * s + 2, 2 * d):
            if grid[y][c] == " ":
                grid[y][c] = "│"
    for s, d, lane in lanes:
        c = T - 2 - 2 * lane
        y = 2 * s + 1
        for x in range(c + 1, T):
            grid[y][x] = _CROSS.get(grid[y][x], grid[y][x])
        grid[y][T] = {"│": "┤", "┤": "┤", "┘": "┘", " ": "┘"}.get(grid[y][T], grid[y][T])
        y = 2 * d
        for x in range(c + 1, T - 1):
            grid[y][x] = _CROSS.get(grid[y][x], grid[y][x])
        grid[y][T - 1] = "▶"
    for y in range(1, H, 2):                  # a trunk that also forks: ┤ where it goes on down
        if grid[y][T] == "┘" and (y + 1) // 2 in trunk:
            grid[y][T] = "┤"
    lines = []
    cur_line = 0
    for y in range(H):
        g = "".join(grid[y])
        if y % 2:
            lines.append([(g, "dim")])
            continue
        n = ns[y // 2]
        on = n.name == current
        if on:
            cur_line = y
        lines.append([(g[:T], "dim"), (g[T], "bold" if on else ""), (" ", ""),
                      (n.name, CURRENT if on else "bold"), ("  " + n.label, "" if on else "dim")])
    return lines, cur_line


def list_lines(scenario, current: str | None = None) -> tuple[list[list[tuple[str, str]]], int]:
    """One line per layer: ``name  type ← inputs`` (the diagram when there is no room for the graph)."""
    lines = []
    cur_line = 0
    prev = None
    for n in nodes(scenario):
        on = n.name == current
        if on:
            cur_line = len(lines)
        reads = "" if not n.reads or n.reads == (prev,) else " ← " + ", ".join(n.reads)
        lines.append([("▶" if on else " ", "bold"), (n.name, CURRENT if on else "bold"),
                      ("  " + n.label.split("  =")[0].split(" =")[0] + reads, "dim")])
        prev = n.name
    return lines, cur_line


def current_node(op) -> str | None:
    """The node the op belongs to: its layer, ``loss`` for the loss ops, none for updates of no layer."""
    if op is None:
        return None
    if op.layer:
        return op.layer
    return "loss" if op.stage == "loss" else None
