"""Text from clients that people read later: names shown in lists, the audit trail.

Control characters and the Unicode bidirectional controls can make a name or a log line display
as something else (a right-to-left override turns "exe.txt" around). Names that contain them are
refused; texts recorded as they came (audit details, a user agent) get them escaped instead.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from wallwhale.errors import FieldViolation, InvalidArgument

# Bidi embeddings, overrides and isolates, the directional marks, and the Arabic letter mark.
_BIDI = "\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c"
_UNSAFE = re.compile(f"[\\x00-\\x1f\\x7f-\\x9f{_BIDI}]")


def unsafe_characters(value: str) -> list[str]:
    """The unsafe characters of `value`, each as U+XXXX with its Unicode name when it has one."""
    return [
        f"U+{ord(c):04X}" + (f" ({unicodedata.name(c)})" if unicodedata.name(c, "") else "")
        for c in dict.fromkeys(_UNSAFE.findall(value))
    ]


def display_text_violations(value: str, field: str) -> list[FieldViolation]:
    found = unsafe_characters(value)
    if not found:
        return []
    return [
        FieldViolation(
            field, f"must not contain control or bidirectional-override characters: {', '.join(found)}"
        )
    ]


def check_display_text(value: str, field: str) -> None:
    violations = display_text_violations(value, field)
    if violations:
        raise InvalidArgument(violations)


def escaped(value: Any) -> Any:
    """`value` with unsafe characters in its strings written as \\uXXXX (dicts and lists walked)."""
    if isinstance(value, str):
        return _UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", value)
    if isinstance(value, dict):
        return {escaped(k): escaped(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [escaped(item) for item in value]
    return value
