//! telecart-devices
