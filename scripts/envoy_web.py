"""Envoy routes that serve the web console's built files (web/dist) on the API's own origin.

Envoy answers them itself with direct responses read from the files when it loads its config: no
static-file server to run, secure and health-check, and nothing of the console reaches a WallWhale
server. The build is small (one hashed script, one hashed style sheet, index.html), so every file
is one route (three for the compressed ones: Brotli, gzip, plain, chosen by Accept-Encoding; the
.br/.gz files are made at build time by web/scripts/compress.mjs). A new build needs Envoy's
config rendered again, which scripts/run.sh does on every start.

  - /assets/<name>-<hash>.<ext>: cached for a year, immutable (a new build has new names).
  - any other GET (or HEAD) outside /v1/ (/, /history, /admin/users, ...): index.html, never cached, so a
    deep link or a reload opens the app at that page.
  - the app page and the assets: a Content-Security-Policy that allows only the console's own
    scripts, styles and API calls (no inline script or style). The headers every response gets
    (nosniff, no referrer, no framing) come from Envoy's header_mutation filter.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping
from pathlib import Path

from envoy_static import INDENT, file_route, not_found_route

# Images: the item previews come from Steam's CDN (any https host), the QR code is a data: SVG.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data: https:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
IMMUTABLE = "public, max-age=31536000, immutable"
NO_CACHE = "no-cache"
TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
}
ENCODINGS = (("br", ".br"), ("gzip", ".gz"))


def _content_type(path: Path) -> str:
    return TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _route(match: Mapping[str, object], file: Path, headers: dict[str, str]) -> str:
    return file_route(match, file, {**headers, "content-security-policy": CSP})


def _asset_routes(file: Path, path: str) -> list[str]:
    base = {"content-type": _content_type(file), "cache-control": IMMUTABLE}
    routes = []
    for encoding, suffix in ENCODINGS:
        packed = file.with_name(file.name + suffix)
        if packed.exists():
            accepts = {"name": "accept-encoding", "string_match": {"contains": encoding}}
            routes.append(
                _route(
                    {"path": path, "headers": [accepts]},
                    packed,
                    {**base, "content-encoding": encoding, "vary": "accept-encoding"},
                )
            )
    routes.append(_route({"path": path}, file, {**base, "vary": "accept-encoding"}))
    return routes


def web_routes(web_dir: Path | None) -> str:
    """The routes for the built console in `web_dir` (index.html and assets/), or "" for none."""
    if web_dir is None:
        return ""
    index = web_dir / "index.html"
    if not index.is_file():
        raise SystemExit(f"{index} is missing: build the console first (npm --prefix web run build)")
    routes = [f"{INDENT}# The web console (scripts/envoy_web.py), built into {web_dir.name}/."]
    assets = web_dir / "assets"
    for file in sorted(assets.iterdir()) if assets.is_dir() else []:
        if file.is_file() and file.suffix not in (".br", ".gz"):
            routes += _asset_routes(file, f"/assets/{file.name}")
    # An asset of another build (a page open across a deploy): 404, not index.html as a script.
    routes.append(not_found_route({"prefix": "/assets/"}, "no such file"))
    app_page = {
        "prefix": "/",
        "headers": [
            {"name": ":method", "string_match": {"safe_regex": {"regex": "GET|HEAD"}}},
            {"name": ":path", "string_match": {"prefix": "/v1/"}, "invert_match": True},
        ],
    }
    routes.append(_route(app_page, index, {"content-type": TYPES[".html"], "cache-control": NO_CACHE}))
    return "\n".join(routes) + "\n"
