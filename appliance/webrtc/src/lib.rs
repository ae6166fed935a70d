//! The WebRTC side of telecart that needs no socket and no clock: how WHIP
//! responses are read (RFC 9725), what travels on the `telecart` data channel,
//! and how call quality is scored. The tokio session driver that runs str0m
//! lives in `telecart-runtime`.

pub mod datachannel;
pub mod quality;
pub mod whip;
