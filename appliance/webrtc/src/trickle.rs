//! Trickle ICE and ICE restarts over WHIP (RFC 9725 §4.3): the
//! `application/trickle-ice-sdpfrag` bodies (RFC 8840) the client PATCHes,
//! the fragment the endpoint answers a restart with, and the SDP answer the
//! cart's ICE agent is given after a restart (the last answer with the
//! endpoint's new credentials). Pure string work, so every rule is tested
//! without a server; every input from the endpoint is untrusted.

/// The media type of a PATCH body.
pub const SDPFRAG: &str = "application/trickle-ice-sdpfrag";

/// Most candidate lines read from one fragment (more is refused, not truncated).
pub const MAX_CANDIDATES: usize = 64;
/// Longest line read from a fragment.
const MAX_LINE: usize = 1024;

/// Why a fragment or answer cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrickleError {
    /// The offer has no media section to anchor the fragment on.
    #[error("the offer has no m= line with an a=mid")]
    NoMedia,
    /// The endpoint's fragment is not usable.
    #[error("bad sdpfrag from the endpoint: {0}")]
    BadFragment(String),
    /// A restart answer must carry the endpoint's new ICE credentials.
    #[error("the ICE restart answer has no a=ice-ufrag/a=ice-pwd")]
    NoCredentials,
}

/// ICE credentials (`a=ice-ufrag`, `a=ice-pwd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceCredentials {
    /// User name fragment.
    pub ufrag: String,
    /// Password.
    pub pwd: String,
}

/// What a fragment (or any SDP read as one) says about ICE.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fragment {
    /// `a=ice-ufrag` (the first one).
    pub ufrag: Option<String>,
    /// `a=ice-pwd` (the first one).
    pub pwd: Option<String>,
    /// Candidate attributes without the `a=` (`candidate:…`), in order, without duplicates.
    pub candidates: Vec<String>,
    /// `a=end-of-candidates` was present.
    pub end_of_candidates: bool,
}

impl Fragment {
    /// Reads a fragment (or a whole SDP). Lines may end in CRLF or LF.
    pub fn parse(text: &str) -> Result<Fragment, TrickleError> {
        let mut frag = Fragment::default();
        for raw in text.lines() {
            let line = raw.trim_end_matches('\r');
            if line.len() > MAX_LINE {
                return Err(TrickleError::BadFragment(format!(
                    "a line of {} bytes",
                    line.len()
                )));
            }
            if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
                frag.ufrag.get_or_insert_with(|| v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
                frag.pwd.get_or_insert_with(|| v.trim().to_string());
            } else if let Some(c) = line.strip_prefix("a=") {
                if c.starts_with("candidate:") {
                    if c.split_ascii_whitespace().count() < 8 {
                        return Err(TrickleError::BadFragment(format!("short candidate {c:?}")));
                    }
                    if frag.candidates.len() == MAX_CANDIDATES {
                        return Err(TrickleError::BadFragment(format!(
                            "more than {MAX_CANDIDATES} candidates"
                        )));
                    }
                    let c = c.trim().to_string();
                    if !frag.candidates.contains(&c) {
                        frag.candidates.push(c);
                    }
                } else if c.trim() == "end-of-candidates" {
                    frag.end_of_candidates = true;
                }
            }
        }
        if frag.ufrag.as_deref() == Some("") || frag.pwd.as_deref() == Some("") {
            return Err(TrickleError::BadFragment("empty ICE credentials".into()));
        }
        Ok(frag)
    }

    /// The credentials, when both are present.
    pub fn credentials(&self) -> Option<IceCredentials> {
        Some(IceCredentials {
            ufrag: self.ufrag.clone()?,
            pwd: self.pwd.clone()?,
        })
    }
}

/// The parts of our offer every fragment repeats: the BUNDLE group and the
/// first media section (RFC 8840 §4.4: with BUNDLE, candidates go to the
/// first m-line only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentTemplate {
    bundle: Option<String>,
    m_line: String,
    mid: String,
}

