//! A sans-IO STUN Binding client (RFC 8489) for server-reflexive candidates.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::codec::message::{Class, Integrity, Message, Method, TransactionId};
use crate::error::TurnError;
use crate::retransmit::{Due, Schedule};

/// One Binding transaction over UDP: asks a STUN server which address it sees us at.
///
/// Send what [`poll_transmit`](Self::poll_transmit) gives to the server, feed datagrams from
/// it to [`handle_input`](Self::handle_input), call [`handle_timeout`](Self::handle_timeout)
/// at [`poll_timeout`](Self::poll_timeout), until [`result`](Self::result) is `Some`.
#[derive(Debug)]
pub struct StunBinding {
    tid: TransactionId,
    bytes: Vec<u8>,
    schedule: Schedule,
    transmits: VecDeque<Vec<u8>>,
    result: Option<Result<SocketAddr, TurnError>>,
}

impl StunBinding {
    /// A Binding request ready to send at `now`, retransmitted with initial timeout `rto`
    /// (500 ms is the RFC default).
    pub fn new(now: Instant, rto: Duration) -> Result<Self, TurnError> {
        let tid = TransactionId::random();
        let bytes =
            Message::new(Class::Request, Method::BINDING, tid).encode(Integrity::None, true)?;
        Ok(Self {
            tid,
            bytes: bytes.clone(),
            schedule: Schedule::start(now, rto, false),
            transmits: VecDeque::from([bytes]),
            result: None,
        })
    }

    /// The next datagram to send to the server. Worth calling after `new` and
    /// [`handle_timeout`](Self::handle_timeout).
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout); `None` once there is a result.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.result.is_some() {
            None
        } else {
            Some(self.schedule.deadline().0)
        }
    }

    /// Retransmits or gives up, as the schedule says.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.result.is_some() {
            return;
        }
        let (at, due) = self.schedule.deadline();
        if at > now {
            return;
        }
        match due {
            Due::Retransmit => {
                self.schedule.retransmitted(now);
                self.transmits.push_back(self.bytes.clone());
            }
            Due::GiveUp => {
                self.result = Some(Err(TurnError::Timeout { method: "Binding" }));
            }
        }
    }

    /// A datagram from the server. Returns `Ok(true)` if it answered this transaction (the
    /// result is then set), `Ok(false)` if it was something else, an error if it was
    /// malformed.
    pub fn handle_input(&mut self, bytes: &[u8]) -> Result<bool, TurnError> {
        let msg = Message::decode(bytes)?;
        if msg.transaction_id != self.tid
            || msg.method != Method::BINDING
            || !matches!(msg.class, Class::Success | Class::Error)
            || self.result.is_some()
        {
            return Ok(false);
        }
        let result = if !msg.unknown_required().is_empty() {
            Err(TurnError::UnknownRequiredAttributes(
                msg.unknown_required().to_vec(),
            ))
        } else if msg.class == Class::Error {
            let (code, reason) = msg
                .error_code()
                .map_or((0, String::new()), |e| (e.code, e.reason.clone()));
            Err(TurnError::ServerError {
                method: "Binding",
                code,
                reason,
            })
        } else {
            msg.mapped_address().ok_or(TurnError::MissingAttribute {
                method: "Binding",
                attr: "XOR-MAPPED-ADDRESS",
            })
        };
        self.result = Some(result);
        Ok(true)
    }

    /// The mapped address, or why there is none; `None` while still waiting.
    pub fn result(&self) -> Option<Result<SocketAddr, TurnError>> {
        self.result.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::attribute::{Attribute, ErrorCode};

    fn answer(req: &[u8], class: Class, attr: Attribute) -> Vec<u8> {
        let req = Message::decode(req).unwrap();
        Message::new(class, Method::BINDING, req.transaction_id)
            .with(attr)
            .encode(Integrity::None, true)
            .unwrap()
    }

    #[test]
    fn binding_reports_the_mapped_address() {
        let t0 = Instant::now();
        let mut b = StunBinding::new(t0, Duration::from_millis(500)).unwrap();
        let req = b.poll_transmit().unwrap();
        assert!(b.poll_transmit().is_none());
        let mapped: SocketAddr = "203.0.113.5:5000".parse().unwrap();
        // Someone else's response is not ours.
        let other = Message::new(Class::Success, Method::BINDING, TransactionId([1; 12]))
            .with(Attribute::XorMappedAddress(mapped))
            .encode(Integrity::None, false)
            .unwrap();
        assert_eq!(b.handle_input(&other), Ok(false));
        assert_eq!(
            b.handle_input(&answer(
                &req,
                Class::Success,
                Attribute::XorMappedAddress(mapped)
            )),
            Ok(true)
        );
        assert_eq!(b.result(), Some(Ok(mapped)));
        assert_eq!(b.poll_timeout(), None);
        assert!(b.handle_input(&[1, 2, 3]).is_err());
    }

    #[test]
    fn binding_retransmits_then_times_out() {
        let t0 = Instant::now();
        let mut b = StunBinding::new(t0, Duration::from_millis(100)).unwrap();
        let first = b.poll_transmit().unwrap();
        let mut sends = 1;
        while let Some(at) = b.poll_timeout() {
            b.handle_timeout(at);
            while let Some(again) = b.poll_transmit() {
                assert_eq!(again, first);
                sends += 1;
            }
        }
        assert_eq!(sends, 7);
        assert_eq!(
            b.result(),
            Some(Err(TurnError::Timeout { method: "Binding" }))
        );
    }

    #[test]
    fn binding_error_response() {
        let t0 = Instant::now();
        let mut b = StunBinding::new(t0, Duration::from_millis(500)).unwrap();
        let req = b.poll_transmit().unwrap();
        let err = Attribute::ErrorCode(ErrorCode {
            code: 400,
            reason: "Bad Request".into(),
        });
        assert_eq!(b.handle_input(&answer(&req, Class::Error, err)), Ok(true));
        assert!(matches!(
            b.result(),
            Some(Err(TurnError::ServerError { code: 400, .. }))
        ));
    }
}
