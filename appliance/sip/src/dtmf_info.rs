//! DTMF carried in SIP INFO bodies: what browser softphones send on a call whose media is
//! WebRTC (JsSIP's default), and what the cart sends them back.
//!
//! Two de-facto formats, neither an RFC: `application/dtmf-relay` (`Signal=5` and
//! `Duration=160` lines, Cisco's, the common one) and `application/dtmf` (the digit alone).
//! Sans-IO: text in, a digit or a clear error out.

/// One key press read from an INFO body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InfoDtmf {
    /// `0`-`9`, `*`, `#`, `A`-`D` (upper case).
    pub digit: char,
    /// How long the key was held, when the body says.
    pub duration_ms: Option<u32>,
}

/// Why an INFO body is not a key press.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DtmfInfoError {
    /// The Content-Type is not one of the two DTMF formats.
    #[error("not a DTMF INFO (Content-Type {0:?})")]
    NotDtmf(String),
    /// A `dtmf-relay` body without a `Signal=` line, or an empty `dtmf` body.
    #[error("DTMF INFO without a signal")]
    NoSignal,
    /// The signal is not a DTMF key.
    #[error("DTMF INFO signal {0:?} is not a key")]
    BadSignal(String),
    /// `Duration=` is not a number of milliseconds.
    #[error("DTMF INFO duration {0:?} is not a number")]
    BadDuration(String),
}

/// The INFO body formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtmfFormat {
    /// `application/dtmf-relay`: `Signal=` and `Duration=` lines.
    Relay,
    /// `application/dtmf`: the key alone.
    Plain,
}

/// The DTMF format a Content-Type names (parameters and case ignored).
pub fn format_of(content_type: &str) -> Option<DtmfFormat> {
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/dtmf-relay") {
        Some(DtmfFormat::Relay)
    } else if mime.eq_ignore_ascii_case("application/dtmf") {
        Some(DtmfFormat::Plain)
    } else {
        None
    }
}

/// The key a signal names: the key itself, or its RFC 4733 event code (10 `*`, 11 `#`,
/// 12-15 `A`-`D`), as some phones write it.
fn key(signal: &str) -> Result<char, DtmfInfoError> {
    let s = signal.trim();
    let bad = || DtmfInfoError::BadSignal(s.chars().take(16).collect());
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => match c.to_ascii_uppercase() {
            c @ ('0'..='9' | '*' | '#' | 'A'..='D') => Ok(c),
            _ => Err(bad()),
        },
        (Some(_), Some(_)) => match s.parse::<u8>() {
            Ok(10) => Ok('*'),
            Ok(11) => Ok('#'),
            Ok(n @ 12..=15) => Ok(char::from(b'A' + (n - 12))),
            _ => Err(bad()),
        },
        _ => Err(DtmfInfoError::NoSignal),
    }
}

/// Reads the key press in an INFO with this Content-Type and body.
pub fn parse(content_type: &str, body: &str) -> Result<InfoDtmf, DtmfInfoError> {
    let format = format_of(content_type)
        .ok_or_else(|| DtmfInfoError::NotDtmf(content_type.chars().take(64).collect()))?;
    match format {
        DtmfFormat::Plain => {
            let text = body.trim();
            if text.is_empty() {
                return Err(DtmfInfoError::NoSignal);
            }
            Ok(InfoDtmf {
                digit: key(text)?,
                duration_ms: None,
            })
        }
        DtmfFormat::Relay => {
            let mut digit = None;
            let mut duration_ms = None;
            for line in body.lines() {
                let Some((name, value)) = line.split_once('=') else {
                    continue;
                };
                let name = name.trim();
                if name.eq_ignore_ascii_case("Signal") && digit.is_none() {
                    digit = Some(key(value)?);
                } else if name.eq_ignore_ascii_case("Duration") && duration_ms.is_none() {
                    let v = value.trim();
                    duration_ms =
                        Some(v.parse::<u32>().map_err(|_| {
                            DtmfInfoError::BadDuration(v.chars().take(16).collect())
                        })?);
                }
            }
            Ok(InfoDtmf {
                digit: digit.ok_or(DtmfInfoError::NoSignal)?,
                duration_ms,
            })
        }
    }
}

/// The `application/dtmf-relay` body for a key press of `duration_ms`.
pub fn relay_body(digit: char, duration_ms: u32) -> String {
    format!("Signal={digit}\r\nDuration={duration_ms}\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_jssip_relay_bodies() {
        let d = parse("application/dtmf-relay", "Signal=5\r\nDuration=100\r\n").unwrap();
        assert_eq!(
            d,
            InfoDtmf {
                digit: '5',
                duration_ms: Some(100)
            }
        );
        let d = parse(
            "Application/DTMF-Relay; charset=x",
            "signal= #\nduration = 250",
        )
        .unwrap();
        assert_eq!((d.digit, d.duration_ms), ('#', Some(250)));
        assert_eq!(
            parse("application/dtmf-relay", "Signal=a").unwrap().digit,
            'A'
        );
        assert_eq!(
            parse("application/dtmf-relay", "Signal=10").unwrap().digit,
            '*'
        );
        assert_eq!(
            parse("application/dtmf-relay", "Signal=15").unwrap().digit,
            'D'
        );
        assert_eq!(relay_body('7', 160), "Signal=7\r\nDuration=160\r\n");
        let round = parse("application/dtmf-relay", &relay_body('*', 160)).unwrap();
        assert_eq!(round.digit, '*');
    }

    #[test]
    fn reads_plain_dtmf_bodies() {
        assert_eq!(parse("application/dtmf", "9\r\n").unwrap().digit, '9');
        assert_eq!(parse("application/dtmf", "11").unwrap().digit, '#');
    }

    #[test]
    fn refuses_what_is_not_a_key() {
        assert_eq!(
            parse("application/sdp", "Signal=1"),
            Err(DtmfInfoError::NotDtmf("application/sdp".into()))
        );
        assert_eq!(
            parse("application/dtmf-relay", "Duration=100"),
            Err(DtmfInfoError::NoSignal)
        );
        assert_eq!(
            parse("application/dtmf", "  "),
            Err(DtmfInfoError::NoSignal)
        );
        assert!(matches!(
            parse("application/dtmf-relay", "Signal=E"),
            Err(DtmfInfoError::BadSignal(_))
        ));
        assert!(matches!(
            parse("application/dtmf-relay", "Signal=16"),
            Err(DtmfInfoError::BadSignal(_))
        ));
        assert!(matches!(
            parse("application/dtmf-relay", "Signal=12345678901234567890"),
            Err(DtmfInfoError::BadSignal(s)) if s.len() <= 16
        ));
        assert!(matches!(
            parse("application/dtmf-relay", "Signal=1\nDuration=-5"),
            Err(DtmfInfoError::BadDuration(_))
        ));
        assert!(matches!(
            parse("application/dtmf-relay", "Signal=é\u{0}"),
            Err(DtmfInfoError::BadSignal(_))
        ));
    }
}
