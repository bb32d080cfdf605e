//! What a sample is: one [`Feature`] per column of a [`Schema`], checked before any model
//! sees it.

use serde::{Deserialize, Serialize};

use super::error::MlError;

/// The largest category id a nominal column accepts. Ids are handed out online in order of
/// first appearance (or are hash buckets), so a larger one is a caller's bug, and refusing it
/// keeps a stray id from making a model allocate for every id below it.
pub const MAX_CATEGORY_ID: u32 = 1 << 20;

/// One column's value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Feature {
    /// A number, in a numeric column. Missing values are the caller's business (it passes
    /// `Num(0.0)`, possibly with an extra indicator column).
    Num(f64),
    /// The id of a category within its nominal column: 0, 1, 2, ... in order of first
    /// appearance, assigned by the caller; a hashed feature is `Cat(bucket)`.
    Cat(u32),
}

impl Feature {
    /// The number, if this is a numeric feature.
    #[inline]
    pub fn num(self) -> Option<f64> {
        match self {
            Feature::Num(v) => Some(v),
            Feature::Cat(_) => None,
        }
    }
}

/// What a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnKind {
    /// Numbers ([`Feature::Num`]).
    Numeric,
    /// Categories ([`Feature::Cat`]).
    Nominal,
}

/// One column: its kind, and its name for reporting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// The name shown in errors and reports.
    pub name: String,
    /// Numeric or nominal.
    pub kind: ColumnKind,
}

impl Column {
    /// A numeric column.
    pub fn numeric(name: impl Into<String>) -> Self {
        Self { name: name.into(), kind: ColumnKind::Numeric }
    }

    /// A nominal column.
    pub fn nominal(name: impl Into<String>) -> Self {
        Self { name: name.into(), kind: ColumnKind::Nominal }
    }
}

/// The columns a model is built for, in sample order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Schema(Vec<Column>);

impl Schema {
    /// A schema of `columns` (at least one).
    pub fn new(columns: Vec<Column>) -> Result<Self, MlError> {
        if columns.is_empty() {
            return Err(MlError::Config("a model needs at least one feature"));
        }
        Ok(Self(columns))
    }

    /// `n` numeric columns named `x0`, `x1`, ...
    pub fn numeric(n: usize) -> Result<Self, MlError> {
        Self::new((0..n).map(|i| Column::numeric(format!("x{i}"))).collect())
    }

    /// The columns.
    pub fn columns(&self) -> &[Column] {
        &self.0
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true for a schema built with [`Schema::new`]; a checkpoint's check.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of numeric columns.
    pub fn n_numeric(&self) -> usize {
        self.0.iter().filter(|c| c.kind == ColumnKind::Numeric).count()
    }

    /// True if column `i` is nominal.
    #[inline]
    pub fn is_nominal(&self, i: usize) -> bool {
        self.0[i].kind == ColumnKind::Nominal
    }

    /// Check that `x` fits: the column count, each feature's kind, finite numbers, category ids
    /// within [`MAX_CATEGORY_ID`].
    pub fn check(&self, x: &[Feature]) -> Result<(), MlError> {
        if x.len() != self.0.len() {
            return Err(MlError::FeatureCount { expected: self.0.len(), got: x.len() });
        }
        for (index, (f, c)) in x.iter().zip(&self.0).enumerate() {
            match (f, c.kind) {
                (Feature::Num(v), ColumnKind::Numeric) if v.is_finite() => {}
                (Feature::Num(_), ColumnKind::Numeric) => return Err(MlError::NonFiniteFeature { index }),
                (&Feature::Cat(id), ColumnKind::Nominal) if id <= MAX_CATEGORY_ID => {}
                (&Feature::Cat(id), ColumnKind::Nominal) => {
                    return Err(MlError::CategoryId { index, id, max: MAX_CATEGORY_ID });
                }
                (_, kind) => {
                    let expected = if kind == ColumnKind::Numeric { "a number" } else { "a category" };
                    return Err(MlError::FeatureKind { index, name: c.name.clone(), expected });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_checked_column_by_column() {
        let s = Schema::new(vec![Column::numeric("age"), Column::nominal("city")]).unwrap();
        assert_eq!(s.check(&[Feature::Num(3.0), Feature::Cat(2)]), Ok(()));
        assert_eq!(s.check(&[Feature::Num(3.0)]), Err(MlError::FeatureCount { expected: 2, got: 1 }));
        assert_eq!(s.check(&[Feature::Num(f64::NAN), Feature::Cat(0)]), Err(MlError::NonFiniteFeature { index: 0 }));
        assert_eq!(
            s.check(&[Feature::Num(1.0), Feature::Num(1.0)]),
            Err(MlError::FeatureKind { index: 1, name: "city".into(), expected: "a category" })
        );
        assert!(matches!(s.check(&[Feature::Num(1.0), Feature::Cat(u32::MAX)]), Err(MlError::CategoryId { .. })));
        assert!(Schema::new(vec![]).is_err());
        assert_eq!(s.n_numeric(), 1);
    }

    #[test]
    fn schema_serialises_as_a_list_of_columns() {
        let s = Schema::new(vec![Column::nominal("city")]).unwrap();
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v, serde_json::json!([{"name": "city", "kind": "nominal"}]));
        assert_eq!(serde_json::from_value::<Schema>(v).unwrap(), s);
    }
}
