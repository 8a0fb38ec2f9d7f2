# cython: language_level=3, boundscheck=False, wraparound=False
# cython: cdivision=True, initializedcheck=False
# distutils: language = c++
"""Compiled sparse kernels behind `CosineRecommender` (Cython, no GIL).

Two kernels cover every verb:

- `topk_products`: for each query row q, the `k` largest entries of
  `q @ B` over the targets that share a nonzero feature with q, by sparse
  scatter-add (the SMMP algorithm implicit's `all_pairs_knn` uses). It
  builds the neighbour graph in `fit` and answers `similar_items`,
  `similar_users` and user-based neighbour searches for new histories.
- `score_and_select`: for each user, `scores = history @ graph`, own items
  excluded, the best `top_k` kept, then back-filled in popularity order.

Both run on a block of rows with the GIL released, so a thread pool
spreads blocks over the cores (`aiservice_kit.recommenders._blocks`).
Memory per thread is a few arrays of the target count, never a dense
items x items or users x items matrix. Ties are broken by the lower index
everywhere, as `tf.math.top_k` does, so exported models agree with the
Python object.

Compiled ahead of time (not JIT) so that importing and first use cost a
few MB, as implicit's own extension does; the array types are fixed by
the callers in `_neighbours.py`: indptr int64, indices int32, values float64
(similarity search) or float32 (scoring).
"""

from libc.stdint cimport int32_t
from libc.stdint cimport int64_t
from libc.math cimport nextafter
from libc.string cimport memset

cdef extern from *:
    """
    /* Helpers of `topk_products`: dense-buffer scans with SSE2 (every
       x86-64 CPU) where available and plain loops elsewhere, which give
       the same answers (the same IEEE products and comparisons), and the
       exact repeated sum of the binary path. */
    #include <math.h>
    #include <string.h>
    #if defined(__SSE2__) || defined(_M_X64)
    #include <emmintrin.h>
    #define AIK_SSE2 1
    #endif

    /* Whether any of a[0..8) exceeds `threshold`. */
    static inline int aik_any_above8(const double *a, double threshold)
    {
    #ifdef AIK_SSE2
        __m128d t = _mm_set1_pd(threshold);
        __m128d g = _mm_or_pd(
            _mm_or_pd(_mm_cmpgt_pd(_mm_loadu_pd(a), t),
                      _mm_cmpgt_pd(_mm_loadu_pd(a + 2), t)),
            _mm_or_pd(_mm_cmpgt_pd(_mm_loadu_pd(a + 4), t),
                      _mm_cmpgt_pd(_mm_loadu_pd(a + 6), t)));
        return _mm_movemask_pd(g) != 0;
    #else
        int j, hit = 0;
        for (j = 0; j < 8; j++) hit |= a[j] > threshold;
        return hit;
    #endif
    }

    /* How many of a[0..n) equal `value`. */
    static inline Py_ssize_t aik_count_equal(
        const double *a, Py_ssize_t n, double value)
    {
        Py_ssize_t j = 0, eq = 0;
    #ifdef AIK_SSE2
        __m128d v = _mm_set1_pd(value);
        __m128i ceq = _mm_setzero_si128();
        long long lanes[2];
        for (; j + 2 <= n; j += 2) {
            /* A true comparison is all ones, i.e. -1 as an int64 lane. */
            ceq = _mm_sub_epi64(
                ceq, _mm_castpd_si128(_mm_cmpeq_pd(_mm_loadu_pd(a + j), v)));
        }
        _mm_storeu_si128((__m128i *)lanes, ceq);
        eq = (Py_ssize_t)(lanes[0] + lanes[1]);
    #endif
        for (; j < n; j++) eq += a[j] == value;
        return eq;
    }

    /* The value `c * n` as the float64 loop `s = 0; repeat n: s += c`
       leaves it (each sum rounded to nearest, ties to even), in
       O(log n) steps: within one binade [2^(E-1023), 2^(E-1022)) of the
       sum, every addition of the same c moves the significand by the
       same whole number of units (once the first addition inside the
       binade has made a tie-to-even parity settle), so the steps that
       stay inside the binade are taken at once. */
    static inline double aik_repeated_sum(double c, int64_t n)
    {
        double s = c, s1, s2, s3, ulp, x, top;
        int64_t k = 1, room, unit, steps;
        uint64_t bits, e1, e3;
        if (n <= 0) return 0.0;
        while (k < n) {
            if (n - k <= 8) {
                for (; k < n; k++) s += c;
                break;
            }
            s1 = s + c;
            s2 = s1 + c;
            s3 = s2 + c;
            k += 3;
            memcpy(&bits, &s1, 8);
            e1 = bits >> 52;
            memcpy(&bits, &s3, 8);
            e3 = bits >> 52;
            s = s3;
            if (e1 != e3 || e1 < 60 || e1 > 2000) continue;
            bits = (e1 - 52) << 52;
            memcpy(&ulp, &bits, 8);
            bits = (e1 + 1) << 52;
            memcpy(&top, &bits, 8);
            unit = (int64_t)((s3 - s2) / ulp);        /* steady step */
            x = c / ulp;                              /* exact */
            /* Step i from s3 stays in the binade while
               s3 + (i-1) * step + c < top, i.e. (in units)
               (i-1) * unit + floor(x) <= (top - s3) / ulp - 1. */
            room = (int64_t)((top - s3) / ulp) - 1 - (int64_t)floor(x);
            if (room < 0 || unit <= 0) continue;
            steps = room / unit + 1;
            if (steps > n - k) steps = n - k;
            s = s3 + (double)(steps * unit) * ulp;
            k += steps;
        }
        return s;
    }

    /* The approximate scores counts[j] * (w * tw[j]) of 8 targets, into
       a[0..8) (each product as `_select_counts` forms it), and the mask
       of those above `below` (bit j for target j). */
    static inline unsigned aik_above8_counts(
        const int32_t *counts, const double *tw, double w, double below,
        double *a)
    {
    #ifdef AIK_SSE2
        __m128d b = _mm_set1_pd(below), wv = _mm_set1_pd(w), x;
        unsigned mask = 0;
        int j;
        for (j = 0; j < 8; j += 2) {
            x = _mm_mul_pd(
                _mm_mul_pd(wv, _mm_loadu_pd(tw + j)),
                _mm_cvtepi32_pd(
                    _mm_loadl_epi64((const __m128i *)(counts + j))));
            _mm_storeu_pd(a + j, x);
            mask |= (unsigned)_mm_movemask_pd(_mm_cmpgt_pd(x, b)) << j;
        }
        return mask;
    #else
        unsigned mask = 0;
        int j;
        for (j = 0; j < 8; j++) {
            a[j] = (w * tw[j]) * (double)counts[j];
            mask |= (unsigned)(a[j] > below) << j;
        }
        return mask;
    #endif
    }

    /* The lowest set bit of a nonzero mask. */
    static inline int aik_lowest_bit(unsigned mask)
    {
    #if defined(__GNUC__) || defined(__clang__)
        return __builtin_ctz(mask);
    #else
        int j = 0;
        while (!(mask & 1u)) { mask >>= 1; j++; }
        return j;
    #endif
    }
    """
    bint aik_any_above8(const double *a, double threshold) noexcept nogil
    double aik_repeated_sum(double c, int64_t n) noexcept nogil
    unsigned aik_above8_counts(
        const int32_t *counts, const double *tw, double w, double below,
        double *a,
    ) noexcept nogil
    int aik_lowest_bit(unsigned mask) noexcept nogil
    Py_ssize_t aik_count_equal(
        const double *a, Py_ssize_t n, double value) noexcept nogil
