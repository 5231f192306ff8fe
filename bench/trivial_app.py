"""The baseline of bench_tui.py: a trivial Textual app, one label updated per key (the floor of
Textual plus the terminal). Its first line reads ``count N``."""
from textual.app import App, ComposeResult
from textual.widgets import Label


class Trivial(App):
    def compose(self) -> ComposeResult:
        self.n = 0
        yield Label("count 0", id="c")

    def on_key(self, event) -> None:
        if event.key == "q":
            self.exit()
            return
        self.n += 1
        self.query_one("#c", Label).update(f"count {self.n}")


if __name__ == "__main__":
    Trivial().run()
