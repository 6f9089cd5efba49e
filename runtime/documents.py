"""The one JSON reader for every document the toolkit loads (annotations, results, manifests,
parity records, cache indexes): bounded size and depth, integers of sane length, and a key given
twice refused instead of the last one silently winning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lofi.runtime.errors import LofiError, shown

MAX_DEPTH = 64
MAX_INT_DIGITS = 30
MAX_DOCUMENT_BYTES = 512 * 1024**2


class _Refused(Exception):
    """Raised inside the JSON parser's hooks; turned into a LofiError naming the file."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"key {shown(key)} is given twice")
        out[key] = value
    return out


def _integer(text: str) -> int:
    digits = text.lstrip("-")
    if len(digits) > MAX_INT_DIGITS:
        raise _Refused(f"an integer of {len(digits)} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _too_deep(value: Any, limit: int) -> bool:
    """Iterative, so checking depth cannot itself overflow the stack."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def parse_json(text: str, where: str, max_depth: int = MAX_DEPTH) -> Any:
    """JSON text -> Python values, or one LofiError line starting with `where`."""
    try:
        data = json.loads(text, object_pairs_hook=_pairs, parse_int=_integer)
    except _Refused as exc:
        raise LofiError(f"{where}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise LofiError(f"{where} is not valid JSON: {exc}") from None
    except RecursionError:
        data = None
        too_deep = True
    else:
        too_deep = _too_deep(data, max_depth)
    if too_deep:
        raise LofiError(f"{where} is nested too deeply (more than {max_depth} levels)")
    return data


def read_text(path: str | Path, what: str, max_bytes: int, not_utf8_hint: str = "") -> str:
    """A document's text: missing, larger than `max_bytes` or not UTF-8 is one line naming the
    file (`not_utf8_hint` ends the last). Reads at most one byte past the limit, so a huge file
    costs nothing."""
    path = Path(path)
    if not path.is_file():
        raise LofiError(f"{what} not found: {path}")
    with path.open("rb") as f:
        raw = f.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise LofiError(f"{what} {path} is larger than {max_bytes} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LofiError(
            f"{what} {path} is not UTF-8 text (byte {exc.start}){not_utf8_hint}"
        ) from None


def read_json(
    path: str | Path,
    what: str,
    max_bytes: int = MAX_DOCUMENT_BYTES,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """Read a JSON document from a file: missing, too large, not UTF-8 or not JSON is one line
    naming the file. Returns the parsed value (callers check its shape and fields)."""
    text = read_text(path, what, max_bytes)
    return parse_json(text, f"{what} {path}", max_depth)
