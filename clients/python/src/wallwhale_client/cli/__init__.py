"""wallwhale-cli: WallWhale at a terminal, through the Python client (see main.py for the commands).

main.py builds the argparse tree from the command groups, one module each: downloads (`download`),
batches (`batch`), jobs, keys, accounts, status and direct; settings, output, progress and exits are
what they share.
"""

from wallwhale_client.cli.accounts import qr_lines
from wallwhale_client.cli.main import build_parser, main

__all__ = ["build_parser", "main", "qr_lines"]
