//! Reading WHIP (RFC 9725) responses: the resource URL, the answer, the ETag
//! for ICE restarts, ICE servers from `Link` headers, and which failures are
//! worth retrying. Pure functions over status, headers and body, so every
//! rule is tested without a server.

use std::fmt;
use std::time::Duration;
use url::Url;

/// Why a WHIP exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WhipError {
    /// The endpoint URL cannot be used.
    #[error("WHIP endpoint {0:?} is not an http(s) URL")]
    BadEndpoint(String),
    /// 401/403: the token is missing or wrong.
    #[error("WHIP endpoint refused the token ({status}): {detail}")]
    Unauthorized {
        /// HTTP status.
        status: u16,
        /// Start of the body.
        detail: String,
    },
    /// Another 4xx: our request was refused; retrying will not help.
    #[error("WHIP endpoint rejected the offer ({status}): {detail}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Start of the body.
        detail: String,
    },
    /// 5xx or 429: the endpoint is in trouble; try again later.
    #[error("WHIP endpoint unavailable ({status}){}: {detail}", retry_after.map(|d| format!(", retry after {}s", d.as_secs())).unwrap_or_default())]
    Unavailable {
        /// HTTP status.
        status: u16,
        /// From `Retry-After`, when given in seconds.
        retry_after: Option<Duration>,
        /// Start of the body.
        detail: String,
    },
    /// A status that WHIP does not allow for this request.
    #[error("WHIP endpoint answered {status}, expected {expected}")]
    UnexpectedStatus {
        /// HTTP status.
        status: u16,
        /// What the protocol allows.
        expected: &'static str,
    },
    /// The body is not an SDP answer (an HTML error page, a proxy's login page…).
    #[error(
        "WHIP endpoint answered {content_type:?} where an SDP answer (application/sdp) was expected"
    )]
    NotSdp {
        /// The Content-Type it sent.
        content_type: String,
    },
    /// 201 without a usable `Location`.
    #[error("WHIP endpoint gave no usable Location for the session: {0}")]
    NoLocation(String),
    /// Could not reach the endpoint at all.
    #[error("WHIP endpoint unreachable: {0}")]
    Transport(String),
}

impl WhipError {
    /// Whether trying again later may succeed (the daemon retries these with backoff).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            WhipError::Unavailable { .. } | WhipError::Transport(_)
        )
    }
}

/// The endpoint's URL, checked.
pub fn endpoint_url(text: &str) -> Result<Url, WhipError> {
    match Url::parse(text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(u),
        _ => Err(WhipError::BadEndpoint(text.to_string())),
    }
}

/// A STUN or TURN server announced by the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URI as given.
    pub url: IceServerUrl,
    /// TURN user name.
    pub username: Option<String>,
    /// TURN password.
    pub credential: Option<String>,
}

/// Transport towards a TURN server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TurnTransport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP (`turns:`).
    Tls,
}

/// A parsed `stun:` / `turn:` / `turns:` URI (RFC 7064, RFC 7065).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IceServerUrl {
    /// A STUN server.
    Stun {
        /// Host name or address.
        host: String,
        /// Port (3478 by default).
        port: u16,
    },
    /// A TURN server.
    Turn {
        /// Host name or address.
        host: String,
        /// Port (3478, or 5349 for `turns:`).
        port: u16,
        /// How to reach it.
        transport: TurnTransport,
    },
}

impl fmt::Display for IceServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IceServerUrl::Stun { host, port } => write!(f, "stun:{host}:{port}"),
            IceServerUrl::Turn {
                host,
                port,
                transport: TurnTransport::Tls,
            } => write!(f, "turns:{host}:{port}?transport=tcp"),
            IceServerUrl::Turn {
                host,
                port,
                transport,
            } => {
                let t = if *transport == TurnTransport::Tcp {
                    "tcp"
                } else {
                    "udp"
                };
                write!(f, "turn:{host}:{port}?transport={t}")
            }
        }
    }
}

