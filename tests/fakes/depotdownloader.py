#!/usr/bin/env python3
"""Stands in for the DepotDownloader binary in tests (it cannot be installed here).

It takes DepotDownloader's command line and answers as release 3.4.0 does
(see ../shared/reference/depotdownloader.md). It knows `-V` so far; everything else is refused the
way the real parser refuses a command line without -app.
"""

import sys

VERSION = "3.4.0+c553ef4d60c00a4f5fd16c9fe017f569001589ff"
RUNTIME = ".NET 9.0.4 on Debian GNU/Linux 12 (bookworm)"


def main(argv: list[str]) -> int:
    # Like Program.cs: -V / --version only counts as the sole, exact-case argument.
    if argv in (["-V"], ["--version"]):
        print(f"DepotDownloader v{VERSION}")
        print(f"Runtime: {RUNTIME}")
        return 0
    if not any(arg.lower() == "-app" for arg in argv):
        print("Error: -app not specified!")
        return 1
    print(
        "Unhandled exception. System.NotImplementedException: this test double only knows -V", file=sys.stderr
    )
    return 134


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
