"""Prototype: explicit MF trained by one cached graph-mode loop, timed.

Measures what `MatrixFactorization("explicit")` would gain from training
outside `keras.Model.fit`: the whole fit (epochs x batches, Adam with
Keras' update rule and defaults) runs in one `tf.function` whose
variables are arguments, so it is traced once per process and reused by
every later fit (`reduce_retracing` generalises the table shapes). Same
objective, per-rating L2 and hyperparameters as the estimator's defaults
(64 factors, batch 16384, Adam 0.04, regularisation 0.1). Not wired into
the estimator: `fit` under a `tf.distribute` strategy still needs the
Keras path, and the two would have to draw the same initial factors and
batch order for the replica test to compare them.

Prints, from one run on one 80/20 per-user split: the loop's fit time and
RMSE at 1, 6 and 12 epochs, then the estimator's (Keras) and surprise's
`SVD` on the same split, so the ratios come from the same machine load.

    python benchmarks/mf_graph_loop.py \
        --data-dir ../shared/data/movielens-latest-small
"""

import argparse
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from aiservice_kit.recommenders import interactions
from aiservice_kit.recommenders import metrics
from aiservice_kit.recommenders._rating_data import encode_triples

K, BATCH, LR, REG = 64, 16384, 0.04, 0.1


@tf.function(reduce_retracing=True)
def train(params, slots, users, items, ratings, mean, epochs, seed):
    """Every epoch and batch of the fit, in graph mode (Keras' Adam)."""
    n = tf.shape(users)[0]
    step = tf.constant(0.0)
    for epoch in tf.range(epochs):
        noise = tf.random.stateless_uniform([n], tf.stack([seed, epoch]))
        order = tf.argsort(noise)
        for start in tf.range(0, n, BATCH):
            idx = order[start : start + BATCH]
            u, i = tf.gather(users, idx), tf.gather(items, idx)
            r = tf.gather(ratings, idx)
            with tf.GradientTape() as tape:
                p, q = tf.gather(params[0], u), tf.gather(params[1], i)
                bu, bi = tf.gather(params[2], u), tf.gather(params[3], i)
                pred = mean + bu + bi + tf.reduce_sum(p * q, 1)
                penalty = REG * (
                    tf.reduce_sum(p * p, 1)
                    + tf.reduce_sum(q * q, 1)
                    + bu**2
                    + bi**2
                )
                loss = tf.reduce_mean(tf.square(r - pred) + penalty)
            grads = tape.gradient(loss, params)
            step += 1.0
            rate = LR * tf.sqrt(1 - 0.999**step) / (1 - 0.9**step)
            for w, g, m, v in zip(
                params, grads, slots[0], slots[1], strict=True
            ):
                g = tf.convert_to_tensor(g)
                m.assign_add((g - m) * 0.1)
                v.assign_add((g * g - v) * 0.001)
                w.assign_sub(m * rate / (tf.sqrt(v) + 1e-7))
    return step


def fit(train_ratings, epochs, seed=0):
    users, items, ratings, user_vocab, item_vocab = encode_triples(
        train_ratings, (0.5, 5.0)
    )
    rng = np.random.default_rng(seed)
    shapes = [
        (len(user_vocab), K),
        (len(item_vocab), K),
        (len(user_vocab),),
        (len(item_vocab),),
    ]
    params = [
        tf.Variable(
            rng.normal(0, 0.1, shape).astype(np.float32)
            if len(shape) == 2
            else np.zeros(shape, np.float32)
        )
        for shape in shapes
    ]
    slots = [[tf.Variable(tf.zeros(s)) for s in shapes] for _ in range(2)]
    mean = float(ratings.mean())
    train(
        params,
        slots,
        tf.constant(users, tf.int32),
        tf.constant(items, tf.int32),
        tf.constant(ratings),
        tf.constant(mean),
        tf.constant(epochs),
        tf.constant(seed),
    )
    arrays = [p.numpy() for p in params]
    return arrays, mean, user_vocab, item_vocab


def rmse(arrays, mean, user_vocab, item_vocab, held):
    p, q, bu, bi = arrays
    users = {u: k for k, u in enumerate(user_vocab.tolist())}
    items = {x: k for k, x in enumerate(item_vocab.tolist())}
    u = np.array([users.get(x, -1) for x in held.user_ids.tolist()])
    i = np.array([items.get(x, -1) for x in held.item_ids.tolist()])
    ku, ki = u >= 0, i >= 0
    dots = np.einsum("ij,ij->i", p[np.maximum(u, 0)], q[np.maximum(i, 0)])
    pred = (
        mean
        + np.where(ku, bu[np.maximum(u, 0)], 0)
        + np.where(ki, bi[np.maximum(i, 0)], 0)
        + np.where(ku & ki, dots, 0)
    )
    return metrics.rmse(held.ratings, np.clip(pred, 0.5, 5.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    args = parser.parse_args()
    ratings = interactions.load_movielens_ratings(args.data_dir)
    test = interactions.random_split(ratings.user_ids, test_fraction=0.2)
    train_part, held = ratings.subset(~test), ratings.subset(test)
    for epochs in (1, 6, 12, 12):  # the first call pays the trace
        started = time.perf_counter()
        arrays, mean, users, items = fit(train_part, epochs)
        seconds = time.perf_counter() - started
        score = rmse(arrays, mean, users, items, held)
        print(
            f"loop, {epochs:2d} epochs  fit {seconds:5.2f} s  RMSE {score:.4f}"
        )
    from aiservice_kit.recommenders import MatrixFactorization

    started = time.perf_counter()
    model = MatrixFactorization(rating_scale=(0.5, 5.0)).fit(train_part)
    seconds = time.perf_counter() - started
    pred = model.predict(held.user_ids, held.item_ids, unknown="baseline")
    score = metrics.rmse(held.ratings, pred)
    print(f"estimator (Keras)  fit {seconds:5.2f} s  RMSE {score:.4f}")
    import surprise

    data = surprise.Dataset(surprise.Reader(rating_scale=(0.5, 5.0)))
    trainset = data.construct_trainset(
        [
            (u, i, float(r), None)
            for u, i, r in zip(
                train_part.user_ids.tolist(),
                train_part.item_ids.tolist(),
                train_part.ratings.tolist(),
                strict=True,
            )
        ]
    )
    svd = surprise.SVD(random_state=0)
    started = time.perf_counter()
    svd.fit(trainset)
    seconds = time.perf_counter() - started
    est = [
        svd.predict(u, i).est
        for u, i in zip(
            held.user_ids.tolist(), held.item_ids.tolist(), strict=True
        )
    ]
    score = metrics.rmse(held.ratings, np.array(est))
    print(f"surprise SVD       fit {seconds:5.2f} s  RMSE {score:.4f}")


if __name__ == "__main__":
    main()
