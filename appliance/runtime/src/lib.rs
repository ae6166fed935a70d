//! telecart-runtime
