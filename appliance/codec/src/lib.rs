//! telecart-codec
