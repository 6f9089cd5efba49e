"""The files a user names for a command to write (`--results`, `--stats`, `--json`, `--plot`,
an output folder): checked against the command's inputs and each other before any work starts,
and written whole or not at all.

Why: an output that names an input (the predictions given as `--json`, a hard link to the
ground truth, the bundle's own folder) destroys the input the moment the report is written; a
write cut short by a full disk leaves a file that looks complete; and one output that cannot be
written must not cost the others (an hour of streaming still leaves its results when only the
stats' folder is read-only)."""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from lofi.runtime.errors import LofiError, shown

PathLike = str | Path
PATH_CHARS = 300  # a path in an error line: the user's own, so longer than a value's preview


def named(path: PathLike) -> str:
    """A path as an error line quotes it: escaped, and cut only when absurdly long."""
    return shown(str(path), PATH_CHARS)


def _same(a: Path, b: Path) -> bool:
    """The same file: equal resolved paths (symlinks followed, also where neither exists yet),
    or one inode on one device (a hard link, a bind mount, another spelling)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist: no inode to share
        return False


def _within(path: Path, folder: Path) -> bool:
    root = folder.resolve()
    resolved = path.resolve()
    return resolved == root or root in resolved.parents


def _writable_place(option: str, path: Path) -> None:
    """Refuse what can be known before the work: an output that is a symlink or a folder, a
    parent that is a file, a folder the process may not write."""
    where = f"{option} {named(path)}"
    if path.is_symlink():
        raise LofiError(f"{where} is a symbolic link: name the file itself (it is not followed)")
    if path.is_dir():
        raise LofiError(f"{where} is a folder: expected a file name")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        if ancestor.is_symlink():  # a dangling link on the way: mkdir would fail there
            raise LofiError(f"{where}: its folder {named(ancestor)} is a broken link")
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise LofiError(f"{where}: {named(ancestor)} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise LofiError(f"{where}: the folder {named(ancestor)} is not writable")


def check_outputs(
    outputs: Mapping[str, PathLike | None],
    inputs: Iterable[tuple[str, PathLike]] = (),
    input_folders: Iterable[tuple[str, PathLike]] = (),
) -> dict[str, Path]:
    """Check the outputs a command was given (option -> path, None: not asked for) before it
    starts: none may be an input file (`inputs`: what, path), lie in a folder whose every file
    is an input (`input_folders`, e.g. a bundle), or be another output; each must be a file
    name in a folder this process can write. Returns the outputs given, as Paths."""
    given = {opt: Path(p) for opt, p in outputs.items() if p is not None and str(p) != ""}
    files = [(what, Path(p)) for what, p in inputs]
    folders = [(what, Path(p)) for what, p in input_folders]
    seen: list[tuple[str, Path]] = []
    for option, path in given.items():
        where = f"{option} {named(path)}"
        for what, src in files:
            if _same(path, src):
                raise LofiError(f"{where} is the {what} {named(src)}: it would be overwritten")
        for what, folder in folders:
            if _within(path, folder):
                raise LofiError(f"{where} is inside the {what} {named(folder)}: write it elsewhere")
        for other, earlier in seen:
            if _same(path, earlier):
                raise LofiError(f"{where} is also given as {other}: name two different files")
        seen.append((option, path))
        _writable_place(option, path)
    return given


def check_output_folder(
    option: str, folders: Iterable[PathLike], inputs: Iterable[tuple[str, PathLike | None]]
) -> None:
    """An output folder the command replaces or clears whole (`folders`: it and any working
    copy, e.g. OUT and OUT.partial): no input (what, path or None) may lie inside one, where
    the replacing would delete it."""
    for folder in map(Path, folders):
        for what, src in inputs:
            if src is not None and _within(Path(src), folder):
                raise LofiError(
                    f"{option} {named(folder)} holds the {what} {named(src)}, which "
                    "writing it would delete: name another folder"
                )


def write_output(path: PathLike, what: str, write: Callable[[Path], None]) -> None:
    """Write an output whole or not at all: `write(tmp)` fills a new file in the output's own
    folder, which is flushed to disk and renamed over `path` in one step. Any failure (a full
    disk, a read-only folder, a parent that is a file) removes the temporary file and is one
    LofiError line naming the output."""
    path = Path(path)
    if path.is_symlink():
        raise LofiError(f"cannot write {what} {named(path)}: it is a symbolic link")
    # the output's suffix last, so writers that go by it (matplotlib) pick the format
    tmp = path.parent / f".{path.stem[:40]}.{secrets.token_hex(4)}.partial{path.suffix[:16]}"
    created = False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        created = True
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)  # tmp is gone then: the unlink below finds nothing
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise LofiError(f"cannot write {what} {named(path)}: {reason}") from None
    finally:
        if created:
            tmp.unlink(missing_ok=True)


def write_text(path: PathLike, what: str, text: str) -> None:
    """`text` as the whole of `path` (UTF-8), atomically (see write_output)."""
    write_output(path, what, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: PathLike, what: str, data: Any) -> None:
    """`data` as an indented JSON document at `path`, atomically (see write_output)."""
    write_text(path, what, json.dumps(data, indent=1))


def write_each(writes: Iterable[tuple[str, PathLike | None, Callable[[Path], None]]]) -> int:
    """Write every output asked for (what, path or None, writer), each on its own: one that
    fails gets its `error:` line on stderr and the others are still written. Returns how many
    failed, for the exit status."""
    failed = 0
    for what, path, write in writes:
        if path is None:
            continue
        try:
            write_output(path, what, write)
        except LofiError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
    return failed


def json_writer(data: Any) -> Callable[[Path], None]:
    """A writer for write_each: `data` as indented JSON."""
    return lambda tmp: tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
