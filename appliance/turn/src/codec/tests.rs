//! Codec tests: RFC 5769 vectors, round trips, hostile input, and property tests over random
//! bytes (the crate's stand-in for a cargo-fuzz target).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;

use super::attribute::{Attribute, ErrorCode, PasswordAlgorithm, types};
use super::channel::{ChannelData, FrameKind, StreamFramer};
use super::credentials::{FEATURE_PASSWORD_ALGORITHMS, long_term_key, nonce_security_features};
use super::message::{Class, Integrity, Message, Method, TransactionId};
use crate::error::TurnError;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const RFC5769_PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

/// RFC 5769 section 2.1: a request with SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME,
/// MESSAGE-INTEGRITY and FINGERPRINT, and spaces as padding.
fn rfc5769_request() -> Vec<u8> {
    hex(
        "000100582112a442b7e7a701bc34d686fa87dfae802200105354554e207465737420636c69656e74\
         002400046e0001ff80290008932ff9b151263b36000600096576746a3a68367659202020\
         000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a280280004e57a3bcf",
    )
}

#[test]
fn rfc5769_sample_request() {
    let msg = Message::decode(&rfc5769_request()).unwrap();
    assert_eq!(msg.class, Class::Request);
    assert_eq!(msg.method, Method::BINDING);
    assert!(
        msg.attributes
            .contains(&Attribute::Software("STUN test client".into()))
    );
    assert!(
        msg.attributes
            .contains(&Attribute::Username("evtj:h6vY".into()))
    );
    // PRIORITY is comprehension-required and not a TURN client's business: reported.
    assert_eq!(msg.unknown_required(), &[0x0024]);
    msg.verify_integrity(RFC5769_PASSWORD).unwrap();
    assert_eq!(
        msg.verify_integrity(b"wrong"),
        Err(TurnError::IntegrityMismatch("HMAC does not match"))
    );
}

#[test]
fn rfc5769_sample_ipv4_response() {
    let bytes = hex(
        "0101003c2112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220\
         002000080001a147e112a643000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7\
         80280004c07d4c96",
    );
    let msg = Message::decode(&bytes).unwrap();
    assert_eq!(msg.class, Class::Success);
    assert_eq!(
        msg.mapped_address(),
        Some("192.0.2.1:32853".parse().unwrap())
    );
    msg.verify_integrity(RFC5769_PASSWORD).unwrap();
}

#[test]
fn rfc5769_sample_ipv6_response_without_fingerprint() {
    // Section 2.3 up to the end of MESSAGE-INTEGRITY, header length cut to match.
    let bytes = hex(
        "010100402112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220\
         0020001400 02a147 0113a9faa5d3f179bc25f4b5bed2b9d9\
         00080014a382954e4be67bf11784c97c8292c275bfe3ed41",
    );
    let msg = Message::decode(&bytes).unwrap();
    let ip: Ipv6Addr = "2001:db8:1234:5678:11:2233:4455:6677".parse().unwrap();
    assert_eq!(
        msg.mapped_address(),
        Some(SocketAddr::new(IpAddr::V6(ip), 32853))
    );
    msg.verify_integrity(RFC5769_PASSWORD).unwrap();
}

#[test]
fn long_term_key_is_md5_of_user_realm_pass() {
    let key = long_term_key(PasswordAlgorithm::MD5, "user", "realm", "pass").unwrap();
    assert_eq!(key, hex("8493fbc53ba582fb4c044c456bdc40eb"));
    let key = long_term_key(PasswordAlgorithm::SHA256, "user", "realm", "pass").unwrap();
    assert_eq!(key.len(), 32);
    assert_eq!(long_term_key(7, "u", "r", "p"), None);
}

#[test]
fn nonce_cookie_features() {
    assert_eq!(nonce_security_features("abcdef"), None);
    assert_eq!(nonce_security_features("obMatJos2"), None);
    assert_eq!(nonce_security_features("obMatJos2AAAB"), Some(1));
    assert_eq!(
        nonce_security_features("obMatJos2AAABxyz").map(|f| f & FEATURE_PASSWORD_ALGORITHMS),
        Some(1)
    );
    assert_eq!(nonce_security_features("obMatJos2AAAA"), Some(0));
    assert_eq!(nonce_security_features("obMatJos2AA*A"), None);
}

