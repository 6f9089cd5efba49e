"""Paths built from data (video ids, file names in a manifest, ONNX external-data locations)
stay inside the folder they belong to: the one rule every reader and writer applies."""

from __future__ import annotations

from pathlib import Path

from lofi.runtime.errors import LofiError, shown

MAX_NAME_BYTES = 255


def file_name(name: object, what: str) -> str:
    """A single path component safe to create in any folder: a non-empty string, no separator,
    not `.` or `..`, no control character, valid Unicode, at most 255 bytes in UTF-8."""
    if not isinstance(name, str) or not name:
        raise LofiError(f"{what} must be a non-empty string, got {shown(name)}")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate: no file system can store it
        size = MAX_NAME_BYTES + 1
    bad = (
        "/" in name
        or "\\" in name
        or name in (".", "..")
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
        or size > MAX_NAME_BYTES
    )
    if bad:
        raise LofiError(
            f"{what} {shown(name)} cannot name a file: expected one path component without "
            f"'/', '\\', control characters or '..', at most {MAX_NAME_BYTES} bytes"
        )
    return name


def inside(folder: str | Path, name: object, what: str) -> Path:
    """`folder / name` for a relative name from data, refused in one line unless it resolves
    (symlinks followed) inside `folder`."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise LofiError(f"{what} must be a non-empty relative path, got {shown(name)}")
    root = Path(folder).resolve()
    candidate = Path(name)
    if candidate.is_absolute() or ".." in candidate.parts or "\\" in name:
        raise LofiError(f"{what} {shown(name)} points outside {folder}: expected a relative path")
    resolved = (root / candidate).resolve()
    if resolved != root and root not in resolved.parents:
        raise LofiError(f"{what} {shown(name)} resolves outside {folder}")
    return Path(folder) / candidate
