"""Compiled sparse kernels behind `CosineRecommender` (numba, no GIL).

Two kernels cover every verb:

- `topk_products`: for each query row q, the `k` largest entries of
  `q @ B` over the targets that share a nonzero feature with q, by sparse
  scatter-add (the SMMP algorithm implicit's `all_pairs_knn` uses). It
  builds the neighbour graph in `fit` and answers `similar_items`,
  `similar_users` and user-based neighbour searches for new histories.
- `score_and_select`: for each user, `scores = history @ graph`, own items
  excluded, the best `top_k` kept, then back-filled in popularity order.

Both run on a block of rows with the GIL released, so a thread pool
spreads blocks over the cores (see `run_blocks`). Memory per thread is a
few arrays of the target count, never a dense items x items or users x
items matrix. Ties are broken by the lower index everywhere, as
`tf.math.top_k` does, so exported models agree with the Python object.
"""

import concurrent.futures
import os
from collections.abc import Callable

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, inline="always")
def _better(s1, i1, s2, i2):
    return s1 > s2 or (s1 == s2 and i1 < i2)


@numba.njit(cache=True, nogil=True, inline="always")
def _sift_down(hv, hi, pos, size):
    # Min-heap on "worse first": the root is the worst kept entry.
    while True:
        left = 2 * pos + 1
        if left >= size:
            return
        child = left
        right = left + 1
        if right < size and _better(hv[left], hi[left], hv[right], hi[right]):
            child = right
        if _better(hv[pos], hi[pos], hv[child], hi[child]):
            hv[pos], hv[child] = hv[child], hv[pos]
            hi[pos], hi[child] = hi[child], hi[pos]
            pos = child
        else:
            return


@numba.njit(cache=True, nogil=True, inline="always")
def _push(hv, hi, size, k, score, index):
    """Offers (score, index) to a heap of at most k; returns the new size."""
    if size < k:
        pos = size
        hv[pos] = score
        hi[pos] = index
        size += 1
        while pos > 0:
            parent = (pos - 1) // 2
            if _better(hv[parent], hi[parent], hv[pos], hi[pos]):
                hv[pos], hv[parent] = hv[parent], hv[pos]
                hi[pos], hi[parent] = hi[parent], hi[pos]
                pos = parent
            else:
                break
        return size
    if _better(score, index, hv[0], hi[0]):
        hv[0] = score
        hi[0] = index
        _sift_down(hv, hi, 0, size)
    return size


@numba.njit(cache=True, nogil=True)
def _write_sorted(hv, hi, size, out_idx, out_val):
    """Writes heap content ordered by (score desc, index asc)."""
    order = np.argsort(hi[:size])
    idx = hi[:size][order]
    val = hv[:size][order]
    order2 = np.argsort(-val, kind="mergesort")
    for t in range(size):
        out_idx[t] = idx[order2[t]]
        out_val[t] = val[order2[t]]


@numba.njit(cache=True, nogil=True)
def _implicit_ties(acc, order, n_order, kth, k, theap):
    """Which entries tied at the k-th score implicit's `TopK` keeps.

    implicit offers entries in `order` reversed (its traversal order);
    each enters if the heap is not full or beats the minimum, and the
    smallest (score, index) is evicted. Everything above `kth` is kept,
    nothing below it; among the ties the outcome depends only on how many
    lower entries sit in the heap and on the lowest tied index, so counts
    and a min-heap of tied indices replay it exactly. Returns how many
    tied indices were kept (in `theap[:n]`).
    """
    size = 0
    low = 0
    n_t = 0
    for u in range(n_order - 1, -1, -1):
        t = order[u]
        s = acc[t]
        if s > kth:
            if size < k:
                size += 1
            elif low > 0:
                low -= 1
            else:
                n_t = _heap_pop_min(theap, n_t)
        elif s == kth:
            if size < k:
                size += 1
                n_t = _heap_push_min(theap, n_t, t)
            elif low > 0:
                low -= 1
                n_t = _heap_push_min(theap, n_t, t)
        else:
            if size < k:
                size += 1
                low += 1
    return n_t


@numba.njit(cache=True, nogil=True)
def _heap_push_min(heap, n, value):
    pos = n
    heap[pos] = value
    while pos > 0:
        parent = (pos - 1) // 2
        if heap[pos] < heap[parent]:
            heap[pos], heap[parent] = heap[parent], heap[pos]
            pos = parent
        else:
            break
    return n + 1


@numba.njit(cache=True, nogil=True)
def _heap_pop_min(heap, n):
    n -= 1
    heap[0] = heap[n]
    pos = 0
    while True:
        left = 2 * pos + 1
        if left >= n:
            break
        child = left
        if left + 1 < n and heap[left + 1] < heap[left]:
            child = left + 1
        if heap[child] < heap[pos]:
            heap[pos], heap[child] = heap[child], heap[pos]
            pos = child
        else:
            break
    return n


