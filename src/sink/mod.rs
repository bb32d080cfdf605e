//! The ML sink (see issue: consume -> apply -> models -> HTTP).
