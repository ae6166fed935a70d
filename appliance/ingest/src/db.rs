//! PostgreSQL schema and the one transaction that stores a batch.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use telecart_store::wire::WireRecord;
use tokio_postgres::NoTls;

use crate::IngestError;

/// The schema (idempotent).
pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS devices (
    device_id  text PRIMARY KEY,
    next_seq   bigint NOT NULL DEFAULT 1,
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS records (
    device_id       text   NOT NULL REFERENCES devices (device_id),
    seq             bigint NOT NULL CHECK (seq >= 1),
    idempotency_key text   NOT NULL UNIQUE,
    digest          text   NOT NULL,
    session_id      text   NOT NULL,
    kind            text   NOT NULL,
    recorded_at_ms  bigint NOT NULL,
    body            jsonb,
    unreadable      text,
    received_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, seq)
);
CREATE INDEX IF NOT EXISTS records_session ON records (session_id);
"#;

/// A pool of connections to `conninfo` (libpq key/value or URL form).
pub fn pool(conninfo: &str, max_size: usize) -> Result<Pool, IngestError> {
    let cfg: tokio_postgres::Config = conninfo.parse()?;
    let mgr = Manager::from_config(
        cfg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(max_size)
        .build()
        .map_err(|e| IngestError::Pool(e.to_string()))
}

/// Creates the tables if they do not exist.
pub async fn migrate(pool: &Pool) -> Result<(), IngestError> {
    let client = pool.get().await?;
    client.batch_execute(SCHEMA).await?;
    Ok(())
}

/// What storing a batch came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    /// Stored (or already held): every record up to `acked_upto` is held.
    Acked {
        /// Highest contiguous sequence held for the device.
        acked_upto: u64,
        /// Records newly inserted by this request.
        inserted: u64,
    },
    /// The batch starts after a gap; nothing was stored.
    Gap {
        /// The sequence the server expects next.
        expected_seq: u64,
    },
    /// A record of the batch is already held with different content; nothing was stored.
    Conflict {
        /// The first conflicting sequence.
        seq: u64,
    },
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Stores a validated batch (ascending, contiguous sequences) for `device` in one transaction.
pub async fn store_batch(
    pool: &Pool,
    device: &str,
    records: &[WireRecord],
) -> Result<Stored, IngestError> {
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Ok(Stored::Acked {
            acked_upto: acked_upto(pool, device).await?,
            inserted: 0,
        });
    };
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute(
        "INSERT INTO devices (device_id) VALUES ($1) ON CONFLICT DO NOTHING",
        &[&device],
    )
    .await?;
    // The row lock serialises concurrent uploads of one device (several server instances included).
    let next: i64 = tx
        .query_one(
            "SELECT next_seq FROM devices WHERE device_id = $1 FOR UPDATE",
            &[&device],
        )
        .await?
        .get(0);
    let next = u64::try_from(next).unwrap_or(1);
    if first.seq > next {
        return Ok(Stored::Gap { expected_seq: next });
    }
    // Records we already hold must be the same records (a retry), not different content.
    if first.seq < next {
        let rows = tx
            .query(
                "SELECT seq, digest FROM records WHERE device_id = $1 AND seq BETWEEN $2 AND $3 ORDER BY seq",
                &[&device, &i64_of(first.seq), &i64_of(last.seq.min(next - 1))],
            )
            .await?;
        for row in rows {
            let seq: i64 = row.get(0);
            let digest: &str = row.get(1);
            let seq = u64::try_from(seq).unwrap_or(0);
            let ours = records.iter().find(|r| r.seq == seq);
            if ours.is_some_and(|r| r.digest != digest) {
                return Ok(Stored::Conflict { seq });
            }
        }
    }
    let fresh: Vec<&WireRecord> = records.iter().filter(|r| r.seq >= next).collect();
    let mut inserted = 0;
    if !fresh.is_empty() {
        let seqs: Vec<i64> = fresh.iter().map(|r| i64_of(r.seq)).collect();
        let keys: Vec<&str> = fresh.iter().map(|r| r.idempotency_key.as_str()).collect();
        let digests: Vec<&str> = fresh.iter().map(|r| r.digest.as_str()).collect();
        let sessions: Vec<&str> = fresh.iter().map(|r| r.session_id.as_str()).collect();
        let kinds: Vec<&str> = fresh.iter().map(|r| r.kind.as_str()).collect();
        let ats: Vec<i64> = fresh.iter().map(|r| i64_of(r.recorded_at_ms)).collect();
        let bodies: Vec<Option<&serde_json::Value>> =
            fresh.iter().map(|r| r.body.as_ref()).collect();
        let unreadable: Vec<Option<&str>> = fresh.iter().map(|r| r.unreadable.as_deref()).collect();
        inserted = tx
            .execute(
                "INSERT INTO records (device_id, seq, idempotency_key, digest, session_id, kind, recorded_at_ms, body, unreadable)
                 SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::jsonb[], $9::text[])
                 ON CONFLICT (device_id, seq) DO NOTHING",
                &[&device, &seqs, &keys, &digests, &sessions, &kinds, &ats, &bodies, &unreadable],
            )
            .await?;
    }
    let new_next = next.max(last.seq + 1);
    tx.execute(
        "UPDATE devices SET next_seq = $2, last_seen = now() WHERE device_id = $1",
        &[&device, &i64_of(new_next)],
    )
    .await?;
    tx.commit().await?;
    Ok(Stored::Acked {
        acked_upto: new_next - 1,
        inserted,
    })
}

/// The highest sequence up to which every record of `device` is held (0 if none).
pub async fn acked_upto(pool: &Pool, device: &str) -> Result<u64, IngestError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT next_seq FROM devices WHERE device_id = $1",
            &[&device],
        )
        .await?;
    Ok(row
        .map(|r| r.get::<_, i64>(0))
        .and_then(|n| u64::try_from(n - 1).ok())
        .unwrap_or(0))
}

/// A stored record, as read back (tests, integrators' tools).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredRecord {
    /// Sequence.
    pub seq: u64,
    /// Idempotency key.
    pub idempotency_key: String,
    /// Digest.
    pub digest: String,
    /// Kind.
    pub kind: String,
    /// Body.
    pub body: Option<serde_json::Value>,
}

/// Every record of `device`, in sequence order.
pub async fn records(pool: &Pool, device: &str) -> Result<Vec<StoredRecord>, IngestError> {
    let client = pool.get().await?;
    let rows = client
        .query("SELECT seq, idempotency_key, digest, kind, body FROM records WHERE device_id = $1 ORDER BY seq", &[&device])
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| StoredRecord {
            seq: u64::try_from(r.get::<_, i64>(0)).unwrap_or(0),
            idempotency_key: r.get(1),
            digest: r.get(2),
            kind: r.get(3),
            body: r.get(4),
        })
        .collect())
}

/// Sequences of `device` in the order the server inserted them (by commit time, then sequence).
pub async fn insertion_order(pool: &Pool, device: &str) -> Result<Vec<u64>, IngestError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT seq FROM records WHERE device_id = $1 ORDER BY received_at, seq",
            &[&device],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0))
        .collect())
}