impl FragmentTemplate {
    /// From the offer the session was created with.
    pub fn from_offer(offer: &str) -> Result<Self, TrickleError> {
        let mut bundle = None;
        let mut m_line = None;
        for raw in offer.lines() {
            let line = raw.trim_end_matches('\r');
            if line.starts_with("a=group:BUNDLE") && bundle.is_none() {
                bundle = Some(line.to_string());
            } else if line.starts_with("m=") {
                if m_line.is_some() {
                    break;
                }
                m_line = Some(line.to_string());
            } else if let (Some(m), Some(mid)) = (&m_line, line.strip_prefix("a=mid:")) {
                return Ok(Self {
                    bundle,
                    m_line: m.clone(),
                    mid: mid.trim().to_string(),
                });
            }
        }
        Err(TrickleError::NoMedia)
    }

    /// A PATCH body: our (new, for a restart) credentials and `candidates`
    /// (`candidate:…` attributes without the `a=`), CRLF line ends.
    pub fn fragment(
        &self,
        credentials: &IceCredentials,
        candidates: &[String],
        end_of_candidates: bool,
    ) -> String {
        let mut out = String::new();
        out.push_str("a=ice-options:trickle ice2\r\n");
        if let Some(b) = &self.bundle {
            out.push_str(b);
            out.push_str("\r\n");
        }
        out.push_str(&self.m_line);
        out.push_str("\r\n");
        out.push_str(&format!("a=mid:{}\r\n", self.mid));
        out.push_str(&format!("a=ice-ufrag:{}\r\n", credentials.ufrag));
        out.push_str(&format!("a=ice-pwd:{}\r\n", credentials.pwd));
        for c in candidates {
            out.push_str("a=");
            out.push_str(c.strip_prefix("a=").unwrap_or(c));
            out.push_str("\r\n");
        }
        if end_of_candidates {
            out.push_str("a=end-of-candidates\r\n");
        }
        out
    }
}

/// What kind of PATCH this is, for `If-Match` (RFC 9725 §4.3.1/§4.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// New candidates with the current credentials.
    Trickle,
    /// New credentials: an ICE restart.
    Restart,
}

/// The `If-Match` value: the session's ETag for a trickle (`"*"` when the
/// endpoint gave none), always `"*"` for a restart.
pub fn if_match(kind: PatchKind, etag: Option<&str>) -> String {
    match (kind, etag) {
        (PatchKind::Trickle, Some(e)) if !e.trim().is_empty() => e.trim().to_string(),
        _ => "\"*\"".to_string(),
    }
}

/// The SDP answer to give our ICE agent after the endpoint accepted a
/// restart: `previous` (the last answer) with every `a=ice-ufrag`/`a=ice-pwd`
/// replaced by the fragment's, and its candidates instead of the old ones
/// when it has any (an endpoint that keeps its addresses sends none, as
/// simple-whip-server does). Line ends follow `previous`.
pub fn restart_answer(previous: &str, frag: &Fragment) -> Result<String, TrickleError> {
    let creds = frag.credentials().ok_or(TrickleError::NoCredentials)?;
    let eol = if previous.contains("\r\n") {
        "\r\n"
    } else {
        "\n"
    };
    let replace_candidates = !frag.candidates.is_empty();
    let mut out = String::with_capacity(previous.len() + 256);
    let mut media_sections = 0;
    let mut inserted = false;
    let insert = |out: &mut String| {
        for c in &frag.candidates {
            out.push_str("a=");
            out.push_str(c);
            out.push_str(eol);
        }
    };
    for raw in previous.lines() {
        let line = raw.trim_end_matches('\r');
        if line.starts_with("m=") {
            if media_sections == 1 && replace_candidates && !inserted {
                insert(&mut out);
                inserted = true;
            }
            media_sections += 1;
        }
        if line.starts_with("a=ice-ufrag:") {
            out.push_str(&format!("a=ice-ufrag:{}{eol}", creds.ufrag));
        } else if line.starts_with("a=ice-pwd:") {
            out.push_str(&format!("a=ice-pwd:{}{eol}", creds.pwd));
        } else if replace_candidates
            && (line.starts_with("a=candidate:") || line == "a=end-of-candidates")
        {
            // Dropped: the fragment's candidates replace them.
        } else if line.starts_with("a=candidate:") {
            // A kept candidate naming the old ufrag would be refused by the ICE agent.
            out.push_str(&with_ufrag(line, &creds.ufrag));
            out.push_str(eol);
        } else if !line.is_empty() {
            out.push_str(line);
            out.push_str(eol);
        }
    }
    if media_sections == 0 {
        return Err(TrickleError::NoMedia);
    }
    if replace_candidates && !inserted {
        insert(&mut out);
    }
    Ok(out)
}

