"""A plain table renderable for rich: fixed columns, one line per row, drawn ~6x faster than `rich.table.Table`.

rich's Table measures, wraps and pads every cell as a renderable of its own: 200 device rows took
200-350 ms per redraw (2 Hz: up to 70 % of a core). Here each row is one line of segments from
its cells' plain text and style, padded to column widths computed once per draw, and yielded as
segments (no wrapping or justifying left for rich to do). A cell never
wraps: when the table is wider than the console, whole columns are left out (in `drop` order, and
the caption says which) rather than folding every row over several lines. Control and format
characters in a cell (a device's newline, escape, C1 CSI U+009B, bidi override U+202E) are shown
as `?` (`safe`), so a row stays one line and reads in its own order.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator, Sequence

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions
from rich.segment import Segment
from rich.style import Style

Cell = tuple[str, str]  # plain text, rich style name ("" for none)
UNSAFE = {"Cc", "Cf", "Cs", "Zl", "Zp"}  # controls (C0, C1), format (bidi), lone surrogates, line separators


def safe(text: str) -> str:
    """`text` with every character a terminal would act on rather than show replaced by `?`."""
    if text.isprintable():  # the common case, at C speed: none of UNSAFE is printable
        return text
    return "".join("?" if unicodedata.category(c) in UNSAFE else c for c in text)


class Grid:
    """Title, a bordered header, one line per row, a caption; `columns` are (header, "left" | "right")."""

    def __init__(
        self,
        title: str,
        caption: str,
        columns: Sequence[tuple[str, str]],
        rows: Sequence[Sequence[Cell]],
        drop: Sequence[str] = (),
    ) -> None:
        self.title, self.caption, self.columns, self.drop = title, caption, columns, drop
        self.rows = [[(safe(plain), style) for plain, style in row] for row in rows]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Segment]:
        widths = [cell_len(header) for header, _ in self.columns]
        for row in self.rows:
            for i, (plain, _) in enumerate(row):
                widths[i] = max(widths[i], cell_len(plain))
        names = [header for header, _ in self.columns]
        shown = list(range(len(self.columns)))
        left_out = []
        for name in self.drop:  # whole columns out until the table fits
            if sum(widths[i] + 3 for i in shown) + 1 <= options.max_width:
                break
            shown.remove(names.index(name))
            left_out.append(name)
        width, justify = [widths[i] for i in shown], [self.columns[i][1] for i in shown]
        total = sum(w + 3 for w in width) + 1
        note = f"; {len(left_out)} columns left out for width: {', '.join(left_out)}" if left_out else ""
        lines = [
            self._centred(self.title, total, console.get_style("italic")),
            [Segment("┏" + "┳".join("━" * (w + 2) for w in width) + "┓")],
            self._line([(names[i], "bold") for i in shown], width, justify, "┃", console),
            [Segment("┡" + "╇".join("━" * (w + 2) for w in width) + "┩")],
            *(self._line([row[i] for i in shown], width, justify, "│", console) for row in self.rows),
            [Segment("└" + "┴".join("─" * (w + 2) for w in width) + "┘")],
            self._centred(self.caption + note, total, console.get_style("dim italic")),
        ]
        for line in lines:
            yield from Segment.adjust_line_length(line, options.max_width) if total > options.max_width else line
            yield Segment.line()

    @staticmethod
    def _centred(text: str, width: int, style: Style) -> list[Segment]:
        return [Segment(" " * max(0, (width - cell_len(text)) // 2) + text, style)]

    @staticmethod
    def _line(
        cells: list[tuple[str, str]], widths: list[int], justify: list[str], bar: str, console: Console
    ) -> list[Segment]:
        """One row's segments; unstyled text runs joined into one segment (fewer segments: faster output)."""
        out, plain_run = [], bar
        for (plain, style), width, side in zip(cells, widths, justify, strict=True):
            pad = " " * (width - cell_len(plain))
            plain_run += " " + pad if side == "right" else " "
            if style:
                out += [Segment(plain_run), Segment(plain, console.get_style(style))]
                plain_run = ""
            else:
                plain_run += plain
            plain_run += " " + bar if side == "right" else pad + " " + bar
        return [*out, Segment(plain_run)]