impl IceServerUrl {
    /// Parses `stun:host[:port]`, `turn:host[:port][?transport=udp|tcp]`, `turns:host[:port][?transport=tcp]`.
    pub fn parse(text: &str) -> Option<Self> {
        let (scheme, rest) = text.trim().split_once(':')?;
        let (hostport, query) = match rest.split_once('?') {
            Some((h, q)) => (h, Some(q)),
            None => (rest, None),
        };
        let scheme = scheme.to_ascii_lowercase();
        let default_port = if scheme == "turns" { 5349 } else { 3478 };
        let (host, port) = split_host_port(hostport, default_port)?;
        let transport_param = query.and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("transport="))
                .map(str::to_ascii_lowercase)
        });
        match (scheme.as_str(), transport_param.as_deref()) {
            ("stun", None) => Some(IceServerUrl::Stun { host, port }),
            ("turn", None | Some("udp")) => Some(IceServerUrl::Turn {
                host,
                port,
                transport: TurnTransport::Udp,
            }),
            ("turn", Some("tcp")) => Some(IceServerUrl::Turn {
                host,
                port,
                transport: TurnTransport::Tcp,
            }),
            ("turns", None | Some("tcp")) => Some(IceServerUrl::Turn {
                host,
                port,
                transport: TurnTransport::Tls,
            }),
            _ => None,
        }
    }
}

fn split_host_port(text: &str, default_port: u16) -> Option<(String, u16)> {
    if text.is_empty() {
        return None;
    }
    if let Some(rest) = text.strip_prefix('[') {
        // [v6]:port
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host.to_string(), port.parse().ok()?)),
        Some(_) => None,
        None => Some((text.to_string(), default_port)),
    }
}

/// ICE servers from `Link` header values (RFC 9725 §4.6, RFC 8288 syntax).
/// Links that are not `rel="ice-server"` or whose URI is not understood are skipped.
pub fn ice_servers_from_links<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<IceServer> {
    values
        .into_iter()
        .flat_map(split_links)
        .filter_map(|link| {
            let rel = link.param("rel")?;
            if !rel
                .split_ascii_whitespace()
                .any(|r| r.eq_ignore_ascii_case("ice-server"))
            {
                return None;
            }
            Some(IceServer {
                url: IceServerUrl::parse(&link.target)?,
                username: link.param("username"),
                credential: link.param("credential"),
            })
        })
        .collect()
}

struct Link {
    target: String,
    params: Vec<(String, String)>,
}

impl Link {
    fn param(&self, name: &str) -> Option<String> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}

/// Splits one header value into links: `<uri>; k=v; k="v, with comma", <uri2>`.
fn split_links(value: &str) -> Vec<Link> {
    let mut links = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        let Some(after_lt) = rest.strip_prefix('<') else {
            return links;
        };
        let Some((target, after)) = after_lt.split_once('>') else {
            return links;
        };
        let mut link = Link {
            target: target.trim().to_string(),
            params: Vec::new(),
        };
        rest = after;
        // Parameters until the next top-level comma.
        loop {
            rest = rest.trim_start();
            let Some(after_semi) = rest.strip_prefix(';') else {
                break;
            };
            rest = after_semi.trim_start();
            let name_end = rest.find(['=', ';', ',']).unwrap_or(rest.len());
            let name = rest[..name_end].trim().to_string();
            rest = &rest[name_end..];
            let value = if let Some(after_eq) = rest.strip_prefix('=') {
                let after_eq = after_eq.trim_start();
                if let Some(quoted) = after_eq.strip_prefix('"') {
                    let (v, remaining) = read_quoted(quoted);
                    rest = remaining;
                    v
                } else {
                    let end = after_eq.find([';', ',']).unwrap_or(after_eq.len());
                    rest = &after_eq[end..];
                    after_eq[..end].trim().to_string()
                }
            } else {
                String::new()
            };
            if !name.is_empty() {
                link.params.push((name, value));
            }
        }
        links.push(link);
    }
}

/// Reads a quoted-string body (after the opening quote); returns the value and what follows the closing quote.
fn read_quoted(text: &str) -> (String, &str) {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (value, &text[i + 1..]),
            '\\' => {
                if let Some((_, escaped)) = chars.next() {
                    value.push(escaped);
                }
            }
            c => value.push(c),
        }
    }
    (value, "")
}

