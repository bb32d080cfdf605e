#!/usr/bin/env python3
"""Export the quality datasets for tests/ml_quality.rs and record River's figures for them.

How to run (from the repository root):

    python3 -m venv /tmp/ml-venv
    /tmp/ml-venv/bin/pip install scikit-learn==1.9.1 river==0.26.1 numpy==2.4.6 scipy==1.17.1
    /tmp/ml-venv/bin/python scripts/ml_quality.py            # write data + figures
    /tmp/ml-venv/bin/python scripts/ml_quality.py --check    # recompute, exit 1 on a mismatch

It writes tests/data/breast_cancer.csv (30 features, label 0/1) and
tests/data/diabetes.csv (10 features, target), both in the order of the files
bundled with scikit-learn, then streams the same rows through River's
`StandardScaler | LogisticRegression` and `StandardScaler | LinearRegression`
with default settings and prints River's progressive validation figures; it also
prints `TargetStandardScaler(StandardScaler | LinearRegression)`, which is what
mongo-cdc's linear regression defaults compute.

It then writes the other streams (scikit-learn's wine, River's Agrawal, SEA,
Hyperplane and Friedman generators with fixed seeds, and two drift streams) to
tests/data/<name>.csv. The header names every column; a nominal column's name ends in
`:cat` and its values are category ids 0, 1, 2, ... in order of first appearance (what
the sink passes as `Feature::Cat`); the label is the last column. Every model kind
(`linear`, `hoeffding_tree`, `adaptive_forest`) is run through River with progressive
validation (predict, score, learn) and default settings, and the figures and River's
seconds per sample go to tests/data/river_figures.json. Compare with
`cargo test --release --test ml_quality -- --nocapture` and `cargo bench --bench ml_speed`.

Figures: accuracy and log loss (-ln of the probability given to the true class, clipped
to [1e-15, 1 - 1e-15], i.e. River's CrossEntropy, which is its LogLoss for two classes)
for classification; MAE and RMSE for regression.

Drift: on `sea_drift` (SEA variant 2 for 5,000 rows, then variant 3) and `sea_stationary`
(variant 2 throughout) a HoeffdingTreeClassifier's 0/1 error stream feeds River's ADWIN
(defaults). A detection counts as drift only if the error rate went up (ADWIN also fires
when a young model's error falls); the first such index is recorded, and the accuracy
from the change to the end, without and with `reset` (a fresh tree on detection, the old
one serving until the fresh one has learned 200 samples), as mongo-cdc's DriftMonitor does.
"""

import argparse
import copy
import csv
import json
import math
import pathlib
import sys
import time

import river
import sklearn
from river import compose, drift, evaluate, forest, linear_model, metrics, multiclass, preprocessing, stream, tree
from river.datasets import synth
from sklearn import datasets

EXPECTED = {"scikit-learn": "1.9.1", "river": "0.26.1"}
DATA_DIR = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data"
FIGURES = DATA_DIR / "river_figures.json"
DETECTORS = DATA_DIR / "drift_streams.json"
LOG_LOSS_EPS = 1e-15
SEED = 42
SYNTH_ROWS = 5_000
DRIFT_AT = 5_000
RESET_WARMUP = 200
# A forest's figures move by several points from one seed to the next (Agrawal: 0.67 to 0.79
# accuracy), and River's draws cannot be matched, so forests are compared by their mean over
# these seeds (the Rust test averages the same seeds of its own generator).
FOREST_SEEDS = list(range(10))
# --check tolerance: River is deterministic with fixed seeds, so figures repeat to rounding.
CHECK_TOLERANCE = 1e-9


def export(path, bunch, target_name, as_int):
    """Write one scikit-learn dataset as CSV with a header row, rows in file order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow([name.replace(" ", "_") for name in bunch.feature_names] + [target_name])
        for row, y in zip(bunch.data, bunch.target):
            # repr() of a Python float round-trips exactly, so Rust parses the very same numbers.
            out.writerow([repr(float(v)) for v in row] + [int(y) if as_int else repr(float(y))])


def score(bunch, model, metric, as_int):
    """River's own progressive validation over the rows in file order."""
    rows = stream.iter_array(bunch.data, bunch.target, feature_names=list(bunch.feature_names))
    rows = ((x, int(y) if as_int else float(y)) for x, y in rows)
    return evaluate.progressive_val_score(rows, model, metric)


