"""DepotDownloader's QR login code: read from its output, drawn again as SVG and PNG.

With `-qr` it prints (docs/depotdownloader-reference.md §2.2 row 10, §3) `Use the Steam Mobile App to
sign in with this QR code:` and then the code line by line, two characters per module (dark `██`,
light two spaces), quiet zone included, and again after `The QR code has changed:`. The matrix is
square, so the block is complete once there are as many rows as a row has modules: nothing follows
it until the code is scanned, changed or expired, so waiting for a terminating line would hold the
code back.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import png

HEADER = "Use the Steam Mobile App to sign in with this QR code:"
CHANGED = "The QR code has changed:"
DARK, LIGHT = "#", " "
_CELLS = {"██": DARK, "  ": LIGHT}
_SMALLEST = 21 + 2  # a version-1 code (21 modules) with the thinnest quiet zone


@dataclass(frozen=True)
class QrMatrix:
    """Modules row by row, `#` dark and ` ` light, quiet zone included, as DepotDownloader drew it."""

    rows: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.rows)

    def svg(self) -> str:
        """A scalable image: one path of the dark modules (horizontal runs) on a white square."""
        runs = []
        for y, row in enumerate(self.rows):
            x = 0
            while x < len(row):
                if row[x] != DARK:
                    x += 1
                    continue
                start = x
                while x < len(row) and row[x] == DARK:
                    x += 1
                runs.append(f"M{start} {y}h{x - start}v1h-{x - start}z")
        n = self.size
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {n} {n}" '
            f'shape-rendering="crispEdges"><rect width="{n}" height="{n}" fill="#fff"/>'
            f'<path fill="#000" d="{"".join(runs)}"/></svg>'
        )

    def png(self, scale: int = 8) -> bytes:
        """A 1-bit greyscale PNG, `scale` pixels per module (0 is black, 1 white)."""
        lines = []
        for row in self.rows:
            pixels = [value for cell in row for value in [0 if cell == DARK else 1] * scale]
            lines.extend([pixels] * scale)
        out = io.BytesIO()
        side = self.size * scale
        png.Writer(side, side, greyscale=True, bitdepth=1).write(out, lines)
        return out.getvalue()


class QrReader:
    """Fed DepotDownloader's lines one by one; returns each QR code when its last row has arrived."""

    def __init__(self) -> None:
        self._rows: list[str] | None = None  # None: not inside a code block
        self.malformed = 0  # blocks that were not a square of modules (logged by the caller)

    def feed(self, line: str) -> QrMatrix | None:
        if line.strip() == HEADER:
            self._rows = []
            return None
        if self._rows is None:
            return None
        row = _modules(line)
        if row is None or (self._rows and len(row) != len(self._rows[0])):
            self._rows = None  # the block ended before it was square: not a code we can show
            self.malformed += 1
            return None
        self._rows.append(row)
        if len(self._rows) < len(row):
            return None
        matrix, self._rows = QrMatrix(tuple(self._rows)), None
        return matrix


def _modules(line: str) -> str | None:
    """One row of modules, or None if the line is not a row of a QR code."""
    text = line.rstrip("\r\n")
    if len(text) % 2 or len(text) < 2 * _SMALLEST:
        return None
    cells = [_CELLS.get(text[i : i + 2]) for i in range(0, len(text), 2)]
    if any(cell is None for cell in cells):
        return None
    return "".join(cell for cell in cells if cell is not None)