/// What a successful WHIP POST gave us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhipSession {
    /// The session resource: PATCH and DELETE go here.
    pub resource: Url,
    /// Entity tag for `If-Match` on ICE restarts.
    pub etag: Option<String>,
    /// The SDP answer.
    pub answer: String,
    /// STUN/TURN servers the endpoint offered.
    pub ice_servers: Vec<IceServer>,
}

/// A response as the HTTP layer saw it.
#[derive(Debug, Clone, Copy)]
pub struct Response<'a> {
    /// HTTP status.
    pub status: u16,
    /// Header names (any case) and values, repeated headers repeated.
    pub headers: &'a [(String, String)],
    /// Body.
    pub body: &'a [u8],
}

impl Response<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn headers_named<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn detail(&self) -> String {
        let text = String::from_utf8_lossy(&self.body[..self.body.len().min(200)]);
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// Turns errors common to every WHIP request into [`WhipError`]s.
fn check_status(res: &Response<'_>, ok: &[u16], expected: &'static str) -> Result<(), WhipError> {
    let status = res.status;
    if ok.contains(&status) {
        return Ok(());
    }
    Err(match status {
        401 | 403 => WhipError::Unauthorized {
            status,
            detail: res.detail(),
        },
        429 | 500..=599 => WhipError::Unavailable {
            status,
            retry_after: res
                .header("retry-after")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs),
            detail: res.detail(),
        },
        400..=499 => WhipError::Rejected {
            status,
            detail: res.detail(),
        },
        _ => WhipError::UnexpectedStatus { status, expected },
    })
}

/// Reads the answer to the offer POST. `endpoint` is the URL the POST finally
/// went to (after redirects), against which a relative `Location` resolves.
pub fn read_offer_response(endpoint: &Url, res: Response<'_>) -> Result<WhipSession, WhipError> {
    check_status(&res, &[201], "201 Created")?;
    let content_type = res.header("content-type").unwrap_or("").to_string();
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/sdp") {
        return Err(WhipError::NotSdp { content_type });
    }
    let answer = std::str::from_utf8(res.body)
        .map_err(|_| WhipError::NotSdp {
            content_type: format!("{content_type} (not UTF-8)"),
        })?
        .to_string();
    if !answer.starts_with("v=0") {
        return Err(WhipError::NotSdp {
            content_type: format!("{content_type} (body is not SDP)"),
        });
    }
    let location = res
        .header("location")
        .ok_or_else(|| WhipError::NoLocation("no Location header".into()))?;
    let resource = endpoint
        .join(location.trim())
        .map_err(|e| WhipError::NoLocation(format!("{location:?}: {e}")))?;
    Ok(WhipSession {
        resource,
        etag: res.header("etag").map(|e| e.trim().to_string()),
        answer,
        ice_servers: ice_servers_from_links(res.headers_named("link")),
    })
}

/// Reads the answer to a PATCH (trickle: 204; ICE restart: 200 with a new sdpfrag and ETag).
pub fn read_patch_response(
    res: Response<'_>,
) -> Result<Option<(String, Option<String>)>, WhipError> {
    check_status(&res, &[200, 204], "200 or 204")?;
    if res.status == 204 {
        return Ok(None);
    }
    let frag = String::from_utf8_lossy(res.body).into_owned();
    Ok(Some((
        frag,
        res.header("etag").map(|e| e.trim().to_string()),
    )))
}

/// Reads the answer to the DELETE that ends a session.
pub fn read_delete_response(res: Response<'_>) -> Result<(), WhipError> {
    // 404: the endpoint already forgot the session, which is what we wanted.
    check_status(&res, &[200, 202, 204, 404], "200")
}

