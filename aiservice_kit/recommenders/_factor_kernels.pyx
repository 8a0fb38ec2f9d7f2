# cython: language_level=3, boundscheck=False, wraparound=False
# cython: cdivision=True, initializedcheck=False
# distutils: language = c++
"""`MatrixFactorization("explicit")`'s training on one device (Cython).

`mf_adam_epoch` runs an epoch of mini-batch Adam on the factor and bias
tables: the steps `keras.Model.fit` takes on the same Keras model, in
float32, with the GIL released (`_factor_adam` calls it and documents
the equivalence). Per rating, a small C helper computes the loss and
gradient with vectorised factor loops and prefetches the rows of a
rating a few ahead; per batch, one dense Adam pass over the tables.
"""

from libc.math cimport pow
from libc.math cimport sqrt
from libc.math cimport sqrtf
from libc.stdint cimport int32_t
from libc.stdint cimport int64_t


cdef extern from *:
    """
    // One rating's loss and gradient for `mf_adam_epoch`, in C so that
    // the reductions over factors vectorise (`omp simd`, built with
    // -fopenmp-simd: SIMD only, no threads) and the six rows are known
    // not to alias. Rows are [factors | bias], `k` factors.
    static inline double aik_mf_pair(
        const float *__restrict__ p, const float *__restrict__ q,
        float *__restrict__ pg, float *__restrict__ qg,
        float *__restrict__ pg2, float *__restrict__ qg2,
        Py_ssize_t k, float rating, float mean, float reg, float c)
    {
        float dot = 0.0f, pen = 0.0f;
        #pragma omp simd reduction(+:dot, pen)
        for (Py_ssize_t f = 0; f < k; ++f) {
            dot += p[f] * q[f];
            pen += p[f] * p[f] + q[f] * q[f];
        }
        pen += p[k] * p[k] + q[k] * q[k];
        const float e = rating - (mean + p[k] + q[k] + dot);
        #pragma omp simd
        for (Py_ssize_t f = 0; f < k; ++f) {
            const float dp = c * (reg * p[f] - e * q[f]);
            const float dq = c * (reg * q[f] - e * p[f]);
            pg[f] += dp;
            qg[f] += dq;
            pg2[f] += dp * dp;
            qg2[f] += dq * dq;
        }
        const float dp = c * (reg * p[k] - e);
        const float dq = c * (reg * q[k] - e);
        pg[k] += dp;
        qg[k] += dq;
        pg2[k] += dp * dp;
        qg2[k] += dq * dq;
        return (double)(e * e + reg * pen);
    }

    // Asks for the six rows of a rating a few ratings ahead: the rows
    // are scattered over tables larger than the caches (1M ratings).
    static inline void aik_mf_prefetch(
        const float *p, const float *q, const float *pg, const float *qg,
        const float *pg2, const float *qg2, Py_ssize_t width)
    {
    #if defined(__GNUC__) || defined(__clang__)
        for (Py_ssize_t f = 0; f < width; f += 16) {
            __builtin_prefetch(p + f, 0);
            __builtin_prefetch(q + f, 0);
            __builtin_prefetch(pg + f, 1);
            __builtin_prefetch(qg + f, 1);
            __builtin_prefetch(pg2 + f, 1);
            __builtin_prefetch(qg2 + f, 1);
        }
    #endif
    }
    """
    void aik_mf_prefetch(
        const float *p, const float *q, const float *pg, const float *qg,
        const float *pg2, const float *qg2, Py_ssize_t width,
    ) noexcept nogil
    double aik_mf_pair(
        const float *p, const float *q, float *pg, float *qg, float *pg2,
        float *qg2, Py_ssize_t k, float rating, float mean, float reg,
        float c,
    ) noexcept nogil


cdef enum:
    # Ratings between a prefetch of rows and their use.
    _AHEAD = 6