fn every_attribute(v6: bool) -> Vec<Attribute> {
    let addr: SocketAddr = if v6 {
        "[2001:db8::7]:40000".parse().unwrap()
    } else {
        "203.0.113.9:40000".parse().unwrap()
    };
    vec![
        Attribute::MappedAddress(addr),
        Attribute::XorMappedAddress(addr),
        Attribute::XorRelayedAddress(addr),
        Attribute::XorPeerAddress(addr),
        Attribute::AlternateServer(addr),
        Attribute::AlternateDomain("turn.example.org".into()),
        Attribute::Username("nurse-cart-7".into()),
        Attribute::Realm("telecart.test".into()),
        Attribute::Nonce("obMatJos2AAABnonce".into()),
        Attribute::Software("telecart".into()),
        Attribute::ErrorCode(ErrorCode {
            code: 438,
            reason: "Stale Nonce".into(),
        }),
        Attribute::UnknownAttributes(vec![0x0024, 0x0025, 0x7777]),
        Attribute::Lifetime(600),
        Attribute::RequestedTransport(17),
        Attribute::RequestedAddressFamily(1),
        Attribute::DontFragment,
        Attribute::EvenPort(true),
        Attribute::ReservationToken(*b"12345678"),
        Attribute::ChannelNumber(0x4001),
        Attribute::Data(vec![1, 2, 3, 4, 5]),
        Attribute::PasswordAlgorithms(vec![
            PasswordAlgorithm::new(PasswordAlgorithm::SHA256),
            PasswordAlgorithm {
                id: 0x77,
                params: vec![9, 9, 9],
            },
            PasswordAlgorithm::new(PasswordAlgorithm::MD5),
        ]),
        Attribute::PasswordAlgorithm(PasswordAlgorithm::new(PasswordAlgorithm::SHA256)),
        Attribute::Other {
            typ: 0x8055,
            value: vec![0xAA; 7],
        },
    ]
}

#[test]
fn every_attribute_round_trips_with_each_integrity() {
    for v6 in [false, true] {
        for integrity in [
            Integrity::None,
            Integrity::Sha1(b"0123456789abcdef"),
            Integrity::Sha256(b"key"),
        ] {
            for fingerprint in [false, true] {
                let mut msg =
                    Message::new(Class::Request, Method::ALLOCATE, TransactionId([7; 12]));
                msg.attributes = every_attribute(v6);
                let bytes = msg.encode(integrity, fingerprint).unwrap();
                let back = Message::decode(&bytes).unwrap();
                let n = msg.attributes.len();
                assert_eq!(back.attributes[..n], msg.attributes[..]);
                assert!(back.unknown_required().is_empty());
                match integrity {
                    Integrity::None => assert!(!back.has_integrity()),
                    Integrity::Sha1(k) | Integrity::Sha256(k) => {
                        back.verify_integrity(k).unwrap();
                        assert!(back.verify_integrity(b"other").is_err());
                    }
                }
                assert_eq!(
                    back.attributes.last().map(Attribute::typ) == Some(types::FINGERPRINT),
                    fingerprint
                );
            }
        }
    }
}

#[test]
fn method_and_class_bits_round_trip() {
    for method in [
        Method::BINDING,
        Method::ALLOCATE,
        Method::REFRESH,
        Method::SEND,
        Method::DATA,
        Method::CREATE_PERMISSION,
        Method::CHANNEL_BIND,
        Method(0xFFF),
    ] {
        for class in [
            Class::Request,
            Class::Indication,
            Class::Success,
            Class::Error,
        ] {
            let bytes = Message::new(class, method, TransactionId([1; 12]))
                .encode(Integrity::None, false)
                .unwrap();
            let back = Message::decode(&bytes).unwrap();
            assert_eq!((back.class, back.method), (class, method));
        }
    }
    // Allocate success response is 0x0103, error 0x0113, Send indication 0x0016.
    let t = |c, m| {
        let b = Message::new(c, m, TransactionId([0; 12]))
            .encode(Integrity::None, false)
            .unwrap();
        u16::from_be_bytes([b[0], b[1]])
    };
    assert_eq!(t(Class::Success, Method::ALLOCATE), 0x0103);
    assert_eq!(t(Class::Error, Method::ALLOCATE), 0x0113);
    assert_eq!(t(Class::Indication, Method::SEND), 0x0016);
    assert_eq!(t(Class::Indication, Method::DATA), 0x0017);
    assert!(
        Message::new(Class::Request, Method(0x1000), TransactionId([0; 12]))
            .encode(Integrity::None, false)
            .is_err()
    );
}