def legacy_figures():
    """The original output: the two bundled datasets through River's linear pipelines."""
    cancer = datasets.load_breast_cancer()
    diabetes = datasets.load_diabetes()
    export(DATA_DIR / "breast_cancer.csv", cancer, "label", as_int=True)
    export(DATA_DIR / "diabetes.csv", diabetes, "target", as_int=False)

    def scaled_logistic():
        return compose.Pipeline(preprocessing.StandardScaler(), linear_model.LogisticRegression())

    def scaled_linear():
        return compose.Pipeline(preprocessing.StandardScaler(), linear_model.LinearRegression())

    runs = [
        ("breast_cancer", "StandardScaler | LogisticRegression", cancer, scaled_logistic(),
         metrics.Accuracy() + metrics.LogLoss(), True),
        ("diabetes", "StandardScaler | LinearRegression", diabetes, scaled_linear(),
         metrics.MAE() + metrics.RMSE(), False),
        # What mongo-cdc's regression defaults compute: the same pipeline on a target
        # standardised online.
        ("diabetes", "TargetStandardScaler(StandardScaler | LinearRegression)", diabetes,
         preprocessing.TargetStandardScaler(regressor=scaled_linear()),
         metrics.MAE() + metrics.RMSE(), False),
    ]
    print(f"river {river.__version__}, scikit-learn {sklearn.__version__}, progressive_val_score, defaults")
    for name, label, bunch, model, metric, as_int in runs:
        figures = "  ".join(f"{m.__class__.__name__} {m.get():.6f}" for m in score(bunch, model, metric, as_int))
        print(f"{name:<14} {label:<56} {figures}")


class Stream:
    """A stream as the Rust tests read it: column names, which are nominal, rows and labels."""

    def __init__(self, name, task, columns, nominal, rows, labels):
        self.name, self.task, self.columns, self.nominal = name, task, columns, set(nominal)
        self.rows, self.labels = rows, labels

    def write(self):
        path = DATA_DIR / f"{self.name}.csv"
        with path.open("w", newline="") as f:
            out = csv.writer(f, lineterminator="\n")
            label = "label" if self.task == "classification" else "target"
            out.writerow([c + (":cat" if c in self.nominal else "") for c in self.columns] + [label])
            for x, y in zip(self.rows, self.labels):
                values = [str(x[c]) if c in self.nominal else repr(float(x[c])) for c in self.columns]
                out.writerow(values + [y if self.task == "classification" else repr(float(y))])


def from_bunch(name, bunch, task):
    columns = [n.replace(" ", "_") for n in bunch.feature_names]
    rows = [{c: float(v) for c, v in zip(columns, row)} for row in bunch.data]
    labels = [int(y) if task == "classification" else float(y) for y in bunch.target]
    return Stream(name, task, columns, [], rows, labels)


def from_generator(name, task, gen, n, nominal=()):
    """Take n rows; nominal values become ids in order of first appearance per column."""
    rows, labels, ids = [], [], {c: {} for c in nominal}
    columns = None
    for x, y in gen.take(n):
        columns = columns or [str(c) for c in x]
        row = {}
        for c, v in x.items():
            c = str(c)
            row[c] = ids[c].setdefault(v, len(ids[c])) if c in ids else float(v)
        rows.append(row)
        labels.append(int(y) if task == "classification" else float(y))
    return Stream(name, task, columns, nominal, rows, labels)


def sea_concat(name, variants):
    rows, labels = [], []
    for variant, seed in variants:
        part = from_generator(name, "classification", synth.SEA(variant=variant, seed=seed), DRIFT_AT)
        rows += part.rows
        labels += part.labels
    return Stream(name, "classification", part.columns, [], rows, labels)


def streams():
    return [
        from_bunch("breast_cancer", datasets.load_breast_cancer(), "classification"),
        from_bunch("wine", datasets.load_wine(), "classification"),
        from_generator("agrawal", "classification", synth.Agrawal(classification_function=2, seed=SEED,
                       perturbation=0.05), SYNTH_ROWS, nominal=("elevel", "car", "zipcode")),
        from_generator("sea", "classification", synth.SEA(variant=0, noise=0.05, seed=SEED), SYNTH_ROWS),
        from_generator("hyperplane", "classification", synth.Hyperplane(seed=SEED, n_features=10), SYNTH_ROWS),
        from_bunch("diabetes", datasets.load_diabetes(), "regression"),
        from_generator("friedman", "regression", synth.Friedman(seed=SEED), SYNTH_ROWS),
    ]


def linear(s):
    numeric = [c for c in s.columns if c not in s.nominal]
    scaled = compose.Select(*numeric) | preprocessing.StandardScaler()
    if s.nominal:
        scaled = scaled + (compose.Select(*sorted(s.nominal)) | preprocessing.OneHotEncoder())
    if s.task == "classification":
        # River's LogisticRegression is binary; ours turns one-vs-rest at the third class.
        if len(set(s.labels)) > 2:
            return scaled | multiclass.OneVsRestClassifier(linear_model.LogisticRegression())
        return scaled | linear_model.LogisticRegression()
    return preprocessing.TargetStandardScaler(regressor=scaled | linear_model.LinearRegression())