cdef inline void _adam_dense(
    float *w, float *g, float *g2, float *m, float *v, Py_ssize_t size,
    float alpha, float one_minus_b1, float one_minus_b2, float eps,
) noexcept nogil:
    """Keras' `Adam.update_step` on every entry; zeroes `g` and `g2`.

    `g` is the summed gradient, `g2` the sum of its occurrences' squares:
    Keras squares an embedding's `IndexedSlices` gradient per occurrence
    before the duplicates are summed into the second moment.
    """
    cdef Py_ssize_t t
    cdef float mt, vt
    for t in range(size):
        mt = m[t] + (g[t] - m[t]) * one_minus_b1
        vt = v[t] + (g2[t] - v[t]) * one_minus_b2
        g[t] = 0.0
        g2[t] = 0.0
        m[t] = mt
        v[t] = vt
        w[t] = w[t] - mt * alpha / (sqrtf(vt) + eps)


def mf_adam_epoch(
    float[:, ::1] user_table,
    float[:, ::1] item_table,
    float[:, ::1] user_m,
    float[:, ::1] user_v,
    float[:, ::1] item_m,
    float[:, ::1] item_v,
    float[:, ::1] user_grad,
    float[:, ::1] user_grad_sq,
    float[:, ::1] item_grad,
    float[:, ::1] item_grad_sq,
    const int32_t[::1] users,
    const int32_t[::1] items,
    const float[::1] ratings,
    const int64_t[::1] order,
    Py_ssize_t batch_size,
    float mean,
    float reg,
    double learning_rate,
    int64_t step,
):
    """One epoch of biased MF by mini-batch Adam; returns the loss sum.

    Tables are `[factors | bias]` rows (the bias in the last column).
    Each batch of `order` takes the mean over its pairs of
    `(r - mean - b_u - b_i - p_u . q_i)^2 + reg * (|p_u|^2 + |q_i|^2 +
    b_u^2 + b_i^2)`, its gradient at the pre-batch tables, and one dense
    Adam step numbered from `step + 1` (Keras' rule and defaults: beta
    0.9/0.999, epsilon 1e-7, every entry's moments decay, the second
    moment fed per occurrence as in `_adam_dense`): the training that
    `keras.Model.fit` runs on the same model, in float32, with one pass
    over the batch's pairs and one over the tables. The four gradient
    buffers must be zeros; they are left zeroed.
    """
    cdef Py_ssize_t n = order.shape[0]
    cdef Py_ssize_t width = user_table.shape[1]
    cdef Py_ssize_t k = width - 1
    cdef Py_ssize_t start, stop, j, u, i
    cdef double total = 0.0, t, alpha
    cdef float c
    if item_table.shape[1] != width or batch_size < 1:
        raise ValueError("tables must share their width; batch_size >= 1")
    with nogil:
        start = 0
        while start < n:
            stop = min(start + batch_size, n)
            c = 2.0 / <float>(stop - start)
            for j in range(start, stop):
                if j + _AHEAD < stop:
                    u = users[order[j + _AHEAD]]
                    i = items[order[j + _AHEAD]]
                    aik_mf_prefetch(
                        &user_table[u, 0], &item_table[i, 0],
                        &user_grad[u, 0], &item_grad[i, 0],
                        &user_grad_sq[u, 0], &item_grad_sq[i, 0], width,
                    )
                u = users[order[j]]
                i = items[order[j]]
                total += aik_mf_pair(
                    &user_table[u, 0], &item_table[i, 0],
                    &user_grad[u, 0], &item_grad[i, 0],
                    &user_grad_sq[u, 0], &item_grad_sq[i, 0],
                    k, ratings[order[j]], mean, reg, c,
                )
            step += 1
            t = <double>step
            alpha = learning_rate * sqrt(1.0 - pow(0.999, t)) / (
                1.0 - pow(0.9, t)
            )
            _adam_dense(
                &user_table[0, 0], &user_grad[0, 0], &user_grad_sq[0, 0],
                &user_m[0, 0], &user_v[0, 0], user_table.shape[0] * width,
                <float>alpha, <float>0.1, <float>0.001, <float>1e-7,
            )
            _adam_dense(
                &item_table[0, 0], &item_grad[0, 0], &item_grad_sq[0, 0],
                &item_m[0, 0], &item_v[0, 0], item_table.shape[0] * width,
                <float>alpha, <float>0.1, <float>0.001, <float>1e-7,
            )
            start = stop
    return total