@numba.njit(cache=True, nogil=True)
def _gather_kept(acc, cand, n_cand, kth, theap, n_t, hv, hi):
    """Entries above kth plus the kept ties, into hv/hi; returns count."""
    size = 0
    for u in range(n_cand):
        t = cand[u]
        if acc[t] > kth:
            hv[size] = acc[t]
            hi[size] = t
            size += 1
    for u in range(n_t):
        hv[size] = kth
        hi[size] = theap[u]
        size += 1
    return size


@numba.njit(cache=True, nogil=True)
def topk_products(
    q_indptr,
    q_indices,
    q_data,
    rows,
    b_indptr,
    b_indices,
    b_data,
    n_targets,
    k,
    exclude,
    out_idx,
    out_val,
    out_count,
    ordered,
):
    """Top-k of `Q[rows] @ B` per query row (sparse in, dense out).

    The kept set is exactly implicit's `all_pairs_knn` one, ties at the
    k-th score included (sums run in its order, so they are bit-identical,
    and its traversal order and eviction rule are replayed on ties).

    Args:
        q_indptr, q_indices, q_data: CSR of the queries (rows x features).
        rows: int64 array. Which query rows to compute.
        b_indptr, b_indices, b_data: CSR of features x targets.
        n_targets: int. Number of targets (columns of B).
        k: int. How many to keep per row.
        exclude: int64 array (len(rows)). A target to skip per row (the
            query itself in similar_items), or -1.
        out_idx, out_val: (len(rows), k) int32 / float32 outputs, ordered
            by score desc, index asc.
        out_count: (len(rows),) int32: how many entries each row got.
        ordered: bool. Order each row by score desc, index asc; False
            writes the kept set in any order (fit re-sorts by index).
    """
    acc = np.zeros(n_targets, dtype=q_data.dtype)
    cand = np.empty(n_targets + 1, dtype=np.int64)
    vals = np.empty(n_targets, dtype=q_data.dtype)
    mark = np.full(n_targets, -1, dtype=np.int64)
    theap = np.empty(k, dtype=np.int64)
    hv = np.empty(k, dtype=q_data.dtype)
    hi = np.empty(k, dtype=np.int64)
    for r in range(rows.shape[0]):
        q = rows[r]
        ex = exclude[r]
        work = 0
        for p in range(q_indptr[q], q_indptr[q + 1]):
            f = q_indices[p]
            work += b_indptr[f + 1] - b_indptr[f]
        if 4 * work >= n_targets:
            # Dense mode: plain scatter-add, then scans in index order.
            for p in range(q_indptr[q], q_indptr[q + 1]):
                f = q_indices[p]
                w1 = q_data[p]
                for p2 in range(b_indptr[f], b_indptr[f + 1]):
                    acc[b_indices[p2]] += w1 * b_data[p2]
            if ex >= 0:
                acc[ex] = 0.0
            nonzero = 0
            size = 0
            threshold = acc.dtype.type(0.0)
            for t in range(n_targets):
                s = acc[t]
                nonzero += s != 0.0
                if s > threshold:
                    size = _push(hv, hi, size, k, s, t)
                    if size == k:
                        threshold = hv[0]
            if nonzero > size:
                kth = hv[0]
                kept_at = 0
                for u in range(size):
                    kept_at += hv[u] == kth
                total_at = 0
                for t in range(n_targets):
                    total_at += acc[t] == kth
                if total_at > kept_at:
                    # Ties at the boundary: rebuild implicit's order.
                    n_order = 0
                    for p in range(q_indptr[q], q_indptr[q + 1]):
                        f = q_indices[p]
                        for p2 in range(b_indptr[f], b_indptr[f + 1]):
                            t = b_indices[p2]
                            if mark[t] != r and acc[t] != 0.0:
                                mark[t] = r
                                cand[n_order] = t
                                n_order += 1
                    n_t = _implicit_ties(acc, cand, n_order, kth, k, theap)
                    size = _gather_kept(
                        acc, cand, n_order, kth, theap, n_t, hv, hi
                    )
            acc[:] = 0.0
        else:
            n_touched = 0
            for p in range(q_indptr[q], q_indptr[q + 1]):
                f = q_indices[p]
                w1 = q_data[p]
                for p2 in range(b_indptr[f], b_indptr[f + 1]):
                    t = b_indices[p2]
                    # Branch-free append on first touch.
                    cand[n_touched] = t
                    n_touched += acc[t] == 0.0
                    acc[t] += w1 * b_data[p2]
            if ex >= 0 and acc[ex] != 0.0:
                acc[ex] = 0.0
                kept = 0
                for u in range(n_touched):
                    if cand[u] != ex:
                        cand[kept] = cand[u]
                        kept += 1
                n_touched = kept
            if n_touched <= k:
                size = n_touched
                for u in range(n_touched):
                    hv[u] = acc[cand[u]]
                    hi[u] = cand[u]
            else:
                for u in range(n_touched):
                    vals[u] = acc[cand[u]]
                kth = np.partition(vals[:n_touched], n_touched - k)[
                    n_touched - k
                ]
                above = 0
                at = 0
                for u in range(n_touched):
                    v = acc[cand[u]]
                    above += v > kth
                    at += v == kth
                if at == k - above:
                    n_t = 0
                    for u in range(n_touched):
                        if acc[cand[u]] == kth:
                            theap[n_t] = cand[u]
                            n_t += 1
                else:
                    n_t = _implicit_ties(acc, cand, n_touched, kth, k, theap)
                size = _gather_kept(
                    acc, cand, n_touched, kth, theap, n_t, hv, hi
                )
            for u in range(n_touched):
                acc[cand[u]] = 0.0
        if ordered:
            _write_sorted(hv, hi, size, out_idx[r], out_val[r])
        else:
            for u in range(size):
                out_idx[r, u] = hi[u]
                out_val[r, u] = hv[u]
        out_count[r] = size


