//! telecart-stamp