/// Delay before retry number `attempt` (0-based): exponential from `base`,
/// capped at `max`, with "full jitter" (`jitter` in 0..1 picks a point in the
/// window) so a fleet of carts does not reconnect in lock step after an outage.
/// A server's `Retry-After` wins when longer.
pub fn retry_delay(
    attempt: u32,
    base: Duration,
    max: Duration,
    jitter: f64,
    retry_after: Option<Duration>,
) -> Duration {
    let exp = base.saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX));
    let window = exp.min(max);
    let jittered = window.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
    match retry_after {
        Some(ra) if ra > jittered => ra.min(max.saturating_mul(4)),
        _ => jittered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const SDP: &[u8] = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n";

    #[test]
    fn created_gives_resource_etag_answer_and_ice_servers() {
        let endpoint = Url::parse("https://sfu.example/whip/endpoint/cart").unwrap();
        let h = headers(&[
            ("Content-Type", "application/sdp; charset=utf-8"),
            ("Location", "/whip/resource/abc"),
            ("ETag", "\"xyz\""),
            (
                "Link",
                "<stun:stun.example.net>; rel=\"ice-server\", <turn:turn.example.net?transport=tcp>; rel=\"ice-server\"; username=\"u\"; credential=\"p,w\"; credential-type=\"password\"",
            ),
            ("link", "<https://example.net/doc>; rel=\"help\""),
            (
                "link",
                "<turns:turn.example.net:443?transport=tcp>; rel=ice-server; username=u2; credential=p2",
            ),
        ]);
        let s = read_offer_response(
            &endpoint,
            Response {
                status: 201,
                headers: &h,
                body: SDP,
            },
        )
        .unwrap();
        assert_eq!(s.resource.as_str(), "https://sfu.example/whip/resource/abc");
        assert_eq!(s.etag.as_deref(), Some("\"xyz\""));
        assert_eq!(
            s.ice_servers,
            vec![
                IceServer {
                    url: IceServerUrl::Stun {
                        host: "stun.example.net".into(),
                        port: 3478
                    },
                    username: None,
                    credential: None
                },
                IceServer {
                    url: IceServerUrl::Turn {
                        host: "turn.example.net".into(),
                        port: 3478,
                        transport: TurnTransport::Tcp
                    },
                    username: Some("u".into()),
                    credential: Some("p,w".into())
                },
                IceServer {
                    url: IceServerUrl::Turn {
                        host: "turn.example.net".into(),
                        port: 443,
                        transport: TurnTransport::Tls
                    },
                    username: Some("u2".into()),
                    credential: Some("p2".into())
                },
            ]
        );
    }

    #[test]
    fn html_error_page_is_not_an_answer() {
        let endpoint = Url::parse("http://127.0.0.1:1/whip").unwrap();
        let h = headers(&[("Content-Type", "text/html"), ("Location", "/x")]);
        let err = read_offer_response(
            &endpoint,
            Response {
                status: 201,
                headers: &h,
                body: b"<html>login</html>",
            },
        )
        .unwrap_err();
        assert_eq!(
            err,
            WhipError::NotSdp {
                content_type: "text/html".into()
            }
        );
        assert!(!err.is_retryable());
    }

    #[test]
    fn statuses_map_to_errors_with_the_right_retry_policy() {
        let endpoint = Url::parse("http://127.0.0.1:1/whip").unwrap();
        type Case<'a> = (u16, &'a [(&'a str, &'a str)], &'a str, bool);
        let table: &[Case] = &[
            (
                401,
                &[],
                "WHIP endpoint refused the token (401): nope",
                false,
            ),
            (
                403,
                &[],
                "WHIP endpoint refused the token (403): nope",
                false,
            ),
            (
                400,
                &[],
                "WHIP endpoint rejected the offer (400): nope",
                false,
            ),
            (
                415,
                &[],
                "WHIP endpoint rejected the offer (415): nope",
                false,
            ),
            (
                503,
                &[("Retry-After", "7")],
                "WHIP endpoint unavailable (503), retry after 7s: nope",
                true,
            ),
            (500, &[], "WHIP endpoint unavailable (500): nope", true),
            (
                200,
                &[],
                "WHIP endpoint answered 200, expected 201 Created",
                false,
            ),
        ];
        for (status, h, want, retry) in table {
            let h = headers(h);
            let err = read_offer_response(
                &endpoint,
                Response {
                    status: *status,
                    headers: &h,
                    body: b"nope",
                },
            )
            .unwrap_err();
            assert_eq!(err.to_string(), *want);
            assert_eq!(err.is_retryable(), *retry, "{status}");
        }
    }

    #[test]
    fn created_without_location_is_an_error() {
        let endpoint = Url::parse("http://127.0.0.1:1/whip").unwrap();
        let h = headers(&[("Content-Type", "application/sdp")]);
        assert!(matches!(
            read_offer_response(
                &endpoint,
                Response {
                    status: 201,
                    headers: &h,
                    body: SDP
                }
            ),
            Err(WhipError::NoLocation(_))
        ));
    }

    #[test]
    fn endpoint_must_be_http() {
        assert!(endpoint_url("https://a.example/whip").is_ok());
        assert!(endpoint_url("ftp://a.example/").is_err());
        assert!(endpoint_url("not a url").is_err());
    }

    #[test]
    fn ice_server_urls_parse_as_rfc_7064_and_7065_say() {
        let cases: &[(&str, Option<&str>)] = &[
            ("stun:10.0.0.1", Some("stun:10.0.0.1:3478")),
            ("stun:[::1]:19302", Some("stun:::1:19302")),
            (
                "turn:t.example:3479",
                Some("turn:t.example:3479?transport=udp"),
            ),
            (
                "TURN:t.example?transport=TCP",
                Some("turn:t.example:3478?transport=tcp"),
            ),
            (
                "turns:t.example",
                Some("turns:t.example:5349?transport=tcp"),
            ),
            ("turns:t.example?transport=udp", None),
            ("stun:", None),
            ("stun:h:notaport", None),
            ("http://x", None),
        ];
        for (text, want) in cases {
            assert_eq!(
                IceServerUrl::parse(text).map(|u| u.to_string()).as_deref(),
                *want,
                "{text}"
            );
        }
    }

    #[test]
    fn link_parser_survives_garbage() {
        for value in [
            "",
            "<",
            "<>",
            "<x>;",
            "<x>; rel=",
            "<x>; rel=\"",
            ";;;,,,<<>>",
            "<stun:a>; rel=\"ice-server\\",
        ] {
            let _ = ice_servers_from_links([value]);
        }
        let mut seed = 0x1234_5678_u64;
        for _ in 0..2000 {
            let len = (seed % 64) as usize;
            let s: String = (0..len)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    b"<>;=\",:?stunr \\ice-server"[(seed >> 33) as usize % 24] as char
                })
                .collect();
            let _ = ice_servers_from_links([s.as_str()]);
        }
    }

    #[test]
    fn patch_and_delete_responses() {
        assert_eq!(
            read_patch_response(Response {
                status: 204,
                headers: &[],
                body: b""
            }),
            Ok(None)
        );
        let h = headers(&[("ETag", "\"2\"")]);
        assert_eq!(
            read_patch_response(Response {
                status: 200,
                headers: &h,
                body: b"a=ice-ufrag:x"
            }),
            Ok(Some(("a=ice-ufrag:x".into(), Some("\"2\"".into()))))
        );
        assert!(
            read_patch_response(Response {
                status: 412,
                headers: &[],
                body: b""
            })
            .is_err()
        );
        assert!(
            read_delete_response(Response {
                status: 200,
                headers: &[],
                body: b""
            })
            .is_ok()
        );
        assert!(
            read_delete_response(Response {
                status: 404,
                headers: &[],
                body: b""
            })
            .is_ok()
        );
    }

    #[test]
    fn retry_delay_grows_caps_and_honours_retry_after() {
        let base = Duration::from_millis(500);
        let max = Duration::from_secs(30);
        assert_eq!(
            retry_delay(0, base, max, 1.0, None),
            Duration::from_millis(500)
        );
        assert_eq!(
            retry_delay(0, base, max, 0.0, None),
            Duration::from_millis(250)
        );
        assert_eq!(retry_delay(3, base, max, 1.0, None), Duration::from_secs(4));
        assert_eq!(retry_delay(40, base, max, 1.0, None), max);
        assert_eq!(
            retry_delay(0, base, max, 1.0, Some(Duration::from_secs(10))),
            Duration::from_secs(10)
        );
    }
}
