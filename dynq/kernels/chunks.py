"""How the kernels split a tensor: chunks of whole rows, run by a process-wide pool of threads.

Both backends use it. Chunks keep memory bounded for any tensor size, and run in parallel
Python threads: the compiled loops release the GIL, and so do torch's ops.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["map_chunks", "rows_per_chunk", "set_threads", "shutdown", "threads"]

T = TypeVar("T")

_lock = threading.Lock()
_threads: int | None = None
_pools: dict[int, ThreadPoolExecutor] = {}


def _default_threads() -> int:
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_threads(n: int) -> None:
    """How many chunks run at once on the CPU (``dynq build --jobs``)."""
    global _threads
    if n < 1:
        raise ValueError(f"threads must be at least 1, got {n}")
    _threads = n


def threads() -> int:
    """How many chunks run at once on the CPU: :func:`set_threads`, else ``OMP_NUM_THREADS``,
    else the CPUs this process may run on."""
    return _threads or _default_threads()


def rows_per_chunk(elems: int, n: int, rows: int, spread: bool = True) -> int:
    """Rows per chunk of about ``elems`` values, rows of ``n``. With ``spread`` a tensor smaller
    than one chunk per thread is split between the threads anyway: in a small model most
    tensors fit one chunk, which left the other cores idle."""
    step = max(1, elems // max(n, 1))
    if spread:
        step = min(step, max(1, -(-rows // threads())))
    return step


def _pool(workers: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``workers`` threads, started once: a build makes hundreds of calls,
    and starting fresh threads for each cost 0.8 s of a 7 s build (SmolLM2, 2 cores). Calls from
    several threads at once share it (their chunks queue)."""
    with _lock:
        pool = _pools.get(workers)
        if pool is None:
            pool = _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="dynq-chunk")
        return pool


def map_chunks(job: Callable[[int], T], starts: Sequence[int]) -> list[T]:
    """``job`` over the chunks starting at ``starts``, results in order, :func:`threads` at once."""
    n = threads()
    if min(n, len(starts)) <= 1:
        return [job(r0) for r0 in starts]
    return list(_pool(n).map(job, starts))


def shutdown() -> None:
    """Stop the pool's threads (they are started again when needed)."""
    with _lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.shutdown(wait=True)
