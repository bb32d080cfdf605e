//! The quality streams in `tests/data/` (written by `scripts/ml_quality.py`), shared by
//! `tests/ml_quality.rs` and `benches/ml_speed.rs`.

#![allow(dead_code)]

use mongo_cdc::ml::{Column, Feature, Schema, Task};
use serde_json::Value;

/// A stream from `tests/data/<name>.csv`: the header names the columns (`:cat` marks a
/// nominal one, whose values are category ids), the label is the last column.
pub struct Stream {
    pub schema: Schema,
    pub task: Task,
    pub rows: Vec<(Vec<Feature>, Value)>,
}

pub fn data_path(name: &str) -> String {
    format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Load `tests/data/<name>.csv`; the label column is called `label` for classification
/// (integers) and `target` for regression.
pub fn load(name: &str) -> Stream {
    let path = data_path(&format!("{name}.csv"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    let (label, columns) = header.split_last().expect("a label column");
    let task = if *label == "label" { Task::Classification } else { Task::Regression };
    let nominal: Vec<bool> = columns.iter().map(|h| h.ends_with(":cat")).collect();
    let schema = Schema::new(
        columns
            .iter()
            .map(|h| match h.strip_suffix(":cat") {
                Some(name) => Column::nominal(name),
                None => Column::numeric(*h),
            })
            .collect(),
    )
    .unwrap();
    let rows = lines
        .map(|line| {
            let values: Vec<&str> = line.split(',').collect();
            let (y, x) = values.split_last().expect("a row");
            let parse = |v: &str| v.parse::<f64>().unwrap_or_else(|e| panic!("{path}: {v}: {e}"));
            let x = x
                .iter()
                .zip(&nominal)
                .map(
                    |(v, &cat)| {
                        if cat { Feature::Cat(v.parse().expect("a category id")) } else { Feature::Num(parse(v)) }
                    },
                )
                .collect();
            let y = match task {
                Task::Classification => Value::from(y.parse::<i64>().expect("an integer class")),
                Task::Regression => Value::from(parse(y)),
            };
            (x, y)
        })
        .collect();
    Stream { schema, task, rows }
}

/// `tests/data/river_figures.json`.
pub fn river_figures() -> Value {
    let path = data_path("river_figures.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
}
