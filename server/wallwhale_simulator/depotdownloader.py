#!/usr/bin/env python3
"""Stands in for the DepotDownloader 3.4.0 binary in the demo and the tests (no Steam account needed).

It takes DepotDownloader's real command line and plays both the tool and Steam: it prints the tool's
lines on the stream the tool uses, asks its prompts without a newline, writes the files of `-dir` and
the refresh-token store, and ends with the tool's exit codes, crashes (SIGABRT) and signal behaviour.
Everything it prints comes from the project's DepotDownloader reference
(docs/depotdownloader-reference.md): `#n` in a comment is row n of its output catalogue (section
2.2), `§n` a section.

Steam is a "world": a JSON file named by FAKE_STEAM_WORLD (accounts, workshop items, failure knobs),
written by wallwhale_simulator/steam.py, which also generates the launcher that sets that variable. Without
it Steam is empty. The file is stdlib-only and importable: the test helper reuses its functions for
the exact file bytes, manifests, QR rows and token-store paths.

The run is a straight sequence, like Program.cs: parse the arguments, ask for the password, connect,
authenticate (password + Steam Guard, stored token, or QR), log on, resolve the pubfile, check the
app, get the depot key, fetch the manifest, pre-allocate, download, report. A step either goes on,
returns an exit code, or raises one of the three kinds of exception the real program tells apart:
ContentDownloaderException and OperationCanceledException (message, exit 1) and anything else (crash).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import signal
import struct
import sys
import time
import zlib
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, NoReturn

VERSION = "3.4.0+c553ef4d60c00a4f5fd16c9fe017f569001589ff"
RUNTIME = ".NET 9.0.4 on Debian GNU/Linux 12 (bookworm)"

WORLD_ENV = "FAKE_STEAM_WORLD"
# Set by the generated launcher, or exported by /bin/sh itself (PWD), not by whoever runs it: left
# out of the environment names recorded in runs.jsonl.
NOT_CALLER_ENV = frozenset({WORLD_ENV, "PYTHONCOERCECLOCALE", "PWD"})

WALLPAPER_ENGINE = 431960
APP_NAMES = {WALLPAPER_ENGINE: "Wallpaper Engine"}
INVALID_APP_ID = 2**32 - 1  # uint.MaxValue
INVALID_MANIFEST_ID = 2**64 - 1  # ulong.MaxValue
CHUNK_SIZE = 1 << 20  # Steam content chunks are at most 1 MiB
CONFIG_DIR = ".DepotDownloader"
STAGING_DIR = ".DepotDownloader/staging"
DEFAULT_DOWNLOAD_DIR = "depots"

DEFAULT_SETTINGS: dict[str, Any] = {
    "time_scale": 1.0,  # multiplies every duration of the world and every simulated wait
    "connect": "ok",  # "ok" | "fail" (10 retries, then give up) | "flaky" (flaky_failures retries)
    "flaky_failures": 2,
    "cell_id": 198,
    "qr_refresh": None,  # seconds between "The QR code has changed:" (None: never)
    "auth_timeout": None,  # seconds until a phone approval or QR login expires (None: never)
    "app_build_id": 15935782,  # the app's public build id: the folder used without -dir (§5.1)
    "qr_seed": "fake-steam",
    # Whether Steam sends new guard data with a QR login: only then is row #11 printed (§2.2).
    "qr_new_guard_data": True,
    # Content speed in bytes per second of Steam time (None: instant), so progress can be watched.
    "bytes_per_second": None,
    # Whether runs are recorded in <world>/runs.jsonl (the tests read it; the demo's world folder is
    # read-only inside the server's sandbox).
    "record_runs": True,
}
CONNECT_MODES = ("ok", "fail", "flaky")
GUARDS = (None, "email", "authenticator", "mobile")
HANG_PHASES = ("login", "manifest", "preallocate", "progress")
BEHAVIOURS = frozenset(
    {
        "missing", "unsupported_type", "depot_key_denied", "zero_depots", "manifest_401", "chunk_errors",
        "file_details_access_denied", "disk_full", "crash", "hang", "file_delay", "garbage", "huge_output",
        "no_files", "exit_code",
    }
)  # fmt: skip

DEVICE_CODE_PROMPT = "STEAM GUARD! Please enter your 2-factor auth code from your authenticator app: "
EMAIL_CODE_PROMPT = "STEAM GUARD! Please enter the auth code sent to the email at {hint}: "
WRONG_CODE = "The previous 2-factor auth code you have provided is incorrect."
PHONE_CONFIRMATION = "STEAM GUARD! Use the Steam Mobile App to confirm your sign in..."
# Invalid UTF-8, NUL, BEL, an OSC 9;4 progress sequence and an ANSI erase, on a line of their own.
GARBAGE = b"\x1b]9;4;1;50\x07\xff\xfe\x00 \xc3\x28 bad \x1b[2K\x07\r\n"

# Stack-trace lines of the .NET crash reports (shortened signatures).
AT_MAIN = ["   at DepotDownloader.Program.Main(String[] args) in /_/DepotDownloader/Program.cs:line 182"]
AT_DOWNLOAD = [
    "   at DepotDownloader.ContentDownloader.DownloadSteam3Async(List`1 depots)",
    "   at DepotDownloader.ContentDownloader.DownloadAppAsync(UInt32 appId, List`1 depotManifestIds, ...)",
    "   at DepotDownloader.ContentDownloader.DownloadPubfileAsync(UInt32 appId, UInt64 publishedFileId)",
    *AT_MAIN,
]
AT_CONVERTER = [
    "   at System.ComponentModel.BaseNumberConverter.ConvertFrom(ITypeDescriptorContext context, ...)",
    "   at System.ComponentModel.TypeConverter.ConvertFromString(String text)",
    "   at DepotDownloader.Program.GetParameter[T](String[] args, String param, T defaultValue)",
    *AT_MAIN,
]


# ---------------------------------------------------------------------------------------------
# Shared with steam.py: item bytes, manifests, percentages, QR rows, the token store.
# ---------------------------------------------------------------------------------------------


def random_bytes(workshop_id: int, name: str, size: int) -> bytes:
    """`size` deterministic pseudo-random bytes for the file `name` of item `workshop_id`."""
    return hashlib.shake_256(f"fake-steam/{workshop_id}/{name}".encode()).digest(size)


def file_spec(value: bytes | int) -> dict[str, Any]:
    """How a file's content is kept in the world: its bytes, or a size of pseudo-random bytes."""
    if isinstance(value, bool) or not isinstance(value, bytes | int):
        raise TypeError(f"a file is bytes or a size, not {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a file size cannot be negative")
        return {"random": value}
    return {"b64": base64.b64encode(value).decode("ascii")}


def file_bytes(workshop_id: int, name: str, spec: dict[str, Any]) -> bytes:
    if "random" in spec:
        return random_bytes(workshop_id, name, spec["random"])
    return base64.b64decode(spec["b64"])


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()  # noqa: S324 - Steam names chunks and files by SHA-1


