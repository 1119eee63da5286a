"""Fresh CPU buffers that a kernel is about to write in full, backed by transparent huge pages where Linux allows.

Measured on the 2-core CPU machines (firecracker VM, 4 KiB pages, THP in ``madvise`` mode): writing a fresh
1.24 GB buffer (the fp32 gradient of N=2048 x V=151936 logits) cost 1.2-1.8 s of page faults (~300k faults at
~5 us), 5-7x the same copy into a buffer already mapped; advised with MADV_HUGEPAGE before its first touch, it took
0.25-0.4 s (~600 faults of 2 MiB), about the pre-faulted time. The kernel still zeroes the pages it hands out,
so a fresh buffer is never free; it is just no longer dominated by faults.

``empty_for_write(like)`` is ``torch.empty_like(like)`` plus that advice for CPU buffers of at least 8 MiB (an
mmap'd allocation of glibc, untouched yet). The advice is a hint: where madvise is missing or refuses, the buffer
is the plain one. Nothing else changes: the tensor is an ordinary torch tensor with torch's own deleter.

``gradient_buffer(like)`` goes one step further for the [N, V] logits gradient, like a caching allocator with one
slot per dtype: it keeps the storage of the last buffer it handed out and hands it out again once nobody else
holds it (the previous ``.grad`` was dropped or consumed: the storage's use count is back to the slot's own
reference), so a training loop's steady state writes its gradients into memory that is already mapped. A buffer
still referenced anywhere (a kept ``.grad``, a view of it, a numpy array on it) is never reused: a fresh one is
handed out and takes the slot. The slot holds at most one buffer per dtype (the largest size asked for while it
was free); ``release_gradient_buffers()`` drops them.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
import threading

import torch

MIN_BYTES = 8 << 20
_HUGE = 2 << 20  # x86-64 PMD size
_MADV_HUGEPAGE = 14


@functools.cache
def _madvise():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
    return fn


def advise_huge_pages(t: torch.Tensor) -> bool:
    """Ask for transparent huge pages over the 2 MiB-aligned interior of a contiguous CPU tensor's memory; True when
    the kernel accepted the advice. Only useful before the memory is first touched."""
    madvise = _madvise()
    nbytes = t.numel() * t.element_size()
    if madvise is None or t.device.type != "cpu" or nbytes < MIN_BYTES or not t.is_contiguous():
        return False
    start = t.data_ptr()
    aligned = (start + _HUGE - 1) & ~(_HUGE - 1)
    length = (start + nbytes - aligned) & ~(_HUGE - 1)
    return length > 0 and madvise(aligned, length, _MADV_HUGEPAGE) == 0


def empty_for_write(like: torch.Tensor) -> torch.Tensor:
    """torch.empty_like(like, contiguous), advised for huge pages when it is a large CPU buffer (see above)."""
    out = torch.empty_like(like, memory_format=torch.contiguous_format)
    advise_huge_pages(out)
    return out


_SLOTS: dict = {}  # dtype -> the UntypedStorage of the last CPU gradient buffer handed out
_LOCK = threading.Lock()


def gradient_buffer(like: torch.Tensor) -> torch.Tensor:
    """A contiguous buffer shaped like `like` that the caller writes in full and hands to autograd as a gradient:
    the slot's storage when nobody else holds it, else a fresh empty_for_write buffer (see the module docstring).
    Only CPU buffers of at least MIN_BYTES use the slot."""
    nbytes = like.numel() * like.element_size()
    if like.device.type != "cpu" or nbytes < MIN_BYTES:
        return empty_for_write(like)
    with _LOCK:  # check and take the slot at once: two backward passes in two threads never share it
        slot = _SLOTS.get(like.dtype)
        if slot is not None and slot.nbytes() >= nbytes and torch._C._storage_Use_Count(slot._cdata) == 1:
            return torch.empty(0, dtype=like.dtype).set_(slot, 0, like.shape)
        out = empty_for_write(like)
        _SLOTS[like.dtype] = out.untyped_storage()
        return out


def release_gradient_buffers() -> None:
    """Drop the storages kept by gradient_buffer (memory held by a live .grad stays with it)."""
    with _LOCK:
        _SLOTS.clear()
