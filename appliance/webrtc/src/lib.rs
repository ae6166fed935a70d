//! The WebRTC side of telecart that needs no socket and no clock: how WHIP
//! responses are read (RFC 9725), the trickle/ICE-restart fragments PATCHed
//! to a WHIP session, when a network change calls for an ICE restart, what
//! travels on the `telecart` data channel, and how call quality is scored.
//! The tokio session driver that runs str0m lives in `telecart-runtime`.

pub mod datachannel;
pub mod quality;
pub mod roam;
pub mod trickle;
pub mod whip;
