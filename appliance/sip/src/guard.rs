//! Which SIP datagrams reach the stack, and what to answer those that must not.
//!
//! rsipstack 0.7.14 drops every datagram its parser refuses, and its `Method` is a closed enum:
//! a request with an extension method (RFC 3261 §8.2.1: 405 or 501) or a malformed one (§21.4.1:
//! 400) would get no answer at all, and its sender would retransmit it for 32 s. It also accepts
//! a datagram whose Content-Length promises more body than arrived, which §18.3 calls an error
//! (400 for a request). The UDP socket the stack reads from passes each datagram through
//! [`screen`], which builds the stateless answer from the raw text, as far as §8.2.6 allows: a
//! response copies Via, From, To, Call-ID and CSeq, so a request missing any of them (or an
//! ACK, or a response) is dropped.

/// The methods the cart implements, for `Allow` in answers: another method the stack knows
/// gets 405 with this list, one it does not know 501.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO";

/// Methods rsipstack parses: a request naming one of these that fails to parse is malformed,
/// any other method token is simply one the cart does not implement.
const STACK_METHODS: [&str; 14] = [
    "ACK",
    "BYE",
    "CANCEL",
    "INFO",
    "INVITE",
    "MESSAGE",
    "NOTIFY",
    "OPTIONS",
    "PRACK",
    "PUBLISH",
    "REFER",
    "REGISTER",
    "SUBSCRIBE",
    "UPDATE",
];

/// The headers a response copies (RFC 3261 §8.2.6.2), with their compact forms.
const COPIED: [(&str, Option<&str>); 5] = [
    ("via", Some("v")),
    ("from", Some("f")),
    ("to", Some("t")),
    ("call-id", Some("i")),
    ("cseq", None),
];

/// What becomes of one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screened {
    /// The stack takes it.
    Pass,
    /// The stack never sees it: send this response back to the datagram's source.
    Answer {
        /// The status code (400 or 501), for counting.
        status: u16,
        /// The whole response.
        response: Vec<u8>,
    },
    /// The stack never sees it, and nothing can be answered (not a request, an ACK, or a
    /// header a response needs is missing).
    Drop(&'static str),
}

/// Screens one datagram. `parsed` says whether the stack's parser accepts it; `to_tag` is
/// added to To when an answered request had none (a fresh random token from the caller: this
/// module keeps no state).
pub fn screen(datagram: &[u8], parsed: bool, to_tag: &str) -> Screened {
    let Some(head_end) = find(datagram, b"\r\n\r\n") else {
        return if parsed {
            Screened::Pass
        } else {
            Screened::Drop("no end of headers")
        };
    };
    let Ok(head) = std::str::from_utf8(&datagram[..head_end]) else {
        return Screened::Drop("headers are not UTF-8");
    };
    let body = datagram.len() - head_end - 4;
    let truncated = content_length(head).is_some_and(|declared| declared > body);
    if parsed && !truncated {
        return Screened::Pass;
    }
    if head.starts_with("SIP/") {
        return Screened::Drop("a response");
    }
    let lines: Vec<String> = unfold(head).collect();
    let Some((request_line, headers)) = lines.split_first() else {
        return Screened::Drop("empty");
    };
    let mut parts = request_line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Screened::Drop("not a request line");
    };
    if !is_token(method) || uri.is_empty() || !version.eq_ignore_ascii_case("SIP/2.0") {
        return Screened::Drop("not a request line");
    }
    if method.eq_ignore_ascii_case("ACK") {
        return Screened::Drop("an ACK is never answered");
    }
    let mut copied: [Vec<&str>; 5] = Default::default();
    for line in headers {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if let Some(i) = COPIED.iter().position(|(long, short)| {
            name.eq_ignore_ascii_case(long) || short.is_some_and(|s| name.eq_ignore_ascii_case(s))
        }) {
            copied[i].push(value.trim());
        }
    }
    if let Some(i) = copied.iter().position(Vec::is_empty) {
        return Screened::Drop(match i {
            0 => "no Via",
            1 => "no From",
            2 => "no To",
            3 => "no Call-ID",
            _ => "no CSeq",
        });
    }
    let known = STACK_METHODS.iter().any(|m| m.eq_ignore_ascii_case(method));
    let (status, reason, warning) = if truncated {
        (400, "Bad Request", "Content-Length exceeds the datagram")
    } else if known {
        (400, "Bad Request", "malformed request")
    } else {
        (501, "Not Implemented", "")
    };
    let [via, from, to, call_id, cseq] = copied;
    let mut response = format!("SIP/2.0 {status} {reason}\r\n");
    for v in via {
        response.push_str(&format!("Via: {v}\r\n"));
    }
    response.push_str(&format!("From: {}\r\n", from[0]));
    let to = to[0];
    if has_tag(to) {
        response.push_str(&format!("To: {to}\r\n"));
    } else {
        response.push_str(&format!("To: {to};tag={to_tag}\r\n"));
    }
    response.push_str(&format!("Call-ID: {}\r\nCSeq: {}\r\n", call_id[0], cseq[0]));
    if status == 501 {
        response.push_str(&format!("Allow: {ALLOW}\r\n"));
    } else {
        response.push_str(&format!("Warning: 399 telecart \"{warning}\"\r\n"));
    }
    response.push_str("Content-Length: 0\r\n\r\n");
    Screened::Answer {
        status,
        response: response.into_bytes(),
    }
}