@numba.njit(cache=True, nogil=True)
def score_and_select(
    h_indptr,
    h_indices,
    h_data,
    g_indptr,
    g_indices,
    g_data,
    x_indptr,
    x_indices,
    n_items,
    top_k,
    exclude_liked,
    popular,
    backfill,
    out_idx,
    out_val,
):
    """Scores each history row through the graph, then selects top_k.

    `scores[j] = sum_h h_data[h] * g[h, j]`. Items of row r of `x` (the
    user's own items) are excluded when `exclude_liked`. Empty slots are
    back-filled in the order of `popular` with score 0.0 when `backfill`;
    what is still empty gets index -1 and score 0.0.
    """
    n = h_indptr.shape[0] - 1
    acc = np.zeros(n_items, dtype=np.float32)
    touched = np.empty(n_items + 1, dtype=np.int64)
    banned = np.zeros(n_items, dtype=np.bool_)
    hv = np.empty(top_k, dtype=np.float32)
    hi = np.empty(top_k, dtype=np.int64)
    for r in range(n):
        if exclude_liked:
            for p in range(x_indptr[r], x_indptr[r + 1]):
                banned[x_indices[p]] = True
        work = 0
        for p in range(h_indptr[r], h_indptr[r + 1]):
            f = h_indices[p]
            work += g_indptr[f + 1] - g_indptr[f]
        size = 0
        if 2 * work >= n_items:
            # Dense mode: plain scatter-add, then one scan in index order
            # (an equal score met later never displaces a lower index).
            for p in range(h_indptr[r], h_indptr[r + 1]):
                f = h_indices[p]
                w1 = h_data[p]
                for p2 in range(g_indptr[f], g_indptr[f + 1]):
                    acc[g_indices[p2]] += w1 * g_data[p2]
            # Branch-light scan: untouched entries are 0.0 and never pass
            # the threshold (0 until the heap is full, then its minimum).
            threshold = np.float32(0.0)
            for t in range(n_items):
                s = acc[t]
                acc[t] = 0.0
                if s > threshold and not banned[t]:
                    size = _push(hv, hi, size, top_k, s, t)
                    if size == top_k:
                        threshold = hv[0]
        else:
            n_touched = 0
            for p in range(h_indptr[r], h_indptr[r + 1]):
                f = h_indices[p]
                w1 = h_data[p]
                for p2 in range(g_indptr[f], g_indptr[f + 1]):
                    t = g_indices[p2]
                    touched[n_touched] = t
                    n_touched += acc[t] == 0.0
                    acc[t] += w1 * g_data[p2]
            for u in range(n_touched):
                t = touched[u]
                s = acc[t]
                acc[t] = 0.0
                if (size < top_k or s >= hv[0]) and not banned[t]:
                    size = _push(hv, hi, size, top_k, s, t)
        _write_sorted(hv, hi, size, out_idx[r], out_val[r])
        got = size
        if backfill and got < top_k:
            for t in range(got):
                banned[out_idx[r, t]] = True
            p = 0
            while got < top_k and p < popular.shape[0]:
                j = popular[p]
                if not banned[j]:
                    out_idx[r, got] = j
                    out_val[r, got] = 0.0
                    got += 1
                p += 1
            for t in range(got):
                banned[out_idx[r, t]] = False
        for t in range(got, top_k):
            out_idx[r, t] = -1
            out_val[r, t] = 0.0
        if exclude_liked:
            for p in range(x_indptr[r], x_indptr[r + 1]):
                banned[x_indices[p]] = False


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

    The kernels release the GIL, so blocks run in parallel. `progress`,
    when given, is a tqdm bar updated by the rows of each finished block.
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
