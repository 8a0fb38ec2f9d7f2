"""Spreads the compiled kernels' row blocks over the CPU cores.

The kernels in `_kernels` release the GIL, so plain threads run blocks in
parallel; no process pool, no copies of the matrices.
"""

import concurrent.futures
import os
from collections.abc import Callable


def default_num_threads() -> int:
    """The number of CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def run_blocks(
    n_rows: int,
    block_size: int,
    fn: Callable[[int, int], None],
    num_threads: int,
    progress=None,
) -> None:
    """Calls `fn(start, stop)` over row blocks on a thread pool.

    `progress`, when given, is a tqdm bar updated by the rows of each
    finished block.
    """
    starts = range(0, n_rows, block_size)
    if num_threads <= 1 or n_rows <= block_size:
        for start in starts:
            stop = min(n_rows, start + block_size)
            fn(start, stop)
            if progress is not None:
                progress.update(stop - start)
        return
    with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
        futures = {
            pool.submit(fn, start, min(n_rows, start + block_size)): (
                min(n_rows, start + block_size) - start
            )
            for start in starts
        }
        for future in concurrent.futures.as_completed(futures):
            future.result()
            if progress is not None:
                progress.update(futures[future])
