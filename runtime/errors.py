"""One exception type for every user-facing failure, so CLIs can print one line and exit 1, and
the backstop that turns any other failure into one line too."""

import contextlib
import functools
import reprlib
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any


class LofiError(Exception):
    """A problem with the user's input (file, config, bundle), not a bug in the toolkit."""


SHOWN_CHARS = 60
# Containers are shown a few items deep and strings a prefix long, so quoting a value never builds
# the repr of a whole megabyte document first.
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxset = 3, 4, 4, 4, 4
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = 4 * SHOWN_CHARS


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """A value as an error line may quote it: repr-escaped (no raw control bytes or newlines)
    and cut to a short prefix, so a megabyte string or a terminal escape never reaches stderr."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<integer of about {int(value.bit_length() * 0.30103)} digits>"
    try:
        text = repr(value[: 4 * limit]) if isinstance(value, str) else _SHORT.repr(value)
    except ValueError:  # an integer too long for str() inside a container
        text = f"<{type(value).__name__} holding an integer too long to show>"
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    if len(text) > limit:
        return text[:limit] + "..."
    return text


INTERNAL_ERROR = 3  # exit status of a failure the toolkit did not foresee (a bug)

_SUBJECT = "_lofi_working_on"  # attribute an exception carries out of working_on


@contextlib.contextmanager
def working_on(subject: str) -> Iterator[None]:
    """Name what the command is working on (a file, a source, a video), so that an unforeseen
    failure inside is reported against it rather than as a bare exception. The innermost
    subject travels with the exception."""
    try:
        yield
    except Exception as exc:
        if not hasattr(exc, _SUBJECT):
            with contextlib.suppress(AttributeError, TypeError):
                setattr(exc, _SUBJECT, subject)
        raise


def _command_name() -> str:
    import click

    ctx = click.get_current_context(silent=True)
    return ctx.command_path if ctx is not None else "lofi"


def _backstop(exc: BaseException, debug: bool) -> None:
    """The last line of defence: one line naming the command, what it was working on and the
    exception, exit status INTERNAL_ERROR; the traceback only with --debug."""
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    subject = getattr(exc, _SUBJECT, None)
    subject = f" while working on {subject}" if subject else ""
    kind = "out of memory" if isinstance(exc, MemoryError) else "internal error"
    hint = "" if debug else " (a bug: run again with --debug for the traceback)"
    print(
        f"error: {_command_name()}: {kind}{subject}: {type(exc).__name__}: {shown(str(exc))}{hint}",
        file=sys.stderr,
    )
    sys.exit(INTERNAL_ERROR)


def cli_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn LofiError (and a file the system refuses: missing, a folder, no permission, a full
    disk) into a one-line message and exit status 1, Ctrl-C into one line and status 130, and
    anything else into one line and status INTERNAL_ERROR (the traceback with `--debug`, an
    option this adds to the command)."""
    import click

    @functools.wraps(fn)
    def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LofiError as exc:
            if debug:
                traceback.print_exception(exc, file=sys.stderr)
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(1)
        except OSError as exc:
            if debug:
                traceback.print_exception(exc, file=sys.stderr)
            reason = exc.strerror or str(exc) or type(exc).__name__
            name = f": {shown(str(exc.filename))}" if exc.filename is not None else ""
            subject = getattr(exc, _SUBJECT, None)
            subject = f" (working on {subject})" if subject else ""
            print(f"error: {_command_name()}: {reason}{name}{subject}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            sys.exit(130)
        except click.ClickException:
            raise  # click's own one-line usage errors (status 2)
        except Exception as exc:  # the backstop: nothing unforeseen leaves as a traceback
            _backstop(exc, debug)

    return click.option(
        "--debug",
        is_flag=True,
        help="Show the Python traceback of a failure (for a bug report).",
    )(wrapper)
