"""QR codes as the tests read them: the fake DepotDownloader's printed rows as modules, and the
modules an SVG or a PNG drawn by the server paints (the PNG read twice: pypng and a plain zlib read)."""

from __future__ import annotations

import re
import struct
import zlib

import png


def modules(rows: list[str]) -> list[str]:
    """The fake's printed rows (two characters a module) as '#'/' ' modules."""
    return ["".join("#" if row[i : i + 2] == "██" else " " for i in range(0, len(row), 2)) for row in rows]


def drawn_svg(svg: str) -> list[str]:
    """The modules an SVG of QrMatrix.svg() paints dark (its one path of unit-high runs)."""
    size = int(re.search(r'viewBox="0 0 (\d+) \1"', svg).group(1))  # type: ignore[union-attr]
    assert svg.count("<path") == 1
    grid = [[" "] * size for _ in range(size)]
    path = re.search(r'<path fill="#000" d="([^"]*)"', svg).group(1)  # type: ignore[union-attr]
    for x, y, width in re.findall(r"M(\d+) (\d+)h(\d+)v1h-\3z", path):
        for column in range(int(x), int(x) + int(width)):
            grid[int(y)][column] = "#"
    assert re.sub(r"M(\d+) (\d+)h(\d+)v1h-\3z", "", path) == ""
    return ["".join(row) for row in grid]


def decoded_png(data: bytes, scale: int = 8) -> list[str]:
    """The modules of a PNG, read with pypng and checked against a plain zlib read of its IDAT."""
    width, height, pixels, info = png.Reader(bytes=data).read()
    assert width == height
    assert info["bitdepth"] == 1
    assert info["greyscale"]
    rows = [list(row) for row in pixels]
    assert rows == _inflated(data, width)
    assert all(rows[y] == rows[y - y % scale] for y in range(height))  # square modules
    return ["".join("#" if row[x] == 0 else " " for x in range(0, width, scale)) for row in rows[::scale]]


def _inflated(data: bytes, width: int) -> list[list[int]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = b"", 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        assert struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])[0] == zlib.crc32(
            kind + body
        )
        if kind == b"IDAT":
            chunks += body
        offset += 12 + length
    raw = zlib.decompress(chunks)
    stride = 1 + (width + 7) // 8
    rows = []
    for start in range(0, len(raw), stride):
        assert raw[start] == 0  # filter "none"
        bits = "".join(f"{byte:08b}" for byte in raw[start + 1 : start + stride])
        rows.append([int(bit) for bit in bits[:width]])
    return rows
