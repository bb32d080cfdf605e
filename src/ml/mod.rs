//! Online models: scaler, SGD linear models, metrics.
