"""One exception type for every user-facing failure, so CLIs can print one line and exit 1."""

import functools
import sys
from collections.abc import Callable
from typing import Any


class LofiError(Exception):
    """A problem with the user's input (file, config, bundle), not a bug in the toolkit."""


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