#[test]
fn truncated_messages_are_rejected_at_every_length() {
    let bytes = rfc5769_request();
    for n in 0..bytes.len() {
        let err = Message::decode(&bytes[..n]).unwrap_err();
        assert!(
            matches!(err, TurnError::Truncated { .. }),
            "length {n}: {err:?}"
        );
    }
}

#[test]
fn hostile_headers_and_lengths() {
    let good = rfc5769_request();
    // Leading bits.
    let mut b = good.clone();
    b[0] |= 0x80;
    assert_eq!(
        Message::decode(&b),
        Err(TurnError::NotStun("leading bits are not 00"))
    );
    // Cookie.
    let mut b = good.clone();
    b[5] ^= 1;
    assert_eq!(
        Message::decode(&b),
        Err(TurnError::NotStun("wrong magic cookie"))
    );
    // Length not a multiple of four.
    let mut b = good.clone();
    b[3] = 0x57;
    assert!(matches!(Message::decode(&b), Err(TurnError::BadLength(_))));
    // Trailing bytes after the message.
    let mut b = good.clone();
    b.extend_from_slice(&[0; 4]);
    assert!(matches!(Message::decode(&b), Err(TurnError::BadLength(_))));
    // An attribute length that overruns the message.
    let mut b = good.clone();
    b[22..24].copy_from_slice(&0x0100u16.to_be_bytes());
    assert!(matches!(Message::decode(&b), Err(TurnError::BadLength(_))));
}

#[test]
fn bad_fingerprint_is_rejected() {
    let mut b = rfc5769_request();
    let n = b.len();
    b[n - 1] ^= 0x01;
    assert_eq!(Message::decode(&b), Err(TurnError::FingerprintMismatch));
    // A flipped bit in the body also breaks the fingerprint.
    let mut b = rfc5769_request();
    b[30] ^= 0x01;
    assert_eq!(Message::decode(&b), Err(TurnError::FingerprintMismatch));
}

#[test]
fn wrong_integrity_is_detected() {
    let msg = Message::new(Class::Success, Method::ALLOCATE, TransactionId([3; 12]))
        .with(Attribute::Lifetime(600));
    let mut bytes = msg.encode(Integrity::Sha1(b"secret"), false).unwrap();
    Message::decode(&bytes)
        .unwrap()
        .verify_integrity(b"secret")
        .unwrap();
    // Flip a bit in LIFETIME: the MAC no longer matches.
    bytes[27] ^= 0x01;
    let tampered = Message::decode(&bytes).unwrap();
    assert_eq!(
        tampered.verify_integrity(b"secret"),
        Err(TurnError::IntegrityMismatch("HMAC does not match"))
    );
    // No integrity at all.
    let plain = Message::decode(&msg.encode(Integrity::None, false).unwrap()).unwrap();
    assert_eq!(
        plain.verify_integrity(b"secret"),
        Err(TurnError::IntegrityMismatch(
            "no MESSAGE-INTEGRITY attribute"
        ))
    );
}