/// `line` with the value of its `ufrag` extension (if any) set to `ufrag`.
fn with_ufrag(line: &str, ufrag: &str) -> String {
    let mut tokens: Vec<&str> = line.split(' ').collect();
    if let Some(i) = tokens.iter().position(|t| *t == "ufrag")
        && i + 1 < tokens.len()
    {
        tokens[i + 1] = ufrag;
    }
    tokens.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE 0 1 2\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 108 109\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
        a=ice-ufrag:old\r\na=ice-pwd:oldpassword\r\n\
        a=candidate:1 1 udp 2130706175 10.0.0.2 5000 typ host\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=ice-ufrag:old\r\na=ice-pwd:oldpassword\r\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n";

    fn creds() -> IceCredentials {
        IceCredentials {
            ufrag: "nEwU".into(),
            pwd: "newpasswordnewpassword".into(),
        }
    }

    #[test]
    fn fragment_repeats_bundle_first_m_line_and_mid() {
        let t = FragmentTemplate::from_offer(OFFER).unwrap();
        let f = t.fragment(
            &creds(),
            &[
                "candidate:2 1 udp 16777215 10.0.0.9 50000 typ relay raddr 10.0.0.2 rport 6000"
                    .into(),
            ],
            false,
        );
        assert_eq!(
            f,
            "a=ice-options:trickle ice2\r\na=group:BUNDLE 0 1 2\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 108 109\r\na=mid:0\r\n\
             a=ice-ufrag:nEwU\r\na=ice-pwd:newpasswordnewpassword\r\n\
             a=candidate:2 1 udp 16777215 10.0.0.9 50000 typ relay raddr 10.0.0.2 rport 6000\r\n"
        );
        // What we send reads back as what we meant.
        let back = Fragment::parse(&f).unwrap();
        assert_eq!(back.credentials(), Some(creds()));
        assert_eq!(back.candidates.len(), 1);
        assert!(!back.end_of_candidates);
        assert!(
            t.fragment(&creds(), &[], true)
                .ends_with("a=end-of-candidates\r\n")
        );
    }

    #[test]
    fn offer_without_media_has_no_template() {
        assert_eq!(
            FragmentTemplate::from_offer("v=0\r\ns=-\r\n"),
            Err(TrickleError::NoMedia)
        );
        assert_eq!(
            FragmentTemplate::from_offer("v=0\r\nm=video 9 X 1\r\nm=audio 9 X 2\r\na=mid:1\r\n"),
            Err(TrickleError::NoMedia),
            "the first m-line has no mid"
        );
    }

    #[test]
    fn if_match_uses_the_etag_for_trickle_and_star_for_restart() {
        assert_eq!(if_match(PatchKind::Trickle, Some("\"abc\"")), "\"abc\"");
        assert_eq!(if_match(PatchKind::Trickle, None), "\"*\"");
        assert_eq!(if_match(PatchKind::Trickle, Some(" ")), "\"*\"");
        assert_eq!(if_match(PatchKind::Restart, Some("\"abc\"")), "\"*\"");
    }

    #[test]
    fn janus_restart_answer_keeps_candidates_and_swaps_credentials() {
        // simple-whip-server answers a restart with credentials only.
        let frag = Fragment::parse("a=ice-ufrag:jAn\r\na=ice-pwd:januspassword\r\n").unwrap();
        let answer = restart_answer(OFFER, &frag).unwrap();
        assert!(!answer.contains("a=ice-ufrag:old"));
        assert_eq!(answer.matches("a=ice-ufrag:jAn\r\n").count(), 2);
        assert_eq!(answer.matches("a=ice-pwd:januspassword\r\n").count(), 2);
        assert!(answer.contains("a=candidate:1 1 udp 2130706175 10.0.0.2 5000 typ host\r\n"));
        assert_eq!(answer.lines().count(), OFFER.lines().count());
    }

    #[test]
    fn kept_candidates_take_the_new_ufrag() {
        // str0m writes the ufrag into its candidates; the old one would be refused.
        let previous = OFFER.replace("typ host\r\n", "typ host ufrag old\r\n");
        let frag =
            Fragment::parse("a=ice-ufrag:nEw\r\na=ice-pwd:newpasswordnewpassword\r\n").unwrap();
        let answer = restart_answer(&previous, &frag).unwrap();
        assert!(
            answer.contains("10.0.0.2 5000 typ host ufrag nEw\r\n"),
            "{answer}"
        );
        assert!(!answer.contains("ufrag old"));
    }

    #[test]
    fn restart_answer_with_candidates_replaces_the_old_ones() {
        let frag = Fragment::parse(
            "a=ice-ufrag:u2\na=ice-pwd:p2p2p2p2p2p2p2p2p2p2p2\n\
             a=candidate:9 1 udp 2130706431 10.1.1.1 7000 typ host\na=end-of-candidates\n",
        )
        .unwrap();
        assert!(frag.end_of_candidates);
        let answer = restart_answer(OFFER, &frag).unwrap();
        assert!(!answer.contains("10.0.0.2 5000"));
        let first_audio = answer.find("m=audio").unwrap();
        let cand = answer.find("a=candidate:9 1 udp").unwrap();
        assert!(cand < first_audio, "candidates in the first media section");
        assert_eq!(answer.matches("a=candidate:").count(), 1);
    }

    #[test]
    fn restart_answer_needs_credentials() {
        let frag = Fragment::parse("a=ice-ufrag:only\r\n").unwrap();
        assert_eq!(
            restart_answer(OFFER, &frag),
            Err(TrickleError::NoCredentials)
        );
    }

    #[test]
    fn fragments_from_the_endpoint_are_untrusted() {
        assert!(Fragment::parse("a=candidate:1 1 udp\r\n").is_err());
        assert!(Fragment::parse("a=ice-ufrag:\r\na=ice-pwd:x\r\n").is_err());
        assert!(Fragment::parse(&"a".repeat(5000)).is_err());
        let many: String = (0..100)
            .map(|i| format!("a=candidate:{i} 1 udp 1 10.0.0.1 {i} typ host\r\n"))
            .collect();
        assert!(Fragment::parse(&many).is_err());
        // Garbage that is not an attribute is ignored, duplicates once.
        let f = Fragment::parse(
            "\u{0}\u{1}garbage\r\na=candidate:1 1 udp 1 10.0.0.1 1 typ host\r\n\
             a=candidate:1 1 udp 1 10.0.0.1 1 typ host\r\n",
        )
        .unwrap();
        assert_eq!(f.candidates.len(), 1);
        let mut seed = 7u64;
        for _ in 0..2000 {
            let s: String = (0..(seed % 80))
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    b"a=ice-ufrag:pwdcandte \r\n1m"[(seed >> 33) as usize % 25] as char
                })
                .collect();
            if let Ok(f) = Fragment::parse(&s) {
                let _ = restart_answer(OFFER, &f);
            }
        }
    }
}