def item_files(workshop_id: int, item: dict[str, Any]) -> dict[str, bytes]:
    """The files the item's manifest lists, in manifest order (names sorted ignoring case)."""
    if item["behaviour"].get("no_files"):
        return {}
    names = sorted(item["files"], key=lambda name: (name.lower(), name))
    return {name: file_bytes(workshop_id, name, item["files"][name]) for name in names}


def build_manifest(workshop_id: int, item: dict[str, Any]) -> dict[str, Any]:
    """The item's depot manifest: deterministic id and date, files with SHA-1s and 1 MiB chunks."""
    files = []
    for name, data in item_files(workshop_id, item).items():
        chunks = []
        for offset in range(0, len(data), CHUNK_SIZE):
            part = data[offset : offset + CHUNK_SIZE]
            compressed = len(zlib.compress(part, 1))
            chunks.append({"id": sha1(part), "offset": offset, "length": len(part), "compressed": compressed})
        files.append({"name": name, "size": len(data), "sha1": sha1(data), "chunks": chunks})
    identity = json.dumps([workshop_id, item["app_id"], [(f["name"], f["sha1"]) for f in files]])
    digest = hashlib.sha256(identity.encode()).digest()
    return {
        "depot": item["app_id"],  # an app's workshop items live in its workshop depot: the same id
        "id": int.from_bytes(digest[:8], "big") >> 1,
        "created": 1_500_000_000 + int.from_bytes(digest[8:12], "big") % 250_000_000,
        "request_code": int.from_bytes(digest[12:20], "big"),
        "files": files,
    }


def _float32(value: float) -> float:
    return float(struct.unpack("f", struct.pack("f", value))[0])


def percent(done: int, total: int) -> str:
    """`{0,6:#00.00}` of `(done / (float)total) * 100.0f` (#35): .NET rounds a float to 7
    significant digits before a custom format, then half away from zero; 0/0 is NaN."""
    if total == 0:
        return "   NaN"
    value = _float32(_float32(_float32(done) / _float32(total)) * 100.0)
    text = str(Decimal(format(value, ".7g")).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))
    whole, fraction = text.split(".")
    return f"{whole.zfill(2)}.{fraction}".rjust(6)


def qr_rows(seed: str, index: int) -> list[str]:
    """A QR-like version-3 matrix (29 modules: finders, timing, alignment, data) inside its 4-module
    quiet zone, two characters per module (dark `██`, light two spaces), drawn the way QRCoder's
    GetLineByLineGraphic(1, drawQuietZones: true) draws one. It does not decode."""
    size, quiet = 29, 4
    noise = hashlib.shake_256(f"{seed}/qr/{index}".encode()).digest(size * size)

    def dark(row: int, col: int) -> bool:
        if not (0 <= row < size and 0 <= col < size):
            return False  # quiet zone
        for top, left in ((0, 0), (0, size - 7), (size - 7, 0)):
            if top - 1 <= row <= top + 7 and left - 1 <= col <= left + 7:  # finder and its separator
                inside = top <= row < top + 7 and left <= col < left + 7
                return inside and max(abs(row - top - 3), abs(col - left - 3)) != 2
        if row == 6 or col == 6:  # timing patterns
            return (row + col) % 2 == 0
        if abs(row - 22) <= 2 and abs(col - 22) <= 2:  # alignment pattern
            return max(abs(row - 22), abs(col - 22)) != 1
        return (row, col) == (size - 8, 8) or bool(noise[row * size + col] & 1)

    span = range(-quiet, size + quiet)
    return ["".join("██" if dark(row, col) else "  " for col in span) for row in span]