#[test]
fn attributes_after_integrity_are_ignored_and_after_fingerprint_refused() {
    let msg = Message::new(Class::Success, Method::REFRESH, TransactionId([4; 12]))
        .with(Attribute::Lifetime(600));
    let mut bytes = msg.encode(Integrity::Sha1(b"k"), false).unwrap();
    // Append LIFETIME 0 after MESSAGE-INTEGRITY; an attacker could, since it is not covered.
    bytes.extend_from_slice(&[0x00, 0x0D, 0x00, 0x04, 0, 0, 0, 0]);
    let len = (bytes.len() - 20) as u16;
    bytes[2..4].copy_from_slice(&len.to_be_bytes());
    let back = Message::decode(&bytes).unwrap();
    assert_eq!(
        back.attributes
            .iter()
            .filter(|a| matches!(a, Attribute::Lifetime(_)))
            .count(),
        1
    );
    back.verify_integrity(b"k").unwrap();

    // A valid FINGERPRINT followed by SOFTWARE (the CRC recomputed over the longer header).
    let mut bytes = msg.encode(Integrity::None, true).unwrap();
    let fp_at = bytes.len() - 8;
    bytes.extend_from_slice(&[0x80, 0x22, 0x00, 0x00]);
    let len = (bytes.len() - 20) as u16;
    bytes[2..4].copy_from_slice(&len.to_be_bytes());
    let crc = crc32fast::hash(&bytes[..fp_at]) ^ 0x5354_554E;
    bytes[fp_at + 4..fp_at + 8].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(
        Message::decode(&bytes),
        Err(TurnError::AttributeAfterFingerprint(0x8022))
    );
}

#[test]
fn unknown_attributes_optional_skipped_required_reported() {
    let msg = Message::new(Class::Success, Method::ALLOCATE, TransactionId([5; 12]))
        .with(Attribute::Other {
            typ: 0x8099,
            value: vec![1],
        })
        .with(Attribute::Other {
            typ: 0x0077,
            value: vec![],
        });
    let back = Message::decode(&msg.encode(Integrity::None, true).unwrap()).unwrap();
    assert_eq!(back.unknown_required(), &[0x0077]);
}

#[test]
fn malformed_attribute_values() {
    let tid = TransactionId([0; 12]);
    let cases: &[(u16, &[u8])] = &[
        (types::XOR_MAPPED_ADDRESS, &[0, 1, 0, 0]),
        (types::XOR_MAPPED_ADDRESS, &[0, 3, 0, 0, 1, 2, 3, 4]),
        (types::XOR_MAPPED_ADDRESS, &[0, 2, 0, 0, 1, 2, 3, 4]),
        (types::LIFETIME, &[0, 0, 0]),
        (types::ERROR_CODE, &[0, 0, 2, 0]),
        (types::ERROR_CODE, &[0, 0, 4, 100]),
        (types::ERROR_CODE, &[0, 0]),
        (types::MESSAGE_INTEGRITY, &[0; 19]),
        (types::MESSAGE_INTEGRITY_SHA256, &[0; 12]),
        (types::MESSAGE_INTEGRITY_SHA256, &[0; 18]),
        (types::USERNAME, &[0xff, 0xfe]),
        (types::REALM, &[0xc3]),
        (types::UNKNOWN_ATTRIBUTES, &[0, 1, 2]),
        (types::CHANNEL_NUMBER, &[0x40]),
        (types::DONT_FRAGMENT, &[1]),
        (types::PASSWORD_ALGORITHMS, &[0, 1, 0, 8, 0]),
        (types::PASSWORD_ALGORITHM, &[0, 1]),
    ];
    for (typ, value) in cases {
        assert!(
            matches!(
                Attribute::decode(*typ, value, &tid),
                Err(TurnError::BadAttribute { .. })
            ),
            "0x{typ:04x} {value:?}"
        );
    }
    // ERROR-CODE: class 4 number 1 is 401, reason kept even if not UTF-8.
    assert_eq!(
        Attribute::decode(types::ERROR_CODE, &[0, 0, 4, 1, b'U', 0xff], &tid),
        Ok(Attribute::ErrorCode(ErrorCode {
            code: 401,
            reason: "U\u{fffd}".into()
        }))
    );
}

#[test]
fn over_long_values_are_refused_on_encode() {
    let msg = Message::new(Class::Request, Method::ALLOCATE, TransactionId([0; 12]))
        .with(Attribute::Username("x".repeat(600)));
    assert!(matches!(
        msg.encode(Integrity::None, false),
        Err(TurnError::InvalidInput(_))
    ));
    let msg = Message::new(Class::Indication, Method::SEND, TransactionId([0; 12]))
        .with(Attribute::Data(vec![0; 70_000]));
    assert!(matches!(
        msg.encode(Integrity::None, false),
        Err(TurnError::InvalidInput(_))
    ));
    let msg = Message::new(Class::Error, Method::ALLOCATE, TransactionId([0; 12])).with(
        Attribute::ErrorCode(ErrorCode {
            code: 200,
            reason: String::new(),
        }),
    );
    assert!(msg.encode(Integrity::None, false).is_err());
}

