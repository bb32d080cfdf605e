//! The error a model returns when a sample or a configuration cannot be used.

use thiserror::Error;

/// Why a model refused a sample or a configuration. Nothing is learned from a refused sample.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum MlError {
    /// The feature vector does not have the length the model was built for.
    #[error("expected {expected} features, got {got}")]
    FeatureCount {
        /// The model's feature count.
        expected: usize,
        /// The length of the vector given.
        got: usize,
    },
    /// A feature is NaN or infinite, which would poison the running statistics for good.
    #[error("feature {index} is not a finite number")]
    NonFiniteFeature {
        /// Position of the offending feature.
        index: usize,
    },
    /// A classification label that is not a bool, a string or an integer.
    #[error("a class label must be a JSON bool, string or integer, got {got}")]
    BadClassLabel {
        /// The JSON kind that was given (`float`, `null`, `object`, ...).
        got: &'static str,
    },
    /// A regression target that is not a JSON number.
    #[error("a regression target must be a JSON number, got {got}")]
    BadTarget {
        /// The JSON kind that was given (`string`, `bool`, ...).
        got: &'static str,
    },
    /// A configuration value out of range.
    #[error("invalid model config: {0}")]
    Config(&'static str),
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