def hoeffding_tree(s):
    nominal = sorted(s.nominal) or None
    if s.task == "classification":
        return tree.HoeffdingTreeClassifier(nominal_attributes=nominal)
    return tree.HoeffdingTreeRegressor(nominal_attributes=nominal)


def adaptive_forest(s, seed):
    nominal = sorted(s.nominal) or None
    if s.task == "classification":
        return forest.ARFClassifier(nominal_attributes=nominal, seed=seed)
    return forest.ARFRegressor(nominal_attributes=nominal, seed=seed)


MODELS = {
    "linear": (linear, "StandardScaler (+ OneHotEncoder) | LogisticRegression (OneVsRestClassifier past two "
                       "classes); TargetStandardScaler(StandardScaler (+ OneHotEncoder) | LinearRegression)"),
    "hoeffding_tree": (hoeffding_tree, "HoeffdingTreeClassifier / HoeffdingTreeRegressor"),
    "adaptive_forest": (adaptive_forest, f"ARFClassifier / ARFRegressor, mean over seeds 0-{len(FOREST_SEEDS) - 1}"),
}


def predict_class(model, x):
    proba = model.predict_proba_one(x)
    return proba, (max(proba, key=proba.get) if proba else None)


def progressive(model, s):
    """Predict, score, learn over the stream; returns figures, seconds per sample, errors."""
    n = correct = 0
    loss = abs_err = sq_err = 0.0
    errors = []
    first_correct = False
    start = time.perf_counter()
    for x, y in zip(s.rows, s.labels):
        if s.task == "classification":
            proba, y_pred = predict_class(model, x)
            p = min(max(proba.get(y, 0.0), LOG_LOSS_EPS), 1.0 - LOG_LOSS_EPS)
            loss -= math.log(p)
            correct += y_pred == y
            errors.append(int(y_pred != y))
            if n == 0:
                first_correct = y_pred == y
        else:
            err = y - model.predict_one(x)
            abs_err += abs(err)
            sq_err += err * err
        model.learn_one(x, y)
        n += 1
    seconds = (time.perf_counter() - start) / n
    if s.task == "classification":
        # River's first prediction comes before any label: a binary LogisticRegression guesses
        # False (class 0), which mongo-cdc cannot do (it has no class to name yet).
        return {"accuracy": correct / n, "log_loss": loss / n, "first_prediction_correct": first_correct}, seconds, errors
    return {"mae": abs_err / n, "rmse": math.sqrt(sq_err / n)}, seconds, errors


def first_increase(errors, start=0):
    """Index of ADWIN's first detection at or after `start` where the error rate went up."""
    adwin = drift.ADWIN()
    for i, e in enumerate(errors):
        if adwin.drift_detected:
            total, width = 0.0, 0
        else:
            total, width = adwin.total, adwin.width
        adwin.update(e)
        if adwin.drift_detected and i >= start and adwin.estimation > (total + e) / (width + 1):
            return i
    return None


def with_reset(s):
    """A HoeffdingTreeClassifier whose ADWIN-detected error increase starts a fresh tree; the
    old tree serves until the fresh one has learned RESET_WARMUP samples."""
    serving, fresh, fresh_n = tree.HoeffdingTreeClassifier(), None, 0
    adwin = drift.ADWIN()
    correct_after = 0
    detections = []
    for i, (x, y) in enumerate(zip(s.rows, s.labels)):
        _, y_pred = predict_class(serving, x)
        if i >= DRIFT_AT:
            correct_after += y_pred == y
        err = int(y_pred != y)
        serving.learn_one(x, y)
        if fresh is not None:
            fresh.learn_one(x, y)
            fresh_n += 1
            if fresh_n >= RESET_WARMUP:
                # The errors so far were the old tree's; the new one starts its own window.
                serving, fresh, adwin = fresh, None, drift.ADWIN()
        total, width = (0.0, 0) if adwin.drift_detected else (adwin.total, adwin.width)
        adwin.update(err)
        if adwin.drift_detected and adwin.estimation > (total + err) / (width + 1):
            detections.append(i)
            fresh, fresh_n = tree.HoeffdingTreeClassifier(), 0
    return correct_after / (len(s.rows) - DRIFT_AT), detections


