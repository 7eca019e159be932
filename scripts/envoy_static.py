"""Routes Envoy answers itself with a file: a direct response read when Envoy loads its config.

One builder for every file Envoy serves: the OpenAPI document and the docs page
(scripts/envoy_config.py) and the web console (scripts/envoy_web.py). Headers every response gets
(nosniff, no referrer, no framing, a default Content-Security-Policy, Cache-Control: no-store) come
from the header_mutation filter in envoy/envoy.template.yaml; a route only adds its own
content-type, caching and, for a page, its Content-Security-Policy, which then wins over the default.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

# The biggest file Envoy will hold, and the route table's max_direct_response_body_size_bytes
# (Envoy's default is 4 KiB).
MAX_FILE_BYTES = 4 * 1024 * 1024
# Not an RPC: the transcoder, which refuses paths it cannot map, stays out of these routes.
NO_TRANSCODER = {
    "envoy.filters.http.grpc_json_transcoder": {
        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
        "disabled": True,
    }
}
# Where the routes sit in the template's virtual host.
INDENT = " " * 14


def file_route(match: Mapping[str, object], file: Path, headers: dict[str, str]) -> str:
    """A route answering requests that fit `match` with `file` (status 200) and `headers`."""
    size = file.stat().st_size
    if size > MAX_FILE_BYTES:
        raise SystemExit(f"{file} is larger than {MAX_FILE_BYTES} bytes: Envoy would not serve it")
    route = {
        "match": match,
        "direct_response": {"status": 200, "body": {"filename": str(file.resolve())}},
        "typed_per_filter_config": NO_TRANSCODER,
        "response_headers_to_add": [
            {"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            for k, v in headers.items()
        ],
    }
    return f"{INDENT}- {json.dumps(route)}"


def not_found_route(match: Mapping[str, object], message: str) -> str:
    """A route answering requests that fit `match` with 404 and `message`."""
    route = {
        "match": match,
        "direct_response": {"status": 404, "body": {"inline_string": message}},
        "typed_per_filter_config": NO_TRANSCODER,
    }
    return f"{INDENT}- {json.dumps(route)}"
