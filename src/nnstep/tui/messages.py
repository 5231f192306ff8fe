"""What the continue worker (NnstepApp._run_worker, a thread) posts to the app."""
from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message


@dataclass
class Progress(Message):
    """A cheap snapshot of where the run is (for a reverse-continue, the step its scan has
    reached)."""
    position: tuple[int, int]
    history: list | None
    scanning: tuple[int, int] | None = None


@dataclass
class RunDone(Message):
    stop: object
    error: str | None = None