from libcpp.algorithm cimport nth_element
from libcpp.algorithm cimport sort

import numpy as np

ctypedef fused real:
    float
    double


# -- the sparse row-times-matrix product both kernels start from --------


cdef inline int64_t _row_work(
    const int64_t *q_indptr, const int32_t *q_indices, int64_t q,
    const int64_t *b_indptr,
) noexcept nogil:
    """How many scatter-adds row q of Q costs in `Q @ B`."""
    cdef int64_t work = 0, p, f
    for p in range(q_indptr[q], q_indptr[q + 1]):
        f = q_indices[p]
        work += b_indptr[f + 1] - b_indptr[f]
    return work


cdef inline void _scatter_dense(
    const int64_t *q_indptr, const int32_t *q_indices, const real *q_data,
    int64_t q,
    const int64_t *b_indptr, const int32_t *b_indices, const real *b_data,
    real *acc,
) noexcept nogil:
    """acc += row q of Q times B, into a buffer of every target."""
    cdef int64_t p, p2, f
    cdef real w1
    for p in range(q_indptr[q], q_indptr[q + 1]):
        f = q_indices[p]
        w1 = q_data[p]
        for p2 in range(b_indptr[f], b_indptr[f + 1]):
            acc[b_indices[p2]] += w1 * b_data[p2]


