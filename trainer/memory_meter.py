"""Count the memory of a training step by watching every tensor an operator creates.

`MemoryMeter` is a TorchDispatchMode: each new storage is added to the live total when an op
returns it and removed when Python frees it (a weakref callback), so the peak is what a caching
allocator's `max_memory_allocated` would report, without the allocator's rounding. It works the
same on real tensors and under FakeTensorMode, which is how the planner sizes the paper's
shapes on a CPU without allocating them. Storages are put in kinds afterwards: gradients of the
parameters, autocast's low-precision copies of the weights, and activations (everything else).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

CAST_OPS = {torch.ops.aten._to_copy.default}


class MemoryMeter(TorchDispatchMode):
    def __init__(self, params: Iterable[torch.Tensor]):
        super().__init__()
        self.events: list[tuple[int, int]] = []  # (+/- bytes, storage number)
        self.casts: set[int] = set()
        self._live: dict[int, tuple[weakref.ref, int]] = {}  # id(storage) -> (ref, number)
        self._params = {id(p.untyped_storage()) for p in params}
        self._next = 0

    def number(self, t: torch.Tensor) -> int | None:
        """The storage number of a tensor created under the meter (None: older or a parameter)."""
        entry = self._live.get(id(t.untyped_storage()))
        return entry[1] if entry and entry[0]() is t.untyped_storage() else None

    def _track(self, t: torch.Tensor) -> int | None:
        s = t.untyped_storage()
        key = id(s)
        if key in self._params:
            return None
        entry = self._live.get(key)
        if entry and entry[0]() is s:
            return entry[1]
        num, size = self._next, s.nbytes()
        self._next += 1
        self.events.append((size, num))

        def free(_ref, key=key, size=size, num=num) -> None:
            self.events.append((-size, num))
            if self._live.get(key, (None, num))[1] == num:
                self._live.pop(key, None)

        self._live[key] = (weakref.ref(s, free), num)
        return num

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        from_param = func in CAST_OPS and any(
            isinstance(a, torch.Tensor) and id(a.untyped_storage()) in self._params
            for a in tree_flatten(args)[0]
        )
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                num = self._track(t)
                if from_param and num is not None:
                    self.casts.add(num)
        return out

    def peak(self, exclude: set[int] = frozenset()) -> int:
        """Peak live bytes over the events so far, leaving out the given storages."""
        live = peak = 0
        for delta, num in self.events:
            if num not in exclude:
                live += delta
                peak = max(peak, live)
        return peak

    def live(self, exclude: set[int] = frozenset()) -> int:
        return sum(delta for delta, num in self.events if num not in exclude)


class SavedBytes:
    """Bytes autograd keeps for backward (saved-tensor hooks), each storage counted once.
    On real tensors this is an independent check of the meter: storages are told apart by
    their data pointers, not by the meter's bookkeeping. (Saved tensors stay alive until
    backward, so pointers and ids stay unique while forward runs.)"""

    def __init__(self, params: Iterable[torch.Tensor], by_pointer: bool):
        self.by_pointer = by_pointer
        self._skip = {self._key(p) for p in params}
        self.sizes: dict[int, int] = {}

    def _key(self, t: torch.Tensor) -> int:
        s = t.untyped_storage()
        return s.data_ptr() if self.by_pointer else id(s)

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        key = self._key(t)
        if key not in self._skip and key not in self.sizes:
            self.sizes[key] = t.untyped_storage().nbytes()
        return t

    @staticmethod
    def unpack(t: torch.Tensor) -> torch.Tensor:
        return t

    def hooks(self) -> torch.autograd.graph.saved_tensors_hooks:
        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)

    @property
    def total(self) -> int:
        return sum(self.sizes.values())