/// The Content-Length (or compact `l`) of a message's headers, if it has a readable one.
fn content_length(head: &str) -> Option<usize> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        let name = name.trim();
        (name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l"))
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Header lines with continuation lines (leading space or tab) joined to the line they continue.
fn unfold(head: &str) -> impl Iterator<Item = String> + '_ {
    let mut lines = head.split("\r\n").peekable();
    std::iter::from_fn(move || {
        let mut line = lines.next()?.to_string();
        while let Some(next) = lines.next_if(|l| l.starts_with([' ', '\t'])) {
            line.push(' ');
            line.push_str(next.trim_start());
        }
        Some(line)
    })
}

/// RFC 3261 §25.1 `token`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

/// Whether a To value already carries a tag (outside its `<...>` URI).
fn has_tag(to: &str) -> bool {
    let params = to.rsplit_once('>').map_or(to, |(_, after)| after);
    params
        .split(';')
        .skip(1)
        .any(|p| p.trim().to_ascii_lowercase().starts_with("tag="))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, extra: &str) -> String {
        format!(
            "{method} sip:cart@h SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n\
             v: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK0\r\nFrom: <sip:dr@h>;tag=a\r\nTo: <sip:cart@h>\r\n\
             Call-ID: c1\r\nCSeq: 7 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
        )
    }

    fn answer(datagram: &str) -> (u16, String) {
        match screen(datagram.as_bytes(), false, "t1") {
            Screened::Answer { status, response } => (status, String::from_utf8(response).unwrap()),
            other => panic!("not answered: {other:?}"),
        }
    }

    #[test]
    fn an_unknown_method_gets_501_with_allow_and_the_copied_headers() {
        let (status, r) = answer(&request("FROBNICATE", ""));
        assert_eq!(status, 501);
        assert!(r.starts_with("SIP/2.0 501 Not Implemented\r\n"), "{r}");
        assert!(r.contains("Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK0\r\n"), "{r}");
        assert!(r.contains("To: <sip:cart@h>;tag=t1\r\n"), "{r}");
        assert!(r.contains("CSeq: 7 FROBNICATE\r\n"), "{r}");
        assert!(r.contains(&format!("Allow: {ALLOW}\r\n")), "{r}");
        assert!(r.ends_with("Content-Length: 0\r\n\r\n"), "{r}");
    }

    #[test]
    fn a_known_method_the_parser_refused_gets_400_and_keeps_an_existing_tag() {
        let req = request("INVITE", "").replace("To: <sip:cart@h>", "t: <sip:cart@h>;tag=x");
        let (status, r) = answer(&req);
        assert_eq!(status, 400);
        assert!(r.contains("To: <sip:cart@h>;tag=x\r\n"), "{r}");
        assert!(!r.contains("Allow"), "{r}");
    }

    #[test]
    fn what_the_stack_parses_passes_unless_its_body_is_short() {
        let pass = |d: &str| screen(d.as_bytes(), true, "t") == Screened::Pass;
        assert!(pass(&request("INVITE", "")));
        assert!(pass("\r\n\r\n"));
        assert!(pass(&format!(
            "{}abc",
            request("INVITE", "").replace("Length: 0", "Length: 3")
        )));
        let short = format!(
            "{}abc",
            request("INVITE", "").replace("Length: 0", "Length: 9999")
        );
        let Screened::Answer { status, response } = screen(short.as_bytes(), true, "t") else {
            panic!("not answered");
        };
        assert_eq!(status, 400);
        let response = String::from_utf8(response).unwrap();
        assert!(
            response.contains("Warning: 399 telecart \"Content-Length exceeds the datagram\""),
            "{response}"
        );
        let short_response = "SIP/2.0 200 OK\r\nVia: v\r\nFrom: f\r\nTo: t\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nl: 50\r\n\r\n";
        assert_eq!(
            screen(short_response.as_bytes(), true, "t"),
            Screened::Drop("a response")
        );
    }

    #[test]
    fn folded_headers_are_joined() {
        let req = request("FOO", "").replace("Call-ID: c1", "Call-ID:\r\n  c1");
        assert!(answer(&req).1.contains("Call-ID: c1\r\n"));
    }

    #[test]
    fn what_cannot_be_answered_is_dropped() {
        let drop = |d: &str| matches!(screen(d.as_bytes(), false, "t"), Screened::Drop(_));
        assert!(drop(&request("ACK", "")));
        assert!(drop("SIP/2.0 200 OK\r\nVia: x\r\n\r\n"));
        assert!(drop("\u{0}\u{1}\u{2}"));
        assert!(drop("INVITE\r\n\r\n"));
        assert!(drop(&request("FOO", "").replace("Call-ID: c1\r\n", "")));
        assert!(drop(&request("FOO", "").replace("CSeq: 7 FOO\r\n", "")));
        assert!(drop(&request("FO O", "")));
        assert!(drop(
            &request("FOO", "").replace("SIP/2.0\r\n", "SIP/3.0\r\n")
        ));
        assert!(drop(&request("FOO", "").replace("\r\n\r\n", "\r\n")));
    }

    #[test]
    fn the_answer_is_never_longer_than_what_it_answers_plus_a_small_constant() {
        let req = request("FOO", &format!("X-Huge: {}\r\n", "a".repeat(60_000)));
        let (_, r) = answer(&req);
        assert!(r.len() < 400, "{}", r.len());
    }
}
