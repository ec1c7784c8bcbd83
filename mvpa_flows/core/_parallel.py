"""One helper for ``n_jobs``, thread maps and BLAS thread limits.

Every parallel loop in core goes through here, so that ``n_jobs`` means the same thing
everywhere (scikit-learn's convention: ``None`` is 1, ``-1`` all usable cores, ``-2`` all
but one) and so that the BLAS threads of ``n_jobs`` workers never exceed the cores. On a
loaded machine OpenBLAS with more threads than free cores spins: a 0.08 s SVD of a
481 x 481 matrix took 5 s. numpy, scipy.sparse and NumPy's LAPACK release the GIL, so
threads (not processes) are enough for the batched linear algebra of the engines.
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral

from threadpoolctl import threadpool_limits

__all__ = [
    "available_cores",
    "blas_limits",
    "fit_blas_limits",
    "fit_blas_threads",
    "resolve_n_jobs",
    "thread_imap",
    "thread_map",
]


def available_cores():
    """Cores this process may run on (CPU affinity, e.g. a SLURM allocation), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def resolve_n_jobs(n_jobs, name="n_jobs"):
    """``n_jobs`` as a positive number of workers (None -> 1, -1 -> all cores, -2 -> all
    but one). Anything else than a non-zero integer or None is refused."""
    if n_jobs is None:
        return 1
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, Integral) or n_jobs == 0:
        raise ValueError(
            f"Parameter '{name}' must be a positive integer, or -1 for all cores "
            f"(-2 all but one); got {n_jobs!r}."
        )
    n_jobs = int(n_jobs)
    if n_jobs < 0:
        return max(1, available_cores() + 1 + n_jobs)
    return n_jobs


def blas_threads(n_workers):
    """BLAS threads per worker so that ``n_workers`` x threads never exceeds the cores."""
    return max(1, available_cores() // max(1, int(n_workers)))


@contextlib.contextmanager
def blas_limits(n_workers=1):
    """Limit BLAS (and OpenMP) threads for ``n_workers`` concurrent workers."""
    with threadpool_limits(limits=blas_threads(n_workers)):
        yield


def thread_imap(fn, items, n_jobs):
    """``fn`` over ``items`` on ``n_jobs`` threads with one BLAS thread each; results are
    yielded in order. With one job (or one item) it runs inline, with BLAS untouched."""
    items = list(items)
    if n_jobs <= 1 or len(items) < 2:
        for item in items:
            yield fn(item)
        return
    with threadpool_limits(limits=1), ThreadPoolExecutor(n_jobs) as pool:
        yield from pool.map(fn, items)


def thread_map(fn, items, n_jobs):
    """``[fn(i) for i in items]`` on ``n_jobs`` threads (see :func:`thread_imap`)."""
    return list(thread_imap(fn, items, n_jobs))


def _other_runnable():
    """Runnable processes other than this one right now (Linux ``/proc/loadavg``: the
    fourth field counts runnable scheduling entities), else the 1-minute load average."""
    try:
        with open("/proc/loadavg") as handle:
            running = int(handle.read().split()[3].split("/")[0])
        return max(0, running - 1)
    except (OSError, ValueError, IndexError):
        try:
            return int(os.getloadavg()[0])
        except OSError:  # pragma: no cover - no load information
            return 0


def fit_blas_threads(n_workers=1):
    """BLAS threads per worker for a fit: at most the cores divided by ``n_workers``, at
    most the cores that other runnable processes leave free (OpenBLAS threads busy-wait
    for each other: with more threads than free cores a 0.08 s SVD took 5 s), and never
    more than the BLAS is set to now (``OMP_NUM_THREADS=1`` stays 1)."""
    from threadpoolctl import threadpool_info

    current = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
    cores = available_cores()
    free = max(1, cores - _other_runnable())
    limit = min(blas_threads(n_workers), free)
    if current:
        limit = min(limit, max(current))
    return max(1, limit)


@contextlib.contextmanager
def fit_blas_limits(n_workers=1):
    """Limit (never raise) the BLAS threads of a fit to :func:`fit_blas_threads`."""
    with threadpool_limits(limits=fit_blas_threads(n_workers), user_api="blas"):
        yield
