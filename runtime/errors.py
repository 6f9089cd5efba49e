"""One exception type for every user-facing failure, so CLIs can print one line and exit 1."""

import functools
import sys
from collections.abc import Callable
from typing import Any


class LofiError(Exception):
    """A problem with the user's input (file, config, bundle), not a bug in the toolkit."""


SHOWN_CHARS = 60


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """A value as an error line may quote it: repr-escaped (no raw control bytes or newlines)
    and cut to a short prefix, so a megabyte string or a terminal escape never reaches stderr."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<integer of about {int(value.bit_length() * 0.30103)} digits>"
    try:
        text = repr(value)
    except ValueError:  # an integer too long for str() inside a container
        text = f"<{type(value).__name__} holding an integer too long to show>"
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    if len(text) > limit:
        return text[:limit] + f"... ({len(text)} characters)"
    return text


def cli_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn LofiError (and missing files) into a one-line message and exit status 1, and Ctrl-C
    into one line and status 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LofiError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(1)
        except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            print(f"error: {exc.strerror}: {exc.filename}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper
