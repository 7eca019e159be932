"""The QR reader of DepotDownloader's output and the server's SVG and PNG drawings (steam/qr.py),
without a server (QR logins end to end: tests/api/test_qr_login.py)."""

from __future__ import annotations

from tests.fakes import depotdownloader as dd
from tests.support.qr import decoded_png, drawn_svg, modules
from wallwhale.steam.qr import CHANGED, HEADER, QrMatrix, QrReader


def test_the_reader_returns_each_code_once_its_last_row_arrived() -> None:
    reader = QrReader()
    first, second = dd.qr_rows("seed", 0), dd.qr_rows("seed", 1)
    lines = ["Logging in with QR code...", HEADER, *first, "", CHANGED, HEADER, *second]
    found = [matrix for line in lines if (matrix := reader.feed(line)) is not None]
    assert [list(matrix.rows) for matrix in found] == [modules(first), modules(second)]
    assert reader.malformed == 0


def test_the_reader_skips_blocks_that_are_not_a_square_of_modules() -> None:
    reader = QrReader()
    rows = dd.qr_rows("seed", 0)
    broken = [
        HEADER,
        *rows[:10],
        "Failed to authenticate with Steam: Failed to poll status with result Expired.",
    ]
    odd = [HEADER, rows[0] + " ", *rows]
    assert all(reader.feed(line) is None for line in [*broken, *odd])
    assert reader.malformed == 2
    assert reader.feed(rows[0]) is None  # rows outside a block are not a code


def test_drawings_match_the_modules() -> None:
    matrix = QrMatrix(tuple(modules(dd.qr_rows("seed", 3))))
    assert drawn_svg(matrix.svg()) == list(matrix.rows)
    assert decoded_png(matrix.png(scale=3), scale=3) == list(matrix.rows)
    tiny = QrMatrix(("# ", " #"))
    assert decoded_png(tiny.png(scale=1), scale=1) == ["# ", " #"]
