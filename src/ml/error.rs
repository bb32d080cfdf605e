//! The error a model returns when a sample, a label or a configuration cannot be used.

use thiserror::Error;

/// Why a model refused a sample or a configuration. Nothing is learned from a refused sample.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum MlError {
    /// The sample does not have the number of columns the model was built for.
    #[error("expected {expected} features, got {got}")]
    FeatureCount {
        /// The model's column count.
        expected: usize,
        /// The length of the sample given.
        got: usize,
    },
    /// A numeric feature is NaN or infinite, which would poison the running statistics for good.
    #[error("feature {index} is not a finite number")]
    NonFiniteFeature {
        /// Position of the offending feature.
        index: usize,
    },
    /// A feature of the wrong kind for its column: a category in a numeric column or a number
    /// in a nominal one.
    #[error("feature {index} ({name}) must be {expected}")]
    FeatureKind {
        /// Position of the offending feature.
        index: usize,
        /// The column's name.
        name: String,
        /// What the column holds: `a number` or `a category`.
        expected: &'static str,
    },
    /// A category id too large to be an id handed out in order of first appearance (or a hash
    /// bucket); it would make every model allocate for all the ids below it.
    #[error("feature {index}: category id {id} is above the limit {max}")]
    CategoryId {
        /// Position of the offending feature.
        index: usize,
        /// The id given.
        id: u32,
        /// [`MAX_CATEGORY_ID`](super::MAX_CATEGORY_ID).
        max: u32,
    },
    /// A classification label that is not a bool, a string or an integer.
    #[error("a class label must be a JSON bool, string or integer, got {got}")]
    BadClassLabel {
        /// The JSON kind that was given (`float`, `null`, `object`, ...).
        got: &'static str,
    },
    /// A regression target that is not a finite JSON number.
    #[error("a regression target must be a JSON number, got {got}")]
    BadTarget {
        /// The JSON kind that was given (`string`, `bool`, ...).
        got: &'static str,
    },
    /// A configuration value out of range.
    #[error("invalid model config: {0}")]
    Config(&'static str),
    /// One hyper-parameter out of range, named as in the configuration.
    #[error("invalid hyper-parameter {param}: {reason}")]
    Param {
        /// The hyper-parameter's name.
        param: &'static str,
        /// What it must be.
        reason: &'static str,
    },
    /// Hyper-parameters that do not parse: an unknown name or a value of the wrong type.
    #[error("invalid hyper-parameters for {kind}: {reason}")]
    Params {
        /// The model kind they were given for.
        kind: &'static str,
        /// serde's explanation, naming the field.
        reason: String,
    },
}

/// The JSON kind of `v`, for error messages.
pub(super) fn json_kind(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
