#!/usr/bin/env python3
"""Write the orders stream with injected anomalies for tests/anomaly.rs, and River's and
rrcf's figures on it.

How to run (from the repository root):

    python3 -m venv /tmp/anom-venv
    /tmp/anom-venv/bin/pip install river==0.26.1 rrcf==0.4.4 numpy==2.4.6
    /tmp/anom-venv/bin/python scripts/anomaly_quality.py

It writes tests/data/orders_anomaly.csv (columns price, quantity, is_anomaly; fixed seed
2026) and tests/data/anomaly_figures.json. Ordinary orders: a log-normal price around 50 and
1 to 5 items. From row 300 on, 2 % of the orders are anomalies, a third each: an outlying
price (8 to 20 times), a bulk quantity (50 to 200 items), or both at once.

Every row is scored, then learned, in stream order; a row is flagged when its score is at or
above the running 0.99 quantile of the scores before it (River's `stats.Quantile`, P²):

- River: `QuantileFilter(MinMaxScaler() | HalfSpaceTrees(seed=s), q=0.99,
  protect_anomaly_detector=False)` with defaults (10 trees, height 8, window 250): `score_one`,
  `classify`, `learn_one`, for seeds 1..10; the median precision, recall and F1. River flags
  every row of the first window (its score is 0, at the quantile 0); `river_warmup` is the same
  with no flag before the window is learned, as the sink does: the figure the sink must reach.
- rrcf: 40 trees, each a sliding window of 256 points, the score the mean CoDisp of the point
  (inserted, scored, and the oldest point forgotten once a tree holds 256), seed 0; flags as
  above, no flag before 256 points.

River's seconds per sample (score + learn) are recorded for `cargo bench --bench ml_speed`.
"""

import csv
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import river
import rrcf
from river import anomaly, compose, preprocessing, stats

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
ROWS = 5000
CLEAN = 300
RATE = 0.02
SEED = 2026
Q = 0.99


def make_stream():
    rng = random.Random(SEED)
    rows = []
    for i in range(ROWS):
        price = round(math.exp(rng.gauss(math.log(50), 0.35)), 2)
        quantity = rng.randint(1, 5)
        truth = 0
        if i >= CLEAN and rng.random() < RATE:
            truth = 1
            kind = rng.randrange(3)
            if kind in (0, 2):
                price = round(price * rng.uniform(8, 20), 2)
            if kind in (1, 2):
                quantity = rng.randint(50, 200)
        rows.append((price, quantity, truth))
    return rows


def prf(flags, truth):
    tp = sum(1 for f, t in zip(flags, truth) if f and t)
    fp = sum(1 for f, t in zip(flags, truth) if f and not t)
    fn = sum(1 for f, t in zip(flags, truth) if not f and t)
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4)}


def river_run(rows, seed, warmup):
    f = anomaly.QuantileFilter(
        compose.Pipeline(preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=seed)),
        q=Q,
        protect_anomaly_detector=False,
    )
    flags = []
    start = time.perf_counter()
    for i, (price, quantity, _) in enumerate(rows):
        x = {"price": price, "quantity": float(quantity)}
        score = f.score_one(x)
        flag = f.classify(score)
        f.learn_one(x)
        flags.append(flag and i >= warmup)
    return flags, (time.perf_counter() - start) / len(rows)


def rrcf_run(rows, num_trees=40, tree_size=256, seed=0):
    np.random.seed(seed)
    forest = [rrcf.RCTree() for _ in range(num_trees)]
    q = stats.Quantile(Q)
    flags = []
    start = time.perf_counter()
    for i, (price, quantity, _) in enumerate(rows):
        point = np.array([price, float(quantity)])
        codisp = 0.0
        for tree in forest:
            if len(tree.leaves) >= tree_size:
                tree.forget_point(i - tree_size)
            tree.insert_point(point, index=i)
            codisp += tree.codisp(i)
        score = codisp / num_trees
        threshold = q.get()
        flags.append(i >= tree_size and threshold is not None and score >= threshold)
        q.update(score)
    return flags, (time.perf_counter() - start) / len(rows)


def median_of(runs):
    return {k: round(statistics.median(r[k] for r in runs), 4) for k in ("precision", "recall", "f1")}


def main():
    rows = make_stream()
    DATA.mkdir(parents=True, exist_ok=True)
    with open(DATA / "orders_anomaly.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["price", "quantity", "is_anomaly"])
        w.writerows(rows)
    truth = [t for _, _, t in rows]
    as_is, warm, seconds = [], [], []
    for seed in range(1, 11):
        flags, s = river_run(rows, seed, 0)
        as_is.append(prf(flags, truth))
        flags, s = river_run(rows, seed, 250)
        warm.append(prf(flags, truth))
        seconds.append(s)
    flags, rrcf_seconds = rrcf_run(rows)
    figures = {
        "river": river.__version__,
        "rrcf": "0.4.4",
        "rows": ROWS,
        "anomalies": sum(truth),
        "q": Q,
        "river_hst": {**median_of(as_is), "per_seed": as_is},
        "river_hst_warmup": {**median_of(warm), "per_seed": warm},
        "river_hst_seconds_per_sample": statistics.median(seconds),
        "rrcf": {**prf(flags, truth), "seconds_per_sample": rrcf_seconds},
    }
    (DATA / "anomaly_figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps({k: v for k, v in figures.items() if k not in ()}, indent=None)[:2000])


if __name__ == "__main__":
    sys.exit(main())
