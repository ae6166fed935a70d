//! What `cartctl log list|show|export` needs: functions that return what to print, or write an
//! export, and put every access to PHI on the audit trail.
//!
//! Authorisation is the device key: these functions need a store opened with the master key, which
//! only root (or the provisioning-defined technician group via a 0400 copy) can read. `actor` names
//! the technician as authenticated by cartctl; it goes on the audit trail.

use std::fmt;
use std::io::Write;

use crate::error::{Result, StoreError};
use crate::record::{Kind, Record, SessionId};
use crate::store::{LogStore, Readout};
use crate::wire;

/// Which records to list or export.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this session.
    pub session: Option<SessionId>,
    /// Only this kind.
    pub kind: Option<Kind>,
    /// Sequences from here.
    pub from_seq: Option<u64>,
    /// Sequences up to here.
    pub to_seq: Option<u64>,
    /// At most this many records.
    pub limit: Option<usize>,
}

impl Filter {
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = self.session {
            parts.push(format!("session={s}"));
        }
        if let Some(k) = self.kind {
            parts.push(format!("kind={k}"));
        }
        if let Some(f) = self.from_seq {
            parts.push(format!("from={f}"));
        }
        if let Some(t) = self.to_seq {
            parts.push(format!("to={t}"));
        }
        if let Some(l) = self.limit {
            parts.push(format!("limit={l}"));
        }
        if parts.is_empty() {
            "all".into()
        } else {
            parts.join(" ")
        }
    }
}

/// One line of `cartctl log list`: metadata only, no PHI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListEntry {
    /// Sequence.
    pub seq: u64,
    /// Time, Unix milliseconds (0 if unreadable).
    pub at_ms: u64,
    /// Kind (`None` if unreadable).
    pub kind: Option<Kind>,
    /// Session.
    pub session: SessionId,
    /// Acknowledged by the server.
    pub synced: bool,
    /// Why the record cannot be read, if it cannot.
    pub problem: Option<String>,
}

impl fmt::Display for ListEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.kind.map(Kind::name).unwrap_or("UNREADABLE");
        let sync = if self.synced { "synced" } else { "pending" };
        write!(
            f,
            "{:>10}  {}  {:<18}  {}  {}",
            self.seq,
            format_time(self.at_ms),
            kind,
            self.session,
            sync
        )?;
        if let Some(p) = &self.problem {
            write!(f, "  {p}")?;
        }
        Ok(())
    }
}

/// Formats Unix milliseconds as RFC 3339 UTC (`2024-05-01T12:00:00.000Z`).
pub fn format_time(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

fn matches(f: &Filter, r: &Readout) -> bool {
    match r {
        Readout::Ok { record, .. } => {
            f.session.is_none_or(|s| s == record.session)
                && f.kind.is_none_or(|k| k == record.body.kind())
        }
        // Unreadable records are always shown unless a filter on content excludes everything
        // unreadable: a technician must see damage.
        Readout::Unreadable { .. } => f.session.is_none() && f.kind.is_none(),
    }
}

fn scan(
    store: &dyn LogStore,
    f: &Filter,
    mut each: impl FnMut(Readout) -> Result<()>,
) -> Result<usize> {
    let mut from = f.from_seq.unwrap_or(1).max(store.purged_upto() + 1);
    let to = f.to_seq.unwrap_or(u64::MAX);
    let limit = f.limit.unwrap_or(usize::MAX);
    let mut n = 0;
    while from <= to && n < limit {
        let chunk = store.read_from(from, 512)?;
        let Some(last) = chunk.last().map(Readout::seq) else {
            break;
        };
        for r in chunk {
            if r.seq() > to || n >= limit {
                return Ok(n);
            }
            if matches(f, &r) {
                n += 1;
                each(r)?;
            }
        }
        from = last + 1;
    }
    Ok(n)
}

/// `cartctl log list`: one entry per record (metadata only; not audited since no PHI is shown).
pub fn list(store: &dyn LogStore, filter: &Filter) -> Result<Vec<ListEntry>> {
    let synced = store.synced_upto();
    let mut out = Vec::new();
    scan(store, filter, |r| {
        out.push(match r {
            Readout::Ok { record, .. } => ListEntry {
                seq: record.seq,
                at_ms: record.at_ms,
                kind: Some(record.body.kind()),
                session: record.session,
                synced: record.seq <= synced,
                problem: None,
            },
            Readout::Unreadable { seq, error } => ListEntry {
                seq,
                at_ms: 0,
                kind: None,
                session: SessionId::NONE,
                synced: seq <= synced,
                problem: Some(error.to_string()),
            },
        });
        Ok(())
    })?;
    Ok(out)
}

/// `cartctl log show SEQ`: the decrypted record, pretty JSON, after recording the access
/// (`log.show`) on the audit trail.
pub fn show(store: &dyn LogStore, seq: u64, actor: &str, now_ms: u64) -> Result<String> {
    store.audit(now_ms, actor, "log.show", &format!("seq={seq}"))?;
    let record = store.read(seq)?;
    Ok(render(&record))
}

fn render(r: &Record) -> String {
    let body = serde_json::to_string_pretty(&r.body).unwrap_or_else(|_| "{}".into());
    format!(
        "seq:      {}\ntime:     {}\nsession:  {}\nkind:     {}\nkey:      epoch {}\n{}\n",
        r.seq,
        format_time(r.at_ms),
        r.session,
        r.body.kind(),
        r.epoch,
        body
    )
}

/// What an export wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportSummary {
    /// Records written.
    pub records: usize,
    /// Of them, unreadable on the device.
    pub unreadable: usize,
    /// Sequence of the audit entry recording the export.
    pub audit_seq: u64,
}

/// `cartctl log export`: records the export on the audit trail (`log.export`, with the filter), then
/// writes the matching records to `out` as JSON lines in the ingest API's record format
/// (`docs/ingest-api.yaml`). `out` receives plaintext PHI: cartctl must point it at an encrypted
/// medium or pipe it onward, never at an unencrypted file on the cart.
pub fn export(
    store: &dyn LogStore,
    device_id: &str,
    filter: &Filter,
    actor: &str,
    now_ms: u64,
    out: &mut dyn Write,
) -> Result<ExportSummary> {
    let audit_seq = store.audit(now_ms, actor, "log.export", &filter.describe())?;
    let mut unreadable = 0;
    let records = scan(store, filter, |r| {
        if matches!(r, Readout::Unreadable { .. }) {
            unreadable += 1;
        }
        let line = serde_json::to_vec(&wire::to_wire(device_id, &r))
            .map_err(|_| StoreError::Invalid("record does not serialise"))?;
        out.write_all(&line)
            .and_then(|_| out.write_all(b"\n"))
            .map_err(StoreError::Export)
    })?;
    out.flush().map_err(StoreError::Export)?;
    Ok(ExportSummary {
        records,
        unreadable,
        audit_seq,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn time_format() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_time(1_709_251_199_123), "2024-02-29T23:59:59.123Z");
        assert_eq!(format_time(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