def drift_figures():
    out = {}
    for s in (sea_concat("sea_drift", [(2, 1), (3, 2)]), sea_concat("sea_stationary", [(2, 1), (2, 3)])):
        s.write()
        _, _, errors = progressive(tree.HoeffdingTreeClassifier(), s)
        after = sum(1 - e for e in errors[DRIFT_AT:]) / (len(errors) - DRIFT_AT)
        reset_accuracy, detections = with_reset(s)
        out[s.name] = {
            "model": "HoeffdingTreeClassifier",
            "drift_at": DRIFT_AT if s.name == "sea_drift" else None,
            "first_increase_detection": first_increase(errors),
            "accuracy_after_change": after,
            "accuracy_after_change_with_reset": reset_accuracy,
            "reset_detections": detections,
        }
        print(f"{s.name:<15} {json.dumps(out[s.name])}")
    return out


def detector_streams():
    """Streams for the drift detectors' unit tests, with River's detection indices."""
    import random

    rng = random.Random(12345)
    doc = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)  # ADWIN's docstring example
    rng = random.Random(7)
    errors = [int(rng.random() < 0.1) for _ in range(3000)] + [int(rng.random() < 0.4) for _ in range(3000)]
    gauss = [round(rng.gauss(0.0, 1.0), 6) for _ in range(2000)] + [round(rng.gauss(0.8, 1.0), 6) for _ in range(2000)]
    calm = [int(rng.random() < 0.2) for _ in range(5000)]
    ramp = [round(i / 1000 + rng.random(), 6) for i in range(3000)]
    out = {}
    for name, values in (("doc", doc), ("errors", errors), ("gauss", gauss), ("calm", calm), ("ramp", ramp)):
        found = {}
        for label, detector in (("adwin", drift.ADWIN()), ("page_hinkley", drift.PageHinkley())):
            found[label] = []
            for i, v in enumerate(values):
                detector.update(v)
                if detector.drift_detected:
                    found[label].append(i)
        out[name] = {"values": values, **found}
        print(f"detector stream {name:<7} adwin {found['adwin'][:8]}  page_hinkley {found['page_hinkley'][:8]}")
    return out


def compute():
    figures = {"river": river.__version__, "scikit-learn": sklearn.__version__, "streams": {}, "drift": {}}
    for s in streams():
        s.write()
        entry = {"task": s.task, "rows": len(s.rows), "models": {}}
        for kind, (build, label) in MODELS.items():
            if kind == "adaptive_forest":
                runs = [progressive(build(s, seed), s) for seed in FOREST_SEEDS]
                keys = [k for k in runs[0][0] if k != "first_prediction_correct"]
                result = {k: sum(r[0][k] for r in runs) / len(runs) for k in keys}
                result["seeds"] = FOREST_SEEDS
                result["per_seed"] = {k: [r[0][k] for r in runs] for k in keys}
                seconds = sorted(r[1] for r in runs)[len(runs) // 2]
            else:
                result, seconds, _ = progressive(build(s), s)
            entry["models"][kind] = {"river_model": label, **result, "seconds_per_sample": seconds}
            shown = "  ".join(f"{k} {v:.6f}" for k, v in result.items() if isinstance(v, float))
            print(f"{s.name:<14} {kind:<16} {shown}  {seconds * 1e6:9.1f} us/sample")
        figures["streams"][s.name] = entry
    figures["drift"] = drift_figures()
    return figures


def check(committed, fresh):
    """Every committed figure (not timings) must be reproduced."""
    bad = []

    def walk(a, b, path):
        if isinstance(a, dict):
            for k, v in a.items():
                if k != "seconds_per_sample":
                    walk(v, b.get(k) if isinstance(b, dict) else None, f"{path}.{k}")
        elif isinstance(a, float) and isinstance(b, float):
            if abs(a - b) > CHECK_TOLERANCE * max(1.0, abs(a)):
                bad.append(f"{path}: committed {a}, now {b}")
        elif a != b:
            bad.append(f"{path}: committed {a!r}, now {b!r}")

    walk(committed, fresh, "")
    return bad


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="recompute; exit 1 if a committed figure changed")
    args = parser.parse_args()
    for name, version in (("scikit-learn", sklearn.__version__), ("river", river.__version__)):
        if version != EXPECTED[name]:
            print(f"warning: {name} {version} installed, figures were taken with {EXPECTED[name]}")
    legacy_figures()
    fresh = compute()
    streams_fresh = detector_streams()
    if args.check:
        bad = check(json.loads(FIGURES.read_text()), fresh)
        bad += check(json.loads(DETECTORS.read_text()), streams_fresh)
        for line in bad:
            print(f"MISMATCH {line}")
        print("figures reproduced" if not bad else f"{len(bad)} figures not reproduced")
        sys.exit(1 if bad else 0)
    FIGURES.write_text(json.dumps(fresh, indent=2) + "\n")
    DETECTORS.write_text(json.dumps(streams_fresh, separators=(",", ":")) + "\n")
    print(f"wrote {FIGURES} and {DETECTORS}")


if __name__ == "__main__":
    main()