#[test]
fn channel_data_round_trip_and_padding() {
    for len in 0..9 {
        let data: Vec<u8> = (0..len).collect();
        let unpadded = ChannelData::encode(0x4000, &data, false).unwrap();
        assert_eq!(unpadded.len(), 4 + data.len());
        let padded = ChannelData::encode(0x4FFF, &data, true).unwrap();
        assert_eq!(padded.len() % 4, 0);
        assert_eq!(
            ChannelData::decode(&padded).unwrap(),
            ChannelData {
                channel: 0x4FFF,
                data: &data
            }
        );
        assert_eq!(ChannelData::decode(&unpadded).unwrap().data, &data[..]);
    }
    assert_eq!(
        ChannelData::encode(0x3FFF, b"x", false),
        Err(TurnError::InvalidChannelNumber(0x3FFF))
    );
    assert_eq!(
        ChannelData::decode(&[0x50, 0, 0, 0]),
        Err(TurnError::InvalidChannelNumber(0x5000))
    );
    assert!(matches!(
        ChannelData::decode(&[0x40, 0, 0, 5, 1, 2]),
        Err(TurnError::Truncated { .. })
    ));
    assert!(matches!(
        ChannelData::decode(&[0x40, 0, 0, 1, 1, 0, 0, 0, 0]),
        Err(TurnError::BadLength(_))
    ));
}

fn sample_stream() -> (Vec<u8>, Vec<(FrameKind, Vec<u8>)>) {
    let stun = rfc5769_request();
    let cd1 = ChannelData::encode(0x4001, b"hello", true).unwrap();
    let cd2 = ChannelData::encode(0x4002, b"", true).unwrap();
    let ind = Message::new(Class::Indication, Method::DATA, TransactionId([9; 12]))
        .with(Attribute::XorPeerAddress("10.0.0.1:5000".parse().unwrap()))
        .with(Attribute::Data(vec![0xEE; 33]))
        .encode(Integrity::None, false)
        .unwrap();
    let frames = vec![
        (FrameKind::ChannelData, cd1),
        (FrameKind::Stun, stun),
        (FrameKind::ChannelData, cd2),
        (FrameKind::Stun, ind),
    ];
    let stream = frames.iter().flat_map(|(_, f)| f.clone()).collect();
    (stream, frames)
}

#[test]
fn stream_framer_handles_every_split_point() {
    let (stream, frames) = sample_stream();
    for a in 0..=stream.len() {
        for b in a..=stream.len() {
            let mut framer = StreamFramer::new();
            let mut got = Vec::new();
            for part in [&stream[..a], &stream[a..b], &stream[b..]] {
                framer.push(part);
                while let Some(f) = framer.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, frames, "split at {a} and {b}");
            assert_eq!(framer.buffered(), 0);
        }
    }
}

#[test]
fn stream_framer_one_byte_at_a_time() {
    let (stream, frames) = sample_stream();
    let mut framer = StreamFramer::new();
    let mut got = Vec::new();
    for byte in &stream {
        framer.push(std::slice::from_ref(byte));
        while let Some(f) = framer.next_frame().unwrap() {
            got.push(f);
        }
    }
    assert_eq!(got, frames);
}

