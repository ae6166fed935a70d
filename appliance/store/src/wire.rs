//! JSON types of the ingest API (`docs/ingest-api.yaml`), shared by the device's sync driver and
//! the reference ingest server.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::record::hex;
use crate::store::Readout;

/// Body of `POST /v1/devices/{device}/records`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadBatch {
    /// Records in ascending, contiguous sequence order.
    pub records: Vec<WireRecord>,
}

/// One record on the wire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireRecord {
    /// Sequence on the device: 1, 2, 3, ... never reused.
    pub seq: u64,
    /// `{device}:{seq}`: the server stores each key at most once.
    pub idempotency_key: String,
    /// SHA-256 (hex) of the record's content; a retry carries the same digest, so a different
    /// digest under the same key is a conflict, not a duplicate.
    pub digest: String,
    /// Session id (32 hex digits; zeros outside a session).
    pub session_id: String,
    /// Time of the record, Unix milliseconds.
    pub recorded_at_ms: u64,
    /// Record kind (`session_start`, ..., `audit`), or `unreadable`.
    pub kind: String,
    /// The record's content (a JSON object with a `kind` tag); absent if unreadable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    /// Why the device could not read this record (damaged or missing on the device's disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

/// `200` answer: the highest sequence up to which the server holds every record of this device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// Every record with `seq <= acked_upto` is stored.
    pub acked_upto: u64,
}

/// Error answer (`4xx`, `5xx`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Machine-readable code: `bad_request`, `forbidden`, `gap`, `conflict`, `internal`.
    pub error: String,
    /// Human-readable message.
    pub message: String,
    /// For `gap`: the sequence the server expects next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_seq: Option<u64>,
}

/// The idempotency key of a record.
pub fn idempotency_key(device: &str, seq: u64) -> String {
    format!("{device}:{seq}")
}

/// The wire form of a record read from the store.
pub fn to_wire(device: &str, r: &Readout) -> WireRecord {
    match r {
        Readout::Ok { record, digest } => WireRecord {
            seq: record.seq,
            idempotency_key: idempotency_key(device, record.seq),
            digest: hex(digest),
            session_id: record.session.to_string(),
            recorded_at_ms: record.at_ms,
            kind: record.body.kind().name().to_string(),
            body: serde_json::to_value(&record.body).ok(),
            unreadable: None,
        },
        Readout::Unreadable { seq, error } => {
            let mut h = Sha256::new();
            h.update(b"telecart/unreadable/v1");
            h.update(seq.to_be_bytes());
            WireRecord {
                seq: *seq,
                idempotency_key: idempotency_key(device, *seq),
                digest: hex(&h.finalize()),
                session_id: crate::record::SessionId::NONE.to_string(),
                recorded_at_ms: 0,
                kind: "unreadable".into(),
                body: None,
                unreadable: Some(error.to_string()),
            }
        }
    }
}