def local_application_data(environ: Any) -> Path:
    """.NET's LocalApplicationData on Linux: $XDG_DATA_HOME if absolute, else $HOME/.local/share."""
    xdg = environ.get("XDG_DATA_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg)
    return Path(environ.get("HOME") or os.path.expanduser("~")) / ".local" / "share"


_RANDOM_NAME = re.compile(r"^[a-z0-5]{8}\.[a-z0-5]{3}$")  # Path.GetRandomFileName()


def account_config_path(data_home: Path, identity: str, create: bool) -> Path | None:
    """Where account.config lives (§5.2): IsolatedStorage/<rand>/<rand>/Url.<hash>/AssemFiles/.

    The two random folders are made once and then reused, as .NET does; Url.<hash> stands for the
    binary's identity (here the world file, i.e. one fake installation)."""
    root = data_home / "IsolatedStorage"
    digest = hashlib.sha1(identity.encode()).digest()  # noqa: S324
    url = "Url." + base64.b32encode(digest).decode().lower()
    randoms = [
        d for d in sorted(root.glob("*/*")) if d.is_dir() and all(map(_RANDOM_NAME.match, d.parts[-2:]))
    ]
    if randoms:
        folder = randoms[0] / url / "AssemFiles"
    elif create:
        alphabet = "abcdefghijklmnopqrstuvwxyz012345"
        names = ["".join(secrets.choice(alphabet) for _ in range(11)) for _ in range(2)]
        folder = root.joinpath(*(f"{n[:8]}.{n[8:]}" for n in names), url, "AssemFiles")
    else:
        return None
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder / "account.config"


def make_token(account_name: str, persistent: bool) -> str:
    """A refresh token shaped like Steam's (a JWT); only its presence matters."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    steam_id = 76561197960265728 + int(hashlib.sha256(account_name.lower().encode()).hexdigest(), 16) % 10**8
    now = int(time.time())
    claims = {
        "iss": "steam",
        "sub": str(steam_id),
        "iat": now,
        "exp": now + 200 * 86400,
        "per": int(persistent),
    }
    return f"{part({'typ': 'JWT', 'alg': 'EdDSA'})}.{part(claims)}.{secrets.token_urlsafe(48)}"


class AccountStore:
    """account.config: login tokens and Steam Guard data by account name, case-insensitive keys
    (3.1.0+). The real file is deflated protobuf; JSON here."""

    def __init__(self, path: Path | None, data: dict[str, dict[str, str]] | None = None):
        self.path = path
        self.data = data or {"LoginTokens": {}, "GuardData": {}}

    @classmethod
    def read(cls, path: Path) -> AccountStore:
        return cls(path, json.loads(path.read_text("utf-8")) if path.exists() else None)

    def _key(self, section: str, name: str) -> str | None:
        return next((key for key in self.data[section] if key.lower() == name.lower()), None)

    def get(self, section: str, name: str) -> str | None:
        key = self._key(section, name)
        return None if key is None else self.data[section][key]

    def put(self, section: str, name: str, value: str | None) -> None:
        key = self._key(section, name)
        if key is not None:
            del self.data[section][key]
        if value is not None:
            self.data[section][name] = value

    def save(self) -> None:
        if self.path is not None:
            temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            temporary.write_text(json.dumps(self.data, indent=2), "utf-8")
            os.chmod(temporary, 0o600)
            os.replace(temporary, self.path)


# ---------------------------------------------------------------------------------------------
# The simulation.
# ---------------------------------------------------------------------------------------------


class ContentDownloaderError(Exception):
    """ContentDownloaderException: Program prints the message and returns 1."""


class Canceled(Exception):
    """OperationCanceledException: Program prints the message and returns 1."""

    def __init__(self) -> None:
        super().__init__("The operation was canceled.")


class Unhandled(Exception):
    """Any other .NET exception: it crashes the process (§4.3)."""

    def __init__(self, kind: str, message: str, stack: list[str], inner: Unhandled | None = None):
        super().__init__(message)
        self.kind, self.message, self.stack, self.inner = kind, message, stack, inner

    def report(self) -> list[str]:
        lines = [f"Unhandled exception. {self.kind}: {self.message}"]
        if self.inner is not None:
            lines += [f" ---> {self.inner.kind}: {self.inner.message}", *self.inner.stack]
            lines.append("   --- End of inner exception stack trace ---")
        return lines + self.stack


NUMBER_TYPES = {"Int32": (-(2**31), 2**31 - 1), "UInt32": (0, 2**32 - 1), "UInt64": (0, 2**64 - 1)}


def parse_number(text: str, kind: str) -> int:
    """TypeDescriptor.GetConverter(typeof(T)).ConvertFromString(text) for an integer type T: decimal
    with an optional sign, or hex after `#`, `0x` or `&h`; anything else throws (§1.1)."""
    low, high = NUMBER_TYPES[kind]
    trimmed = text.strip()
    at_parse = [f"   at System.{kind}.Parse(String s, NumberStyles style, IFormatProvider provider)"]
    hex_digits = (
        trimmed[1:] if trimmed[:1] == "#" else trimmed[2:] if trimmed[:2].lower() in ("0x", "&h") else None
    )
    if hex_digits is not None and re.fullmatch(r"[0-9a-fA-F]+", hex_digits):
        value = int(hex_digits, 16)
        value -= 2**32 if kind == "Int32" and 2**31 <= value < 2**32 else 0
    elif hex_digits is None and re.fullmatch(r"[+-]?[0-9]+", trimmed):
        value = int(trimmed)
    else:
        value = None
    if value is not None and low <= value <= high:
        return value
    if value is not None:
        article = "an" if kind[0] == "I" else "a"
        message = f"Value was either too large or too small for {article} {kind}."
        inner = Unhandled("System.OverflowException", message, at_parse)
    else:
        inner = Unhandled(
            "System.FormatException", f"The input string '{trimmed}' was not in a correct format.", at_parse
        )
    message = f"{trimmed} is not a valid value for {kind}. (Parameter 'value')"
    raise Unhandled("System.ArgumentException", message, AT_CONVERTER, inner)


class Args:
    """Program.cs:398-483: options are case-insensitive, the first occurrence wins, a value is the next
    element, and every element read is consumed; the rest are reported as unused (3.2.0+)."""

    def __init__(self, argv: list[str]):
        self.argv = argv
        self.consumed = [False] * len(argv)

    def index(self, name: str) -> int:
        for i, arg in enumerate(self.argv):
            if arg.lower() == name.lower():
                self.consumed[i] = True
                return i
        return -1

    def has(self, name: str) -> bool:
        return self.index(name) > -1

    def text(self, name: str) -> str | None:
        i = self.index(name)
        if i == -1 or i == len(self.argv) - 1:
            return None  # a missing value silently means the default (§1.1)
        self.consumed[i + 1] = True
        return self.argv[i + 1]

    def number(self, name: str, kind: str, default: int) -> int:
        value = self.text(name)
        return default if value is None else parse_number(value, kind)


def peek(argv: list[str], *names: str) -> str | None:
    """The value of the first of `names` present, for the run log (consumes nothing)."""
    for name in names:
        for i, arg in enumerate(argv[:-1]):
            if arg.lower() == name:
                return argv[i + 1]
    return None


class World:
    """Steam, as the test described it."""

    def __init__(self, path: Path | None):
        data = json.loads(path.read_text("utf-8")) if path is not None else {}
        self.dir = path.parent if path is not None else None
        self.identity = str(path) if path is not None else str(Path(__file__).resolve())
        self.settings: dict[str, Any] = {**DEFAULT_SETTINGS, **data.get("settings", {})}
        self.accounts: dict[str, dict[str, Any]] = data.get("accounts", {})
        self.items: dict[str, dict[str, Any]] = data.get("items", {})

    def account(self, name: str) -> dict[str, Any] | None:
        return self.accounts.get(name.lower())

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds * self.settings["time_scale"])

    def passwords(self) -> list[str]:
        return [account["password"] for account in self.accounts.values() if account["password"]]


class RunLog:
    """One JSON line in <world>/runs.jsonl when a run starts and one when it ends, for assertions."""

    def __init__(self, world: World, argv: list[str]):
        recorded = world.dir is not None and world.settings["record_runs"]
        self.path = world.dir / "runs.jsonl" if recorded and world.dir is not None else None
        self.ended = False
        self.account: str | None = None  # the account that logged on
        self.branch = "pubfile"
        self.key = {"id": secrets.token_hex(8), "pid": os.getpid()}
        flags = {arg.lower() for arg in argv}
        self._append(
            {
                "event": "start",
                **self.key,
                "argv": argv,
                "cwd": os.getcwd(),
                "HOME": os.environ.get("HOME"),
                "XDG_DATA_HOME": os.environ.get("XDG_DATA_HOME"),
                "username": peek(argv, "-username", "-user"),
                "loginid": peek(argv, "-loginid"),
                "dir": peek(argv, "-dir"),
                "start": time.time(),
                "password_on_argv": bool(flags & {"-password", "-pass"})
                or any(password in arg for password in world.passwords() for arg in argv),
                "env_names": sorted(set(os.environ) - NOT_CALLER_ENV),
            }
        )

    def _append(self, record: dict[str, Any]) -> None:
        if self.path is not None:
            descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(descriptor, (json.dumps(record) + "\n").encode())  # one write: no interleaving
            finally:
                os.close(descriptor)

    def end(self, exit_code: int) -> None:
        if not self.ended:
            self.ended = True
            record = {"event": "end", **self.key, "end": time.time(), "exit_code": exit_code}
            self._append({**record, "account": self.account, "branch": self.branch})


class Console:
    """Unbuffered writes (the .NET console auto-flushes, §2.1) and Console.ReadLine on stdin."""

    def __init__(self) -> None:
        self.stdin = sys.stdin.buffer if sys.stdin is not None else None

    @staticmethod
    def raw(data: bytes, descriptor: int = 1) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(descriptor, view) :]
            except OSError:  # .NET ignores EPIPE on the console streams
                return

    def read_line(self) -> str | None:
        """A line without its terminator, or None at the end of input."""
        try:
            line = self.stdin.readline() if self.stdin is not None else b""
        except (OSError, ValueError):
            line = b""
        if not line:
            return None
        return line.decode("utf-8", errors="replace").removesuffix("\n").removesuffix("\r")


class DepotDownloader:
    def __init__(self, world: World, argv: list[str], log: RunLog):
        self.world, self.argv, self.log = world, argv, log
        self.console = Console()
        self.store = AccountStore(None)
        # Options, as Program.cs reads them.
        self.debug = self.remember = self.qr = self.no_mobile = self.manifest_only = self.verify = False
        self.cell_id, self.max_downloads = -1, 8
        self.install_directory: str | None = None
        self.file_filter: tuple[set[str], list[re.Pattern[str]]] | None = None
        self.pubfile = 0
        self.item: dict[str, Any] | None = None
        self.behaviour: dict[str, Any] = {}
        # Session state.
        self.session = False  # connected: "Disconnected from Steam" is still to come
        self.fresh_token = False  # the stored token was issued by this run's own authentication
        self.full_file: str | None = None  # disk_full: the file whose allocation fails
        self.account: dict[str, Any] | None = None
        self.old_manifest: dict[str, Any] | None = None

    # -- output -------------------------------------------------------------------------------

    def out(self, line: str = "", end: str = "\n") -> None:
        self.console.raw((line + end).encode())

    def err(self, line: str = "", end: str = "\n") -> None:
        self.console.raw((line + end).encode(), 2)

    def crash(self, error: Unhandled) -> NoReturn:
        """The .NET runtime's unhandled-exception report on stderr, then SIGABRT (returncode -6)."""
        for line in error.report():
            self.err(line)
        die_by_abort(self.log)

    def hang(self, phase: str) -> None:
        while self.behaviour.get("hang") == phase:
            time.sleep(60)

    # -- Program.cs -----------------------------------------------------------------------------

    def run(self) -> int:
        argv = self.argv
        if not argv:  # Program.cs:24-35
            self.out(f"DepotDownloader v{VERSION}")
            self.out()
            self.out("Usage: downloading one or all depots for an app:")
            self.out("       depotdownloader -app <id> [-depot <id> [-manifest <id>]]")
            return 0
        if argv in (["-V"], ["--version"]):  # Program.cs:46-50: only as the sole, exact-case argument
            self.out(f"DepotDownloader v{VERSION}")
            self.out(f"Runtime: {RUNTIME}")
            return 0
        self.open_account_store()  # Program.cs:41, before the arguments are looked at
        args = Args(argv)
        self.debug = args.has("-debug")
        if self.debug:
            self.out(f"DepotDownloader v{VERSION}")
            self.out(f"Runtime: {RUNTIME}")
        username = args.text("-username")
        username = args.text("-user") if username is None else username
        password = args.text("-password")
        password = args.text("-pass") if password is None else password
        self.remember = args.has("-remember-password")
        self.qr = args.has("-qr")
        self.no_mobile = args.has("-no-mobile")
        if username is None and self.remember and not self.qr:
            self.out("Error: -remember-password can not be used without -username or -qr.")
            return 1
        if username is not None and self.qr:
            self.out("Error: -qr can not be used with -username.")
            return 1
        self.manifest_only = args.has("-manifest-only")
        self.cell_id = args.number("-cellid", "Int32", -1)
        self.file_filter = self.load_filelist(args.text("-filelist"))
        self.install_directory = args.text("-dir")
        self.verify = args.has("-verify-all") or args.has("-verify_all") or args.has("-validate")
        args.has("-use-lancache")  # no Lancache is ever detected here
        self.max_downloads = args.number("-max-downloads", "Int32", 8)
        if args.has("-loginid"):
            args.number("-loginid", "UInt32", 0)
        app = args.number("-app", "UInt32", INVALID_APP_ID)
        if app == INVALID_APP_ID:
            self.out("Error: -app not specified!")
            return 1
        pubfile = args.number("-pubfile", "UInt64", INVALID_MANIFEST_ID)
        ugc = args.number("-ugc", "UInt64", INVALID_MANIFEST_ID)
        if pubfile != INVALID_MANIFEST_ID:
            self.pubfile = pubfile
            self.item = self.world.items.get(str(pubfile))
            self.behaviour = self.item["behaviour"] if self.item else {}
            code = self.steam_command(args, username, password, lambda: self.download_pubfile(app, pubfile))
            override = self.behaviour.get("exit_code")
            return code if override is None else int(override)
        if ugc != INVALID_MANIFEST_ID:
            raise Unhandled(
                "System.NotImplementedException", "this test double does not simulate -ugc", AT_MAIN
            )
        # No -pubfile (§1.1 "Danger"): the app-only options are read and the app itself downloads.
        for name in ("-branch", "-beta", "-branchpassword", "-betapassword", "-os", "-osarch", "-language"):
            args.text(name)
        for name in ("-all-platforms", "-all-archs", "-all-languages", "-lowviolence", "-depot", "-manifest"):
            args.has(name)
        return self.steam_command(args, username, password, lambda: self.download_whole_app(app))

    def steam_command(
        self, args: Args, username: str | None, password: str | None, download: Callable[[], None]
    ) -> int:
        """What the pubfile and app branches share (Program.cs:169-207)."""
        unused = [i for i, consumed in enumerate(args.consumed) if not consumed]
        for i in unused:
            self.err(f"Argument #{i + 1} {args.argv[i]} was not used.")
        if unused:
            self.err("Make sure you specified the arguments correctly. Check --help for correct arguments.")
            self.err()
        if not self.initialize_steam(username, password):
            self.out("Error: InitializeSteam failed")
            return 1
        try:
            try:
                download()
            except PermissionError as error:  # e.g. an unwritable -dir (§4.3)
                message = f"Access to the path '{error.filename}' is denied."
                raise Unhandled("System.UnauthorizedAccessException", message, AT_DOWNLOAD) from None
            except OSError as error:
                raise Unhandled(
                    "System.IO.IOException", f"{error.strerror} : '{error.filename}'", AT_DOWNLOAD
                ) from None
        except (ContentDownloaderError, Canceled) as error:
            self.out(str(error))
            return 1
        except Unhandled as error:
            self.out(f"Download failed to due to an unhandled exception: {error.message}")  # sic (§4.3)
            self.shutdown()
            self.crash(error)
        finally:
            self.shutdown()
        return 0

    def open_account_store(self) -> None:
        """AccountSettingsStore.LoadFromFile: making the isolated storage can fail, and only an
        IOException is tolerated while reading the file (§4.3)."""
        try:
            path = account_config_path(local_application_data(os.environ), self.world.identity, create=True)
            assert path is not None
        except OSError as error:
            denied = Unhandled(
                "System.UnauthorizedAccessException", f"Access to the path '{error.filename}' is denied.", []
            )
            message = "The type initializer for 'DepotDownloader.AccountSettingsStore' threw an exception."
            self.crash(Unhandled("System.TypeInitializationException", message, AT_MAIN, denied))
        try:
            self.store = AccountStore.read(path)
        except (ValueError, KeyError):
            message = (
                "Invalid wire-type (7); this usually means you have over-written a file without truncating"
            )
            self.crash(Unhandled("ProtoBuf.ProtoException", message + " or setting the length", AT_MAIN))

    def load_filelist(self, path: str | None) -> tuple[set[str], list[re.Pattern[str]]] | None:
        if path is None:
            return None
        try:
            lines = Path(path).read_text("utf-8").splitlines()
        except OSError:
            missing = f"Could not find file '{os.path.abspath(path)}'."
            self.out(f"Warning: Unable to load filelist: System.IO.FileNotFoundException: {missing}")
            return set(), []  # the filter is already on, so nothing matches (§1.2)
        names = {
            line.replace("\\", "/").lower()
            for line in lines
            if line.strip() and not line.startswith("regex:")
        }
        patterns = [re.compile(line[6:], re.IGNORECASE) for line in lines if line.startswith("regex:")]
        self.out(f"Using filelist: '{path}'.")  # 1
        return names, patterns

    # -- Program.InitializeSteam and Steam3Session ------------------------------------------------

    def initialize_steam(self, username: str | None, password: str | None) -> bool:
        if not self.qr:
            stored = username is not None and self.store.get("LoginTokens", username) is not None
            if username is not None and password is None and (not self.remember or not stored):
                if stored:
                    hint = "Did you forget to specify -remember-password?"
                    self.out(f'Account "{username}" has stored credentials. {hint}')  # 3
                while password is None or password == "":  # an empty line asks again
                    self.out(f'Enter account password for "{username}": ', end="")  # 4
                    password = self.console.read_line()
                    self.out()
                    if password is None:  # end of input: no password, see log_on
                        break
            elif username is None:
                self.out(
                    "No username given. Using anonymous account with dedicated server subscription."
                )  # 2
        if password and len(password) > 64:
            self.err("Warning: Password is longer than 64 characters, which is not supported by Steam.")
        if password and not password.isascii():
            self.err("Warning: Password contains non-ASCII characters, which is not supported by Steam.")
        token = self.store.get("LoginTokens", username) if username is not None and self.remember else None
        self.out("Connecting to Steam3...", end="")  # 5
        if not self.connect():
            self.out("Unable to get steam3 credentials.")
            return False
        self.session = True
        if not self.log_on(username, None if token is not None else password, token):
            self.out("Unable to get steam3 credentials.")
            return False
        return True

    def connect(self) -> bool:
        if self.debug:
            self.out("[CMClient] Connecting to 162.254.196.67:27017 with protocol Tcp")
        mode = self.world.settings["connect"]
        failures = {"ok": 0, "fail": 11, "flaky": self.world.settings["flaky_failures"]}[mode]
        for attempt in range(1, failures + 1):
            if attempt > 10:
                self.out("Could not connect to Steam after 10 tries")  # 7
                return False
            self.out(f"Connection to Steam failed. Trying again (#{attempt})...")  # 6, the first ends line #5
            self.world.sleep(attempt)
        self.out(" Done!")  # 5
        return True

    def shutdown(self) -> None:
        """Closing the session prints #16 (at exit, after an auth failure, after a token rejection)."""
        if self.session:
            self.session = False
            self.out("Disconnected from Steam")

    def auth_failed(self, message: str) -> None:
        self.err(f"Failed to authenticate with Steam: {message}")

    def log_on(self, username: str | None, password: str | None, token: str | None) -> bool:
        """ConnectedCallback, then LogOnCallback (Steam3Session.cs)."""
        if username is None and not self.qr:
            self.out("Logging anonymously into Steam3...", end="")  # 8
            self.hang("login")
            self.out(" Done!")
            return self.logged_on(None)
        if username is not None:
            self.out(f"Logging '{username}' into Steam3...")  # 9
        self.hang("login")
        name = username
        if username is not None and password is not None and token is None:
            name = self.authenticate_with_password(username, password)
        elif token is None and self.qr:
            name = self.authenticate_with_qr()
        elif token is None:  # the password prompt met the end of input (§3): SteamUser.LogOn throws
            message = "LogOn requires a username and password or access token to be set in 'details'."
            stack = [
                "   at SteamKit2.SteamUser.LogOn(LogOnDetails details)",
                "   at DepotDownloader.Steam3Session.ConnectedCallback(ConnectedCallback connected)",
                "   at System.Threading.Tasks.Task.<>c.<ThrowAsync>b__128_1(Object state)",
                "   at System.Threading.ThreadPoolWorkQueue.Dispatch()",
            ]
            self.crash(Unhandled("System.ArgumentException", message, stack))
        if name is None:
            self.shutdown()
            return False
        account = self.world.account(name) or {"username": name, "owns": [WALLPAPER_ENGINE]}
        rejected = account.get("token_rejected")
        if rejected and not self.fresh_token:  # a stored token, refused by Steam
            self.shutdown()  # the remote disconnect is expected: #16 comes first
            self.store.put("LoginTokens", name, None)
            self.store.save()
            self.out(f"Access token was rejected ({rejected}).")
            return False
        self.out(" Done!")  # 9
        self.log.account = account["username"]
        return self.logged_on(account)

    def logged_on(self, account: dict[str, Any] | None) -> bool:
        if self.cell_id in (-1, 0):
            self.out(f"Using Steam3 suggested CellID: {self.world.settings['cell_id']}")  # 14
        if account is not None:
            self.out(f"Got {1 + len(account['owns'])} licenses for account!")  # 15
        self.account = account
        return True

    def authenticate_with_password(self, username: str, password: str) -> str | None:
        """BeginAuthSessionViaCredentialsAsync + PollingWaitForResultAsync (SteamKit)."""
        account = self.world.account(username)
        if account is None or account["password"] != password:
            self.auth_failed("Authentication failed with result InvalidPassword.")  # not asked again (§3)
            return None
        if account["login_result"] != "OK":
            self.auth_failed(f"Authentication failed with result {account['login_result']}.")
            return None
        name, guard = account["username"], account["guard"]
        if guard == "email" and self.store.get("GuardData", name):
            guard = None  # the guard data of an earlier email-code login spares the code (§5.2)
        if guard == "mobile" and not self.no_mobile:
            confirmed = self.confirm_on_phone(account)
        elif guard in ("mobile", "authenticator"):
            confirmed = self.ask_code(account, DEVICE_CODE_PROMPT)
        elif guard == "email":
            confirmed = self.ask_code(account, EMAIL_CODE_PROMPT.format(hint=account["email_hint"]))
        else:
            confirmed = True
        if not confirmed:
            return None
        self.remember_login(name, new_guard_data=guard == "email")
        return str(name)

    def remember_login(self, name: str, new_guard_data: bool) -> None:
        """Every successful authentication stores the token, with or without -remember-password (§5.2)."""
        self.store.put("LoginTokens", name, make_token(name, self.remember))
        self.store.put("GuardData", name, secrets.token_hex(32) if new_guard_data else None)
        self.store.save()
        self.fresh_token = True

    def ask_code(self, account: dict[str, Any], prompt: str) -> bool:
        """ConsoleAuthenticator: prompt on stderr, an empty line asks again, wrong codes loop forever."""
        incorrect = False
        while True:
            if incorrect:
                self.err(WRONG_CODE)
            code: str | None = ""
            while code == "":
                self.err(prompt, end="")
                line = self.console.read_line()
                code = None if line is None else line.strip()
            if code is None:
                self.auth_failed("No code was provided by the authenticator.")
                return False
            if code == account["guard_code"]:
                return True
            incorrect = True

    def confirm_on_phone(self, account: dict[str, Any]) -> bool:
        self.err(PHONE_CONFIRMATION)
        name = account["username"]
        outcome = self.wait_for({f"approve-{name}": "approve", f"deny-{name}": "deny"})
        if outcome is not None and outcome[0] == "approve":
            return True
        self.auth_failed(
            f"Failed to poll status with result {'Expired' if outcome is None else 'AccessDenied'}."
        )
        return False

    def authenticate_with_qr(self) -> str | None:
        self.out("Logging in with QR code...")  # 10
        self.show_qr(0)
        refresh = self.world.settings["qr_refresh"]
        shown = {"count": 0}
        shown_at = {"at": time.monotonic()}

        def refresh_qr() -> None:
            if refresh and time.monotonic() - shown_at["at"] >= refresh * self.world.settings["time_scale"]:
                shown["count"] += 1
                shown_at["at"] = time.monotonic()
                self.out()
                self.out("The QR code has changed:")  # 10
                self.show_qr(shown["count"])

        outcome = self.wait_for({"scan-qr": "scan"}, refresh_qr)
        if outcome is None:
            self.auth_failed("Failed to poll status with result Expired.")
            return None
        account = self.world.account(outcome[1].strip())
        name = account["username"] if account else outcome[1].strip()
        guard_data = bool(self.world.settings["qr_new_guard_data"])
        if guard_data:
            self.out(
                f"Success! Next time you can login with -username {name} -remember-password instead of -qr."
            )  # 11
        self.remember_login(name, new_guard_data=guard_data)
        return name

    def show_qr(self, index: int) -> None:
        self.out("Use the Steam Mobile App to sign in with this QR code:")  # 10
        for row in qr_rows(self.world.settings["qr_seed"], index):
            self.out(row)

    def wait_for(
        self, files: dict[str, str], tick: Callable[[], None] | None = None
    ) -> tuple[str, str] | None:
        """Poll the world directory until one of `files` appears, and consume it (one tap, one
        login): (its meaning, its content); None when the auth session expires first."""
        timeout = self.world.settings["auth_timeout"]
        deadline = None if timeout is None else time.monotonic() + timeout * self.world.settings["time_scale"]
        while deadline is None or time.monotonic() < deadline:
            for file_name, meaning in files.items():
                path = self.world.dir / file_name if self.world.dir is not None else None
                try:
                    content = path.read_text("utf-8") if path is not None else None
                    if path is not None:
                        path.unlink()
                except FileNotFoundError:
                    continue
                if content is not None:
                    return meaning, content
            if tick is not None:
                tick()
            time.sleep(0.02)
        return None

    # -- ContentDownloader ----------------------------------------------------------------------

    def download_pubfile(self, app: int, pubfile: int) -> None:
        """DownloadPubfileAsync (3.4.0): PublishedFile.GetDetails, then the workshop depot."""
        if self.behaviour.get("file_details_access_denied"):
            message = f"EResult 15 (AccessDenied) while retrieving file details for pubfile {pubfile}."
            at = (
                "   at DepotDownloader.Steam3Session.GetPublishedFileDetails(UInt32 appId, PublishedFileID f)"
            )
            raise Unhandled("System.Exception", message, [at, *AT_DOWNLOAD[2:]])
        if self.item is None or self.item["app_id"] != app or self.behaviour.get("missing"):
            self.out(f"Unable to locate manifest ID for published file {pubfile}")  # §4.1, exit 0
            return
        if self.behaviour.get("unsupported_type"):  # as HEAD builds print it (§1.4)
            kind = self.behaviour["unsupported_type"]
            self.out(f"Published file {pubfile} has unsupported file type {kind}. Skipping file")
            return
        config_path = self.check_app(app)
        manifest = build_manifest(pubfile, self.item)
        depot = manifest["depot"]
        install_dir = None
        if self.behaviour.get("zero_depots"):
            self.out(f"Depot {depot} is not available from this account.")  # 20
        else:
            denied = self.behaviour.get("depot_key_denied")
            result = (denied if isinstance(denied, str) else "AccessDenied") if denied else "OK"
            self.out(f"Got depot key for {depot} result: {result}")  # 21
            if result != "OK":
                self.out(f"No valid depot key for {depot}, unable to download.")  # 22
            else:
                install_dir = self.create_directories(depot)
        self.out()  # 23
        try:
            self.download_depot(app, config_path, install_dir, manifest)
        except Canceled:
            self.out(f"App {app} was not completely downloaded.")
            raise

    def check_app(self, app: int) -> str:
        """DownloadAppAsync up to the license check; returns the folder of depot.config."""
        config_path = self.install_directory or DEFAULT_DOWNLOAD_DIR
        try:
            Path(config_path, CONFIG_DIR).mkdir(parents=True, exist_ok=True)
        except PermissionError:
            message = f"Access to the path '{os.path.abspath(Path(config_path, CONFIG_DIR))}' is denied."
            raise Unhandled("System.UnauthorizedAccessException", message, AT_DOWNLOAD[1:]) from None
        self.out(f"Got AppInfo for {app}")  # 17
        if self.behaviour.get("garbage"):
            self.console.raw(GARBAGE)
        self.debug_noise(int(self.behaviour.get("huge_output") or 0))
        if self.account is None or app not in self.account["owns"]:
            raise ContentDownloaderError(
                f"App {app} ({APP_NAMES.get(app, '')}) is not available from this account."
            )
        return config_path

    def create_directories(self, depot: int) -> str | None:
        install_dir = (
            self.install_directory or f"{DEFAULT_DOWNLOAD_DIR}/{depot}/{self.world.settings['app_build_id']}"
        )
        try:
            Path(install_dir, STAGING_DIR).mkdir(parents=True, exist_ok=True)
        except OSError:
            self.out("Error: Unable to create install directories!")
            return None
        return install_dir

    def download_depot(
        self, app: int, config_path: str, install_dir: str | None, manifest: dict[str, Any]
    ) -> None:
        """DownloadSteam3Async for the one workshop depot (or none, when it was refused)."""
        totals = {"compressed": 0, "uncompressed": 0}
        if install_dir is not None:
            files = self.process_depot(app, config_path, install_dir, manifest)
            if files is not None:
                self.download_depot_files(config_path, install_dir, manifest, files, totals)
        depots = 0 if install_dir is None else 1
        self.out(
            f"Total downloaded: {totals['compressed']} bytes ({totals['uncompressed']} bytes uncompressed)"
            f" from {depots} depots"
        )  # 38

    def process_depot(self, app: int, config_path: str, install_dir: str, manifest: dict[str, Any]) -> Any:
        """ProcessDepotManifestAndFiles: the manifest (cached or fetched), then the file list."""
        depot, manifest_id = manifest["depot"], manifest["id"]
        self.out(f"Processing depot {depot}")  # 24
        config_dir = Path(install_dir, CONFIG_DIR)
        installed = read_depot_config(config_path)
        last = installed.get(str(depot), 0)
        write_depot_config(
            config_path, {**installed, str(depot): 0}
        )  # an early exit forces validation (§4.4)
        self.old_manifest = (
            self.load_manifest(config_dir, depot, last, warn=last != manifest_id) if last else None
        )
        cached = self.old_manifest if last == manifest_id else None
        if cached is not None or self.load_manifest(config_dir, depot, manifest_id, warn=True) is not None:
            self.out(f"Already have manifest {manifest_id} for depot {depot}.")  # 25
        else:
            self.out(f"Downloading depot {depot} manifest")  # 27
            code = manifest["request_code"]
            self.out(
                f"Got manifest request code for depot {depot} from app {app}, manifest {manifest_id}, "
                f"result: {code}"
            )  # 28
            self.hang("manifest")
            if self.behaviour.get("manifest_401"):
                self.out(f"Encountered 401 for depot manifest {depot} {manifest_id}. Aborting.")
                self.out(f"\nUnable to download manifest {manifest_id} for depot {depot}")
                raise Canceled()
            save_manifest(config_dir, manifest)
        created = time.strftime("%m/%d/%Y %H:%M:%S", time.gmtime(manifest["created"]))  # invariant culture
        self.out(f"Manifest {manifest_id} ({created})")  # 31
        if self.manifest_only:
            dump_manifest(install_dir, manifest, created)
            return None
        files = [f for f in manifest["files"] if self.included(f["name"])]
        for f in files:  # "some manifests don't explicitly include all necessary directories"
            Path(install_dir, f["name"]).parent.mkdir(parents=True, exist_ok=True)
        return files

    def load_manifest(self, config_dir: Path, depot: int, manifest_id: int, warn: bool) -> Any:
        """Util.LoadManifestFromFile: a cached manifest is used only if its .sha matches (#26)."""
        path = config_dir / f"{depot}_{manifest_id}.manifest"
        if not path.exists():
            return None
        data = path.read_bytes()
        sha = path.with_name(path.name + ".sha")
        if sha.exists() and sha.read_bytes() == hashlib.sha1(data).digest():  # noqa: S324
            return json.loads(data)
        if warn:
            self.out(f"Manifest {manifest_id} on disk did not match the expected checksum.")  # 26
        return None

    def included(self, name: str) -> bool:
        if self.file_filter is None:
            return True
        names, patterns = self.file_filter
        return name.lower() in names or any(pattern.search(name) for pattern in patterns)

    def download_depot_files(
        self,
        config_path: str,
        install_dir: str,
        manifest: dict[str, Any],
        files: list[Any],
        totals: dict[str, int],
    ) -> None:
        """DownloadSteam3AsyncDepotFiles, one file at a time: prepare every file (pre-allocate or
        validate), then fetch the chunks still needed, one percentage line per completed file."""
        depot, behaviour = manifest["depot"], self.behaviour
        self.out(f"Downloading depot {depot}")  # 32
        if self.max_downloads == 0 or self.max_downloads < -1:  # ParallelOptions refuses it
            message = "Specified argument was out of the range of valid values."
            message += " (Parameter 'MaxDegreeOfParallelism')"
            raise Unhandled("System.ArgumentOutOfRangeException", message, AT_DOWNLOAD)
        total, done = sum(f["size"] for f in files), 0
        old_files = {f["name"]: f for f in (self.old_manifest or {}).get("files", [])}
        largest = max(files, key=lambda f: f["size"])["name"] if files else None
        disk_full = behaviour.get("disk_full")
        self.full_file = disk_full if isinstance(disk_full, str) else largest if disk_full else None
        pending = []
        for f in files:
            path = combine(install_dir, f["name"])
            Path(install_dir, STAGING_DIR, f["name"]).unlink(missing_ok=True)  # left by an earlier run
            if not os.path.exists(path):
                self.out(f"Pre-allocating {path}")  # 33
                with open(path, "wb") as handle:
                    self.allocate(path, f)
                    handle.truncate(f["size"])  # full size, zero-filled
                needed = list(f["chunks"])
            else:
                needed = self.needed_chunks(path, f, old_files.get(f["name"]))
                done += f["size"] - sum(c["length"] for c in needed)
                if not needed:
                    self.out(f"{percent(done, total)}% {path}")  # 35, already complete
                    continue
            pending.append((f, path, needed))
        self.hang("preallocate")
        if self.world.settings["bytes_per_second"]:  # fetched in parallel: small files complete first
            pending.sort(key=lambda entry: entry[0]["size"])
        if behaviour.get("chunk_errors"):  # the stuck file comes last, so the others complete
            pending.sort(key=lambda entry: entry[0]["name"] == largest)
        fetched = {"compressed": 0, "uncompressed": 0}
        for number, (f, path, needed) in enumerate(pending):
            if behaviour.get("chunk_errors") and f["name"] == largest:
                self.retry_chunk_forever(needed[0]["id"])
            if behaviour.get("crash") and number == len(pending) // 2:
                raise self.crash_exception(path)
            self.world.sleep(float(behaviour.get("file_delay") or 0))
            data = file_bytes(self.pubfile, f["name"], (self.item or {})["files"][f["name"]])
            speed = self.world.settings["bytes_per_second"]
            with open(path, "r+b") as handle:
                for chunk in needed:
                    if speed:
                        self.world.sleep(chunk["compressed"] / speed)
                    handle.seek(chunk["offset"])
                    handle.write(data[chunk["offset"] : chunk["offset"] + chunk["length"]])
                    done += chunk["length"]
                    for counter in (totals, fetched):
                        counter["compressed"] += chunk["compressed"]
                        counter["uncompressed"] += chunk["length"]
            self.out(f"{percent(done, total)}% {path}")  # 35
            if behaviour.get("garbage"):
                self.console.raw(GARBAGE)
            if number + 1 == max(1, len(pending) // 2):
                self.hang("progress")
        for name in sorted(set(old_files) - {f["name"] for f in manifest["files"]}):
            path = combine(install_dir, name)
            if os.path.isfile(path):
                os.remove(path)
                self.out(f"Deleted {path}")  # 36
        write_depot_config(config_path, {**read_depot_config(config_path), str(depot): manifest["id"]})
        self.out(
            f"Depot {depot} - Downloaded {fetched['compressed']} bytes"
            f" ({fetched['uncompressed']} bytes uncompressed)"
        )  # 37

    def needed_chunks(self, path: str, f: dict[str, Any], old: dict[str, Any] | None) -> list[Any]:
        """The chunks of an existing file that must be fetched (ContentDownloader.cs:1070-1190)."""
        if old is not None:
            unchanged = old["sha1"] == f["sha1"]
            if unchanged and not self.verify:
                return []  # trusted without a look (§5.1)
            if self.verify:
                self.out(f"Validating {path}")  # 34
            current = Path(path).read_bytes()
            old_chunks = {c["id"]: c for c in old["chunks"]}
            rebuilt, needed = bytearray(f["size"]), []
            for chunk in f["chunks"]:
                match = old_chunks.get(chunk["id"])
                data = current[match["offset"] : match["offset"] + match["length"]] if match else b""
                if match and sha1(data) == chunk["id"]:
                    rebuilt[chunk["offset"] : chunk["offset"] + chunk["length"]] = data
                else:
                    needed.append(chunk)
            if not unchanged or needed:
                Path(path).write_bytes(rebuilt)
            return needed
        if os.path.getsize(path) != f["size"]:  # no manifest to trust: validate what is there
            self.allocate(path, f)
            os.truncate(path, f["size"])
        self.out(f"Validating {path}")  # 34
        current = Path(path).read_bytes()
        return [c for c in f["chunks"] if sha1(current[c["offset"] : c["offset"] + c["length"]]) != c["id"]]

    def allocate(self, path: str, f: dict[str, Any]) -> None:
        """FileStream.SetLength to the full size: where a full disk shows (disk_full)."""
        if f["name"] == self.full_file:
            message = f"No space left on device : '{path}'"
            raise ContentDownloaderError(f"Failed to allocate file {path}: {message}")

    def retry_chunk_forever(self, chunk_id: str) -> NoReturn:
        """The chunk loop retries 404s and timeouts forever (§4.5): only a kill ends it."""
        while True:
            self.out(f"Encountered error downloading chunk {chunk_id}: NotFound")
            self.world.sleep(1)
            self.out(f"Connection timeout downloading chunk {chunk_id}")
            self.world.sleep(1)

    def crash_exception(self, path: str) -> Unhandled:
        crash = self.behaviour["crash"]
        kind, _, message = crash.partition(": ") if isinstance(crash, str) else ("", "", "")
        if not message:
            kind, message = "System.IO.IOException", f"Input/output error : '{path}'"
        at_write = (
            "   at Microsoft.Win32.SafeHandles.SafeFileHandle.WriteAtOffset(SafeFileHandle handle, ...)"
        )
        at_chunk = "   at DepotDownloader.ContentDownloader.DownloadSteam3AsyncDepotFileChunk(...)"
        return Unhandled(kind, message, [at_write, at_chunk, *AT_DOWNLOAD])

    def debug_noise(self, lines: int) -> None:
        """`-debug`-style lines: SteamKit `[Category] message` and .NET HTTP event traces (§1.2)."""
        batch: list[str] = []
        for n in range(lines):
            if n % 2:
                stamp = time.strftime("%H:%M:%S", time.gmtime()) + f".{n % 10_000_000:07d}"
                path = f"/depot/{WALLPAPER_ENGINE}/chunk/{sha1(str(n).encode())}"
                batch.append(
                    f"{stamp}  System.Net.Http.RequestStart(scheme: https, "
                    f"host: cache{n % 8}-fra1.steamcontent.com, port: 443, pathAndQuery: {path}, "
                    "versionMajor: 1, versionMinor: 1)"
                )
            else:
                batch.append(f"[CMClient] <- Recv'd EMsg: ServiceMethodResponse (147) (Proto: True), job {n}")
            if len(batch) == 500 or n == lines - 1:
                self.console.raw(("\n".join(batch) + "\n").encode())
                batch = []

    def download_whole_app(self, app: int) -> None:
        """Without -pubfile the tool downloads the app itself (gigabytes): simulated as a download
        that never ends, so a test notices the mistake."""
        self.log.branch = "app"
        self.check_app(app)
        self.out(f"Got depot key for {app + 1} result: OK")
        self.out()
        self.out(f"Processing depot {app + 1}")
        self.out(f"Downloading depot {app + 1} manifest")
        while True:
            time.sleep(60)


def combine(directory: str, name: str) -> str:
    """Path.Combine: the install dir as given (a relative one stays relative) + the manifest name."""
    return directory + name if directory.endswith("/") else f"{directory}/{name}"


def read_depot_config(config_path: str) -> dict[str, int]:
    """depot.config: depot id -> installed manifest id, 0 = unknown. Deflated protobuf for real; JSON here."""
    try:
        data = json.loads(Path(config_path, CONFIG_DIR, "depot.config").read_text("utf-8"))
        return {str(depot): int(manifest) for depot, manifest in data["InstalledManifestIDs"].items()}
    except (OSError, ValueError, KeyError, AttributeError):
        return {}


def write_depot_config(config_path: str, installed: dict[str, int]) -> None:
    data = json.dumps({"InstalledManifestIDs": installed})
    Path(config_path, CONFIG_DIR, "depot.config").write_text(data, "utf-8")


def save_manifest(config_dir: Path, manifest: dict[str, Any]) -> None:
    """<depot>_<manifest>.manifest and its .sha (Util.cs:193-206)."""
    path = config_dir / f"{manifest['depot']}_{manifest['id']}.manifest"
    data = json.dumps(manifest).encode()
    path.write_bytes(data)
    path.with_name(path.name + ".sha").write_bytes(hashlib.sha1(data).digest())  # noqa: S324


def dump_manifest(install_dir: str, manifest: dict[str, Any], created: str) -> None:
    """-manifest-only: manifest_<depot>_<manifest>.txt (ContentDownloader.cs:1399-1431)."""
    files = manifest["files"]
    lines = [
        f"Content Manifest for Depot {manifest['depot']} ",
        "",
        f"Manifest ID / date     : {manifest['id']} / {created} ",
        f"Total number of files  : {len(files)} ",
        f"Total number of chunks : {len({c['id'] for f in files for c in f['chunks']})} ",
        f"Total bytes on disk    : {sum(f['size'] for f in files)} ",
        f"Total bytes compressed : {sum(c['compressed'] for f in files for c in f['chunks'])} ",
        "",
        "",
        "          Size Chunks File SHA                                 Flags Name",
        *(f"{f['size']:>14} {len(f['chunks']):>6} {f['sha1']} {0:>5x} {f['name']}" for f in files),
    ]
    Path(install_dir, f"manifest_{manifest['depot']}_{manifest['id']}.txt").write_text(
        "\n".join(lines) + "\n"
    )


def die_by_abort(log: RunLog) -> NoReturn:
    """How a .NET crash ends on Linux: SIGABRT (no core file is left behind)."""
    log.end(-int(signal.SIGABRT))
    try:
        import ctypes
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: not even a piped core handler
    except (ImportError, OSError, ValueError, AttributeError):
        pass
    signal.signal(signal.SIGABRT, signal.SIG_DFL)
    os.abort()


def main(argv: list[str]) -> int:
    logs: list[RunLog] = []

    def on_sigterm(signum: int, frame: Any) -> None:  # .NET 9 exits 143, without any cleanup (§4.4)
        for log in logs:
            log.end(143)
        os._exit(143)

    def on_sigint(signum: int, frame: Any) -> None:  # the tool has no handler: killed by the signal
        for log in logs:
            log.end(-int(signal.SIGINT))
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, on_sigint)
    world_file = os.environ.get(WORLD_ENV)
    world = World(Path(world_file) if world_file else None)
    log = RunLog(world, argv)
    logs.append(log)
    tool = DepotDownloader(world, argv, log)
    try:
        code = tool.run()
    except Unhandled as error:
        tool.crash(error)
    log.end(code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