cdef inline Py_ssize_t _scatter_sparse(
    const int64_t *q_indptr, const int32_t *q_indices, const real *q_data,
    int64_t q,
    const int64_t *b_indptr, const int32_t *b_indices, const real *b_data,
    real *acc,
    int64_t *touched,
) noexcept nogil:
    """As `_scatter_dense`, also listing the targets touched (in first-
    touch order) in `touched`; returns how many. `acc` must be all zero."""
    cdef int64_t p, p2, f, t
    cdef Py_ssize_t n_touched = 0
    cdef real w1
    for p in range(q_indptr[q], q_indptr[q + 1]):
        f = q_indices[p]
        w1 = q_data[p]
        for p2 in range(b_indptr[f], b_indptr[f + 1]):
            t = b_indices[p2]
            # Branch-free append on first touch.
            touched[n_touched] = t
            n_touched += acc[t] == 0.0
            acc[t] += w1 * b_data[p2]
    return n_touched


cdef inline void _scatter_count(
    const int64_t *q_indptr, const int32_t *q_indices, int64_t q,
    const int64_t *b_indptr, const int32_t *b_indices,
    int32_t *counts,
) noexcept nogil:
    """How many features row q of Q shares with each target. With binary
    interactions a scatter-add adds the same product `w1 * tw[t]` (the
    normalised values) to target t once per shared feature, so its sum
    is that product added `counts[t]` times (`aik_repeated_sum`); the
    counts stream a quarter of the bytes (int32, no weights read)."""
    cdef int64_t p, p2
    for p in range(q_indptr[q], q_indptr[q + 1]):
        for p2 in range(b_indptr[q_indices[p]], b_indptr[q_indices[p] + 1]):
            counts[b_indices[p2]] += 1


cdef inline Py_ssize_t _scatter_count_touched(
    const int64_t *q_indptr, const int32_t *q_indices, int64_t q,
    const int64_t *b_indptr, const int32_t *b_indices,
    int32_t *counts,
    int64_t *touched,
) noexcept nogil:
    """As `_scatter_count`, also listing the targets touched in first-
    touch order (as `_scatter_sparse`); returns how many."""
    cdef int64_t p, p2, t
    cdef int32_t c
    cdef Py_ssize_t n_touched = 0
    for p in range(q_indptr[q], q_indptr[q + 1]):
        for p2 in range(b_indptr[q_indices[p]], b_indptr[q_indices[p] + 1]):
            t = b_indices[p2]
            c = counts[t]
            touched[n_touched] = t
            n_touched += c == 0
            counts[t] = c + 1
    return n_touched


# -- a bounded heap of the best k (score, index) pairs -------------------
#
# A min-heap on "worse first": the root is the worst kept entry, so a new
# entry enters by replacing it. Better means a higher score, or the same
# score and a lower index.


cdef inline bint _better(double s1, int64_t i1, double s2, int64_t i2) noexcept nogil:
    return s1 > s2 or (s1 == s2 and i1 < i2)