#[test]
fn stream_framer_rejects_garbage() {
    // A TLS record where a plain TCP stream was expected: STUN bits, wrong cookie.
    let mut framer = StreamFramer::new();
    framer.push(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc]);
    assert_eq!(framer.next_frame(), Err(TurnError::StreamFraming(0x16)));
    // RTP (first bits 10) or a reserved channel number.
    for first in [0x80, 0x50, 0xff] {
        let mut framer = StreamFramer::new();
        framer.push(&[first, 0, 0, 0]);
        assert_eq!(framer.next_frame(), Err(TurnError::StreamFraming(first)));
    }
    let mut framer = StreamFramer::new();
    framer.push(&[0x00, 0x01, 0x00, 0x00, 1, 2, 3, 4]);
    assert_eq!(framer.next_frame(), Err(TurnError::StreamFraming(0)));
    let mut framer = StreamFramer::new();
    framer.push(&[0x00, 0x01, 0x00, 0x03]);
    framer.push(&0x2112A442u32.to_be_bytes());
    framer.push(&[0; 12]);
    assert!(matches!(framer.next_frame(), Err(TurnError::BadLength(_))));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Random bytes never panic the parsers.
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Message::decode(&bytes);
        let _ = ChannelData::decode(&bytes);
        let mut framer = StreamFramer::new();
        framer.push(&bytes);
        while let Ok(Some(_)) = framer.next_frame() {}
    }

    /// Random bytes behind a valid STUN header (so the attribute parser is reached) never
    /// panic, and any message that decodes re-encodes to something that decodes the same.
    #[test]
    fn attribute_soup_never_panics(
        body in proptest::collection::vec(any::<u8>(), 0..160),
        class in 0u8..4,
    ) {
        let len = body.len() - body.len() % 4;
        let mut bytes = vec![0, 1, 0, 0, 0x21, 0x12, 0xA4, 0x42];
        bytes[0] = (class & 2) >> 1;
        bytes[1] = 1 | ((class & 1) << 4);
        bytes[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        bytes.extend_from_slice(&[7; 12]);
        bytes.extend_from_slice(&body[..len]);
        if let Ok(msg) = Message::decode(&bytes) {
            let plain: Vec<Attribute> = msg.attributes.iter().filter(|a| !matches!(a,
                Attribute::MessageIntegrity(_) | Attribute::MessageIntegritySha256(_)
                | Attribute::Fingerprint(_))).cloned().collect();
            let mut again = msg.clone();
            again.attributes = plain.clone();
            if let Ok(re) = again.encode(Integrity::None, false) {
                let back = Message::decode(&re).unwrap();
                prop_assert_eq!(back.attributes, plain);
            }
        }
    }

    /// Anything the encoder writes, the decoder reads back.
    #[test]
    fn round_trip_random_values(
        data in proptest::collection::vec(any::<u8>(), 0..300),
        text in "[a-zA-Z0-9:@. -]{0,100}",
        lifetime in any::<u32>(),
        port in any::<u16>(),
        v6 in any::<[u8; 16]>(),
        tid in any::<[u8; 12]>(),
        key in proptest::collection::vec(any::<u8>(), 1..64),
    ) {
        let peer = SocketAddr::new(IpAddr::V6(Ipv6Addr::from(v6)), port);
        let msg = Message::new(Class::Indication, Method::SEND, TransactionId(tid))
            .with(Attribute::XorPeerAddress(peer))
            .with(Attribute::Data(data.clone()))
            .with(Attribute::Realm(text.clone()))
            .with(Attribute::Lifetime(lifetime));
        let bytes = msg.encode(Integrity::Sha256(&key), true).unwrap();
        let back = Message::decode(&bytes).unwrap();
        prop_assert_eq!(&back.attributes[..4], &msg.attributes[..]);
        prop_assert!(back.verify_integrity(&key).is_ok());
        let cd = ChannelData::encode(0x4123, &data, true).unwrap();
        prop_assert_eq!(ChannelData::decode(&cd).unwrap().data, &data[..]);
    }

    /// A byte stream of valid frames is re-framed identically however it is chopped.
    #[test]
    fn framer_any_chunking(cuts in proptest::collection::vec(0usize..200, 0..12)) {
        let (stream, frames) = sample_stream();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
        cuts.sort_unstable();
        let mut framer = StreamFramer::new();
        let mut got = Vec::new();
        let mut prev = 0;
        for c in cuts.into_iter().chain([stream.len()]) {
            framer.push(&stream[prev..c]);
            prev = c;
            while let Some(f) = framer.next_frame().unwrap() {
                got.push(f);
            }
        }
        prop_assert_eq!(got, frames);
    }
}
