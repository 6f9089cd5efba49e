"""Optimisation-profile shapes of a bundle's engines: the manifest's defaults, overridden by
`--trt-shapes batch=MIN:OPT:MAX,length=MIN:OPT:MAX`.

`batch` is the encoder's snippets per call (and the G-TAD head's videos per call); `length` is
the pyramid head's sequence length in snippets (a multiple of its largest stride). An engine
refuses inputs outside its profile, so the defaults cover what the runtime feeds."""

from __future__ import annotations

from dataclasses import dataclass

from lofi.runtime.errors import LofiError, shown

Range = tuple[int, int, int]
# snippets per call or in a sequence: beyond any video an engine is built for
MAX_PROFILE = 100_000


@dataclass(frozen=True)
class Profiles:
    batch: Range = (1, 16, 64)
    length: Range | None = None  # pyramid head only; None: from the head's window

    @classmethod
    def parse(cls, text: str | None) -> Profiles:
        if not text:
            return cls()
        values: dict[str, Range] = {}
        for part in text.split(","):
            key, _, spec = part.partition("=")
            key = key.strip()
            nums = spec.split(":")
            if key not in ("batch", "length") or len(nums) != 3:
                raise LofiError(
                    f"--trt-shapes: {part!r} is not batch=MIN:OPT:MAX or length=MIN:OPT:MAX"
                )
            try:
                lo, opt, hi = (int(n) for n in nums)
            except ValueError:
                raise LofiError(f"--trt-shapes: {part!r} needs whole numbers") from None
            if not 1 <= lo <= opt <= hi <= MAX_PROFILE:
                raise LofiError(
                    f"--trt-shapes: {key} needs 1 <= MIN <= OPT <= MAX <= {MAX_PROFILE}, "
                    f"not {shown(spec)}"
                )
            values[key] = (lo, opt, hi)
        return cls(**values)


def encoder_shapes(p: Profiles, k: int, h: int, w: int) -> tuple[tuple[int, ...], ...]:
    return tuple((n, k, h, w, 3) for n in p.batch)


def pyramid_head_shapes(
    p: Profiles, dim: int, max_stride: int, span: int
) -> tuple[tuple[int, ...], ...]:
    """Default: one top-level block to 64 head windows (window + both contexts)."""
    length = p.length or (max_stride, span, 64 * span)
    bad = [n for n in length if n % max_stride]
    if bad:
        raise LofiError(
            f"--trt-shapes: length {bad[0]} is not a multiple of the head's largest stride "
            f"{max_stride}"
        )
    return tuple((1, dim, n) for n in length)


def gtad_head_shapes(p: Profiles, dim: int, length: int) -> tuple[tuple[int, ...], ...]:
    """G-TAD's length is fixed by the model; the runtime feeds one video per call."""
    if p.length is not None:
        raise LofiError(f"--trt-shapes: a G-TAD head's length is fixed at {length}; drop length=")
    return tuple((n, dim, length) for n in (1, 1, min(p.batch[2], 8)))