cdef inline void _swap(double *hv, int64_t *hi, Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    cdef double tv = hv[a]
    cdef int64_t ti = hi[a]
    hv[a] = hv[b]
    hv[b] = tv
    hi[a] = hi[b]
    hi[b] = ti


cdef inline void _sift_down(
    double *hv, int64_t *hi, Py_ssize_t pos, Py_ssize_t size
) noexcept nogil:
    cdef Py_ssize_t left, right, child
    while True:
        left = 2 * pos + 1
        if left >= size:
            return
        child = left
        right = left + 1
        if right < size and _better(hv[left], hi[left], hv[right], hi[right]):
            child = right
        if _better(hv[pos], hi[pos], hv[child], hi[child]):
            _swap(hv, hi, pos, child)
            pos = child
        else:
            return


cdef inline Py_ssize_t _push(
    double *hv,
    int64_t *hi,
    Py_ssize_t size,
    Py_ssize_t k,
    double score,
    int64_t index,
) noexcept nogil:
    """Offers (score, index) to a heap of at most k; returns the new size."""
    cdef Py_ssize_t pos, parent
    if size < k:
        pos = size
        hv[pos] = score
        hi[pos] = index
        size += 1
        while pos > 0:
            parent = (pos - 1) // 2
            if _better(hv[parent], hi[parent], hv[pos], hi[pos]):
                _swap(hv, hi, pos, parent)
                pos = parent
            else:
                break
        return size
    if _better(score, index, hv[0], hi[0]):
        hv[0] = score
        hi[0] = index
        _sift_down(hv, hi, 0, size)
    return size


cdef void _sort_best_first(double *hv, int64_t *hi, Py_ssize_t size) noexcept nogil:
    """Heapsorts the first `size` pairs into (score desc, index asc).

    The pairs need not form a heap yet. Each step moves the worst
    remaining pair (the root) to the end of the unsorted part.
    """
    cdef Py_ssize_t pos, end
    pos = size // 2 - 1
    while pos >= 0:
        _sift_down(hv, hi, pos, size)
        pos -= 1
    end = size - 1
    while end > 0:
        _swap(hv, hi, 0, end)
        _sift_down(hv, hi, 0, end)
        end -= 1


cdef inline Py_ssize_t _push_value(
    double *h, Py_ssize_t size, Py_ssize_t k, double value
) noexcept nogil:
    """Offers a value to a min-heap of the k largest values (root: the
    smallest kept); returns the new size. No indices: only the k-th
    value is wanted (`_select_counts`' approximate threshold)."""
    cdef Py_ssize_t pos, parent, child
    if size < k:
        pos = size
        while pos > 0:
            parent = (pos - 1) // 2
            if h[parent] <= value:
                break
            h[pos] = h[parent]
            pos = parent
        h[pos] = value
        return size + 1
    if value <= h[0]:
        return size
    pos = 0
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        if child + 1 < size and h[child + 1] < h[child]:
            child += 1
        if h[child] >= value:
            break
        h[pos] = h[child]
        pos = child
    h[pos] = value
    return size


# -- a min-heap of tied indices, to replay implicit's eviction ----------


cdef inline Py_ssize_t _heap_push_min(int64_t *heap, Py_ssize_t n, int64_t value) noexcept nogil:
    cdef Py_ssize_t pos = n, parent
    cdef int64_t t
    heap[pos] = value
    while pos > 0:
        parent = (pos - 1) // 2
        if heap[pos] < heap[parent]:
            t = heap[pos]
            heap[pos] = heap[parent]
            heap[parent] = t
            pos = parent
        else:
            break
    return n + 1


cdef inline Py_ssize_t _heap_pop_min(int64_t *heap, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t pos = 0, left, child
    cdef int64_t t
    n -= 1
    heap[0] = heap[n]
    while True:
        left = 2 * pos + 1
        if left >= n:
            break
        child = left
        if left + 1 < n and heap[left + 1] < heap[left]:
            child = left + 1
        if heap[child] < heap[pos]:
            t = heap[pos]
            heap[pos] = heap[child]
            heap[child] = t
            pos = child
        else:
            break
    return n


cdef Py_ssize_t _implicit_ties(
    const double *vals,
    const int64_t *order,
    Py_ssize_t n_order,
    double kth,
    Py_ssize_t k,
    int64_t *theap,
) noexcept nogil:
    """Which entries tied at the k-th score implicit's `TopK` keeps.

    implicit offers entries in `order` reversed (its traversal order);
    each enters if the heap is not full or beats the minimum, and the
    smallest (score, index) is evicted. Everything above `kth` is kept,
    nothing below it; among the ties the outcome depends only on how many
    lower entries sit in the heap and on the lowest tied index, so counts
    and a min-heap of tied indices replay it exactly. `vals[u]` is the
    score of `order[u]`. Returns how many tied indices were kept (in
    `theap[:n]`).
    """
    cdef Py_ssize_t size = 0, low = 0, n_t = 0, u
    cdef int64_t t
    cdef double s
    for u in range(n_order - 1, -1, -1):
        t = order[u]
        s = vals[u]
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


cdef Py_ssize_t _gather_kept(
    const double *vals,
    const int64_t *cand,
    Py_ssize_t n_cand,
    double kth,
    const int64_t *theap,
    Py_ssize_t n_t,
    double *hv,
    int64_t *hi,
) noexcept nogil:
    """Entries above kth plus the kept ties, into hv/hi; returns count.
    `vals[u]` is the score of `cand[u]`."""
    cdef Py_ssize_t size = 0, u
    for u in range(n_cand):
        if vals[u] > kth:
            hv[size] = vals[u]
            hi[size] = cand[u]
            size += 1
    for u in range(n_t):
        hv[size] = kth
        hi[size] = theap[u]
        size += 1
    return size


cdef Py_ssize_t _scan_best(
    const double *acc,
    Py_ssize_t n,
    Py_ssize_t k,
    double *hv,
    int64_t *hi,
) noexcept nogil:
    """The best k positive entries of a dense buffer, by a scan in index
    order (an equal score met later never displaces a lower index), into
    the heap `hv`/`hi`; returns its size. Blocks of 8 entries with none
    above the threshold (the heap's minimum once full: the common case)
    are skipped after one vector comparison."""
    cdef Py_ssize_t size = 0, t0, t
    cdef double threshold = 0.0, s
    cdef Py_ssize_t n8 = n - n % 8
    for t0 in range(0, n, 8):
        if t0 < n8 and not aik_any_above8(acc + t0, threshold):
            continue
        for t in range(t0, min(t0 + 8, n)):
            s = acc[t]
            if s > threshold:
                size = _push(hv, hi, size, k, s, t)
                if size == k:
                    threshold = hv[0]
    return size


cdef Py_ssize_t _select_counts(
    const int32_t *counts,
    const double *tw,
    double w1,
    Py_ssize_t n,
    const int64_t *touched,
    Py_ssize_t k,
    int64_t max_count,
    double *hv,
    int64_t *hi,
    int64_t *cand,
    double *vals,
    Py_ssize_t *n_cand,
) noexcept nogil:
    """The exact best k of the sums `counts[t]` times `w1 * tw[t]`, over
    targets 0..n-1 (`touched` NULL) or the n targets listed in `touched`.

    Exact sums cost O(log count) each (`aik_repeated_sum`), so one scan
    first keeps the best k of the approximate scores a = count *
    product, which are within a relative max_count * 2^-53 of the exact
    sums (the error bound of a sum of equal positive terms, plus one
    rounding). Any target whose exact sum can reach the k-th exact one
    has a >= the approximate k-th times (1 - 3 max_count * 2^-52): the
    scan lists every target above that factor times its running
    threshold (which only rises), and those still above it at the end
    are the candidates (`cand`, exact sums in `vals`, count in
    `n_cand`). The best k of them by exact sum (ties to the lower index)
    go into the heap `hv`/`hi`. Returns its size.
    """
    cdef Py_ssize_t size = 0, listed = 0, u, t, t0
    cdef Py_ssize_t n8 = 0 if touched != NULL else n - n % 8
    cdef double threshold = 0.0, below = 0.0, s
    # 2^-52 = 2.22e-16
    cdef double margin = (
        1.0 - 3.0 * <double>(max_count + 4) * 2.220446049250313e-16
    )
    cdef double block[8]
    cdef unsigned mask
    # Whole blocks of 8 targets (dense rows): only those above `below`.
    for t0 in range(0, n8, 8):
        mask = aik_above8_counts(counts + t0, tw + t0, w1, below, block)
        while mask:
            u = aik_lowest_bit(mask)
            mask &= mask - 1
            s = block[u]
            if s > below:
                cand[listed] = t0 + u
                vals[listed] = s
                listed += 1
                if s > threshold:
                    size = _push_value(hv, size, k, s)
                    if size == k:
                        threshold = hv[0]
                        # s > below <=> s >= threshold * margin
                        below = nextafter(threshold * margin, 0.0)
    # The rest one by one (or the listed targets of a sparse row).
    for u in range(n8, n):
        t = u if touched == NULL else touched[u]
        s = (w1 * tw[t]) * <double>counts[t]
        if s > below:
            cand[listed] = t
            vals[listed] = s
            listed += 1
            if s > threshold:
                size = _push_value(hv, size, k, s)
                if size == k:
                    threshold = hv[0]
                    below = nextafter(threshold * margin, 0.0)
    # Keep the listed entries still above the final floor, exactly.
    u = 0
    for t0 in range(listed):
        if vals[t0] > below:
            t = cand[t0]
            cand[u] = t
            vals[u] = aik_repeated_sum(w1 * tw[t], counts[t])
            u += 1
    n_cand[0] = u
    size = 0
    for t0 in range(u):
        size = _push(hv, hi, size, k, vals[t0], cand[t0])
    return size


cdef Py_ssize_t _row_binary(
    const int64_t *q_indptr, const int32_t *q_indices, int64_t q,
    const int64_t *b_indptr, const int32_t *b_indices,
    const double *tw, double w1, Py_ssize_t n_targets, Py_ssize_t k,
    int64_t ex, bint dense,
    int32_t *counts, double *exact, int64_t *touched, int64_t *cand,
    double *vals, double *hv, int64_t *hi, int64_t *theap,
) noexcept nogil:
    """One query row of `topk_products` on binary interactions; returns
    how many entries it keeps (in hv/hi). Leaves `counts` all zero.

    Shared-feature counts, then exact sums only for the targets that can
    be kept (`_select_counts`). Dense rows scan every target in index
    order; sparse ones list the targets touched, in first-touch order.
    Ties at the k-th score replay implicit's order (as in
    `topk_products`): the touched list is that order; dense rows rebuild
    it from the counts. Targets that are not candidates rank below kth
    (their `exact` entry stays 0.0).
    """
    cdef Py_ssize_t size, n_touched = 0, n_cand, u, kept_at, total_at, n_t
    cdef int64_t p, p2, t
    cdef bint zeroed = False
    cdef int64_t max_count = q_indptr[q + 1] - q_indptr[q]
    cdef double kth
    if dense:
        _scatter_count(q_indptr, q_indices, q, b_indptr, b_indices, counts)
        if ex >= 0:
            counts[ex] = 0
        size = _select_counts(
            counts, tw, w1, n_targets, NULL, k, max_count,
            hv, hi, cand, vals, &n_cand,
        )
    else:
        n_touched = _scatter_count_touched(
            q_indptr, q_indices, q, b_indptr, b_indices, counts, touched
        )
        if ex >= 0 and counts[ex] != 0:
            counts[ex] = 0
            u = 0
            for p in range(n_touched):
                if touched[p] != ex:
                    touched[u] = touched[p]
                    u += 1
            n_touched = u
        size = _select_counts(
            counts, tw, w1, n_touched, touched, k, max_count,
            hv, hi, cand, vals, &n_cand,
        )
    if size == k and n_cand > k:
        kth = hv[0]
        kept_at = 0
        for u in range(size):
            kept_at += hv[u] == kth
        # Every exact tie with the k-th is a candidate.
        total_at = 0
        for u in range(n_cand):
            total_at += vals[u] == kth
        if total_at > kept_at:
            for u in range(n_cand):
                exact[cand[u]] = vals[u]
            if dense:
                # First-touch order, branch-free, zeroing as met.
                for p in range(q_indptr[q], q_indptr[q + 1]):
                    for p2 in range(
                        b_indptr[q_indices[p]], b_indptr[q_indices[p] + 1]
                    ):
                        t = b_indices[p2]
                        touched[n_touched] = t
                        n_touched += counts[t] != 0
                        counts[t] = 0
                zeroed = True
            for u in range(n_touched):
                vals[u] = exact[touched[u]]
            for u in range(n_cand):
                exact[cand[u]] = 0.0
            n_t = _implicit_ties(vals, touched, n_touched, kth, k, theap)
            size = _gather_kept(
                vals, touched, n_touched, kth, theap, n_t, hv, hi
            )
    if not zeroed:
        if dense:
            memset(counts, 0, n_targets * sizeof(int32_t))
        else:
            for u in range(n_touched):
                counts[touched[u]] = 0
    return size


def topk_products(
    const int64_t[::1] q_indptr,
    const int32_t[::1] q_indices,
    const double[::1] q_data,
    const int64_t[::1] rows,
    const int64_t[::1] b_indptr,
    const int32_t[::1] b_indices,
    const double[::1] b_data,
    Py_ssize_t n_targets,
    Py_ssize_t k,
    const int64_t[::1] exclude,
    int32_t[:, ::1] out_idx,
    float[:, ::1] out_val,
    int32_t[::1] out_count,
    bint ordered,
    const double[::1] q_weight=None,
    const double[::1] t_weight=None,
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
        k: int. How many to keep per row (>= 1).
        exclude: int64 array (len(rows)). A target to skip per row (the
            query itself in similar_items), or -1.
        out_idx, out_val: (len(rows), k) int32 / float32 outputs, in the
            order `ordered` says.
        out_count: (len(rows),) int32: how many entries each row got.
        ordered: bool. Order each row by score desc, index asc; False
            orders it by index (a CSR row, as fit stores the graph).
        q_weight, t_weight: float64 arrays (query rows / targets), given
            together or not at all. When given, every value of query row
            q is `q_weight[q]` and every value of B's column t is
            `t_weight[t]` (binary interactions after normalisation);
            `q_data` and `b_data` are then not read. Dense rows then
            count shared features (int32) instead of adding float64
            products, and form the exact sums of the few targets that
            can be kept (`_select_counts`).
    """
    cdef double[::1] acc = np.zeros(n_targets, dtype=np.float64)
    # Binary interactions: shared-feature counts, and the exact sums of
    # the candidates by target during a tie replay.
    cdef int32_t[::1] counts = np.zeros(n_targets, dtype=np.int32)
    cdef double[::1] exact = np.zeros(n_targets, dtype=np.float64)
    cdef int64_t[::1] touched = np.empty(n_targets + 1, dtype=np.int64)
    cdef double[::1] vals = np.empty(max(n_targets, 1), dtype=np.float64)
    cdef int64_t[::1] cand = np.empty(n_targets + 1, dtype=np.int64)
    cdef int64_t[::1] theap = np.empty(k, dtype=np.int64)
    cdef int64_t[::1] keys = np.empty(k, dtype=np.int64)
    cdef int64_t low32 = 0xFFFFFFFF
    cdef double[::1] hv = np.empty(k, dtype=np.float64)
    cdef int64_t[::1] hi = np.empty(k, dtype=np.int64)
    cdef Py_ssize_t r, u, t, f, p, p2, n_touched, n_order, n_t, size
    cdef Py_ssize_t kept_at, total_at, above, at, kept, n_cand
    cdef bint zeroed
    cdef int64_t q, ex, work
    cdef double s, kth, threshold
    cdef bint weighted = q_weight is not None
    cdef const double *qw = NULL
    cdef const double *tw = NULL
    if weighted:
        qw = &q_weight[0]
        tw = &t_weight[0]
    if k < 1 or n_targets < 1:
        out_count[:] = 0
        return
    with nogil:
        for r in range(rows.shape[0]):
            q = rows[r]
            ex = exclude[r]
            work = _row_work(&q_indptr[0], &q_indices[0], q, &b_indptr[0])
            if weighted:
                size = _row_binary(
                    &q_indptr[0], &q_indices[0], q,
                    &b_indptr[0], &b_indices[0], tw, qw[q], n_targets, k,
                    # Dense from half the target count in scatter work
                    # (measured: 0.25-1 within 2%, all-sparse +22%).
                    ex, 2 * work >= n_targets,
                    &counts[0], &exact[0], &touched[0], &cand[0],
                    &vals[0], &hv[0], &hi[0], &theap[0],
                )
            elif 4 * work >= n_targets:
                # Dense mode: plain scatter-add, then scans in index order.
                _scatter_dense(
                    &q_indptr[0], &q_indices[0], &q_data[0], q,
                    &b_indptr[0], &b_indices[0], &b_data[0], &acc[0],
                )
                if ex >= 0:
                    acc[ex] = 0.0
                size = _scan_best(&acc[0], n_targets, k, &hv[0], &hi[0])
                zeroed = False
                if size == k:
                    kth = hv[0]
                    kept_at = 0
                    for u in range(size):
                        kept_at += hv[u] == kth
                    # Any entry tied with the k-th outside the heap? (kth
                    # > 0, so a tie is a scored entry.)
                    total_at = aik_count_equal(&acc[0], n_targets, kth)
                    if total_at > kept_at:
                        # Ties at the boundary: rebuild implicit's order
                        # (first touch), zeroing `acc` as entries are met.
                        n_order = 0
                        for p in range(q_indptr[q], q_indptr[q + 1]):
                            f = q_indices[p]
                            for p2 in range(b_indptr[f], b_indptr[f + 1]):
                                # Branch-free: append, keep on first
                                # touch (nonzero), zero as met.
                                t = b_indices[p2]
                                s = acc[t]
                                cand[n_order] = t
                                vals[n_order] = s
                                n_order += s != 0.0
                                acc[t] = 0.0
                        zeroed = True
                        n_t = _implicit_ties(
                            &vals[0], &cand[0], n_order, kth, k, &theap[0]
                        )
                        size = _gather_kept(
                            &vals[0], &cand[0], n_order, kth,
                            &theap[0], n_t, &hv[0], &hi[0],
                        )
                if not zeroed:
                    memset(&acc[0], 0, n_targets * sizeof(double))
            else:
                n_touched = _scatter_sparse(
                    &q_indptr[0], &q_indices[0], &q_data[0], q,
                    &b_indptr[0], &b_indices[0], &b_data[0], &acc[0],
                    &cand[0],
                )
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
                    nth_element(
                        &vals[0], &vals[0] + (n_touched - k),
                        &vals[0] + n_touched,
                    )
                    kth = vals[n_touched - k]
                    above = 0
                    at = 0
                    for u in range(n_touched):
                        s = acc[cand[u]]
                        vals[u] = s
                        above += s > kth
                        at += s == kth
                    n_t = 0
                    if at == k - above:
                        for u in range(n_touched):
                            if acc[cand[u]] == kth:
                                theap[n_t] = cand[u]
                                n_t += 1
                    else:
                        n_t = _implicit_ties(
                            &vals[0], &cand[0], n_touched, kth, k, &theap[0]
                        )
                    size = _gather_kept(
                        &vals[0], &cand[0], n_touched, kth,
                        &theap[0], n_t, &hv[0], &hi[0],
                    )
                for u in range(n_touched):
                    acc[cand[u]] = 0.0
            if ordered:
                _sort_best_first(&hv[0], &hi[0], size)
                for u in range(size):
                    out_idx[r, u] = <int32_t>hi[u]
                    out_val[r, u] = <float>hv[u]
            else:
                # By index: sort (index, slot) keys (index < 2^31).
                for u in range(size):
                    keys[u] = (hi[u] << 32) | u
                sort(&keys[0], &keys[0] + size)
                for u in range(size):
                    out_idx[r, u] = <int32_t>(keys[u] >> 32)
                    out_val[r, u] = <float>hv[keys[u] & low32]
            out_count[r] = <int32_t>size


def repeated_sums(double c, const int64_t[::1] n, double[::1] out):
    """`out[i]` = c added `n[i]` times from 0.0 in float64, each sum
    rounded (what a scatter-add of c leaves), by `aik_repeated_sum`.
    For the tests: `np.cumsum` of equal terms is the reference."""
    cdef Py_ssize_t i
    for i in range(n.shape[0]):
        out[i] = aik_repeated_sum(c, n[i])


def score_and_select(
    const int64_t[::1] h_indptr,
    const int32_t[::1] h_indices,
    const float[::1] h_data,
    const int64_t[::1] g_indptr,
    const int32_t[::1] g_indices,
    const float[::1] g_data,
    const int64_t[::1] x_indptr,
    const int32_t[::1] x_indices,
    Py_ssize_t n_items,
    Py_ssize_t top_k,
    bint exclude_liked,
    const int64_t[::1] popular,
    bint backfill,
    int32_t[:, ::1] out_idx,
    float[:, ::1] out_val,
):
    """Scores each history row through the graph, then selects top_k.

    `scores[j] = sum_h h_data[h] * g[h, j]`. Items of row r of `x` (the
    user's own items) are excluded when `exclude_liked`. Empty slots are
    back-filled in the order of `popular` with score 0.0 when `backfill`;
    what is still empty gets index -1 and score 0.0.
    """
    cdef Py_ssize_t n = h_indptr.shape[0] - 1
    cdef float[::1] acc = np.zeros(n_items, dtype=np.float32)
    cdef int64_t[::1] touched = np.empty(n_items + 1, dtype=np.int64)
    cdef unsigned char[::1] banned = np.zeros(n_items, dtype=np.uint8)
    cdef double[::1] hv = np.empty(top_k, dtype=np.float64)
    cdef int64_t[::1] hi = np.empty(top_k, dtype=np.int64)
    cdef Py_ssize_t r, u, t, p, n_touched, size, got
    cdef int64_t work, j
    cdef float s, threshold
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    with nogil:
        for r in range(n):
            if exclude_liked:
                for p in range(x_indptr[r], x_indptr[r + 1]):
                    banned[x_indices[p]] = 1
            work = _row_work(&h_indptr[0], &h_indices[0], r, &g_indptr[0])
            size = 0
            if 2 * work >= n_items:
                # Dense mode: plain scatter-add, then one scan in index
                # order (an equal score met later never displaces a lower
                # index).
                _scatter_dense(
                    &h_indptr[0], &h_indices[0], &h_data[0], r,
                    &g_indptr[0], &g_indices[0], &g_data[0], &acc[0],
                )
                # Untouched entries are 0.0 and never pass the threshold
                # (0 until the heap is full, then its minimum).
                threshold = 0.0
                for t in range(n_items):
                    s = acc[t]
                    acc[t] = 0.0
                    if s > threshold and not banned[t]:
                        size = _push(&hv[0], &hi[0], size, top_k, s, t)
                        if size == top_k:
                            threshold = <float>hv[0]
            else:
                n_touched = _scatter_sparse(
                    &h_indptr[0], &h_indices[0], &h_data[0], r,
                    &g_indptr[0], &g_indices[0], &g_data[0], &acc[0],
                    &touched[0],
                )
                for u in range(n_touched):
                    t = touched[u]
                    s = acc[t]
                    acc[t] = 0.0
                    if (size < top_k or s >= hv[0]) and not banned[t]:
                        size = _push(&hv[0], &hi[0], size, top_k, s, t)
            _sort_best_first(&hv[0], &hi[0], size)
            for u in range(size):
                out_idx[r, u] = <int32_t>hi[u]
                out_val[r, u] = <float>hv[u]
            got = size
            if backfill and got < top_k:
                for u in range(got):
                    banned[out_idx[r, u]] = 1
                p = 0
                while got < top_k and p < popular.shape[0]:
                    j = popular[p]
                    if not banned[j]:
                        out_idx[r, got] = <int32_t>j
                        out_val[r, got] = 0.0
                        got += 1
                    p += 1
                for u in range(got):
                    banned[out_idx[r, u]] = 0
            for u in range(got, top_k):
                out_idx[r, u] = -1
                out_val[r, u] = 0.0
            if exclude_liked:
                for p in range(x_indptr[r], x_indptr[r + 1]):
                    banned[x_indices[p]] = 0
