#!/usr/bin/env python3
"""Export the quality datasets for tests/ml_quality.rs and print River's baseline figures.

How to run (from the repository root):

    python3 -m venv /tmp/ml-venv
    /tmp/ml-venv/bin/pip install scikit-learn==1.9.1 river==0.26.1 numpy==2.4.6 scipy==1.17.1
    /tmp/ml-venv/bin/python scripts/ml_quality.py

It writes tests/data/breast_cancer.csv (30 features, label 0/1) and
tests/data/diabetes.csv (10 features, target), both in the order of the files
bundled with scikit-learn, then streams the same rows through River's
`StandardScaler | LogisticRegression` and `StandardScaler | LinearRegression`
with default settings and prints River's progressive validation figures; it also
prints `TargetStandardScaler(StandardScaler | LinearRegression)`, which is what
mongo-cdc's regression defaults compute. Compare them with
`cargo test --release --test ml_quality -- --nocapture`.
"""

import csv
import pathlib

import river
import sklearn
from river import compose, evaluate, linear_model, metrics, preprocessing, stream
from sklearn import datasets

EXPECTED = {"scikit-learn": "1.9.1", "river": "0.26.1"}
DATA_DIR = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data"


def export(path, bunch, target_name, as_int):
    """Write one dataset as CSV with a header row, rows in file order."""
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


def main():
    for name, version in (("scikit-learn", sklearn.__version__), ("river", river.__version__)):
        if version != EXPECTED[name]:
            print(f"warning: {name} {version} installed, figures were taken with {EXPECTED[name]}")

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


if __name__ == "__main__":
    main()
