//! The cart's SIP endpoint: registers with a PBX or SIP trunk and answers (or places) calls with
//! the same capture and encoders as WebRTC calls.
//!
//! Protocol and policy are sans-IO and clock-free: [`registration`] (when and where to
//! REGISTER), [`policy`] (who is answered), [`sdp`] (offer/answer) and [`media`] (RTP in and
//! out of one call). The `driver` feature adds the tokio side on rsipstack: transports,
//! transactions, dialogs and digest authentication come from the stack; our own call and
//! registration types are the seam between them.

pub mod digest;
pub mod dtls;
pub mod dtmf_info;
pub mod guard;
pub mod media;
pub mod outgoing;
pub mod policy;
pub mod registration;
pub mod sdp;
pub mod session_timer;
pub mod srtp;
pub mod webrtc_offer;

#[cfg(feature = "driver")]
mod audio;
#[cfg(feature = "driver")]
mod driver;
#[cfg(feature = "driver")]
mod screened_udp;
#[cfg(feature = "driver")]
mod wss;

#[cfg(feature = "driver")]
pub use driver::{
    CallDirection, CallRecord, CartPort, MediaPort, RingVerdict, SipCommand, SipEndpoint, SipError,
    SipStatus, WebRtcAnswering, WebRtcLeg, WebRtcRequest, run, start, start_with,
};
pub use media::RemoteAudioSink;
