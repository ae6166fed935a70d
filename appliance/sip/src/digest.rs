//! HTTP digest for SIP (RFC 3261 §22.4, RFC 8760): the challenge a registrar sends and the
//! credentials that answer it, pure. rsipstack 0.7.14 answers MD5 challenges itself but refuses
//! RFC 8760's `algorithm=SHA-256` spelling, so the driver answers those with this module.

use md5::Md5;
use sha2::{Digest, Sha256};

/// A digest algorithm we answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigestAlgorithm {
    /// MD5 (RFC 2617), the default when a challenge names none.
    Md5,
    /// SHA-256 (RFC 8760, RFC 7616).
    Sha256,
}

impl DigestAlgorithm {
    /// The token as RFC 8760 spells it.
    pub fn token(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Sha256 => "SHA-256",
        }
    }

    fn hash(self, text: &str) -> String {
        let bytes = match self {
            Self::Md5 => Md5::digest(text.as_bytes()).to_vec(),
            Self::Sha256 => Sha256::digest(text.as_bytes()).to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Why a challenge cannot be answered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DigestError {
    /// Not a `Digest` challenge.
    #[error("not a Digest challenge")]
    NotDigest,
    /// A parameter the challenge must have is missing.
    #[error("challenge without {0}")]
    Missing(&'static str),
    /// An algorithm we do not implement (SHA-512-256, the -sess variants).
    #[error("unsupported digest algorithm {0:?}")]
    Algorithm(String),
    /// Only qop=auth-int is offered (we do not hash bodies).
    #[error("unsupported qop {0:?}")]
    Qop(String),
    /// Unbalanced quotes or a parameter without `=`.
    #[error("malformed challenge")]
    Malformed,
}

/// A `WWW-Authenticate` or `Proxy-Authenticate` digest challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// Protection space.
    pub realm: String,
    /// Server nonce.
    pub nonce: String,
    /// Echoed back unchanged.
    pub opaque: Option<String>,
    /// Hash to use.
    pub algorithm: DigestAlgorithm,
    /// The server offers qop=auth (we then send cnonce and nc).
    pub qop_auth: bool,
}

/// Splits `k=v, k="v, w"` into pairs, honouring quotes and backslash escapes.
fn params(text: &str) -> Result<Vec<(String, String)>, DigestError> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            if c == ',' {
                return Err(DigestError::Malformed);
            }
            key.push(c);
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(DigestError::Malformed);
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => value.push(chars.next().ok_or(DigestError::Malformed)?),
                    Some(c) => value.push(c),
                    None => return Err(DigestError::Malformed),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
}

impl Challenge {
    /// Parses a challenge header value (`Digest realm="...", nonce="...", ...`).
    pub fn parse(value: &str) -> Result<Self, DigestError> {
        let value = value.trim();
        let (scheme, rest) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("digest") {
            return Err(DigestError::NotDigest);
        }
        let mut realm = None;
        let mut nonce = None;
        let mut opaque = None;
        let mut algorithm = DigestAlgorithm::Md5;
        let mut qop = None;
        for (k, v) in params(rest)? {
            match k.as_str() {
                "realm" => realm = Some(v),
                "nonce" => nonce = Some(v),
                "opaque" => opaque = Some(v),
                "qop" => qop = Some(v),
                "algorithm" => {
                    algorithm = match v.to_ascii_uppercase().as_str() {
                        "MD5" => DigestAlgorithm::Md5,
                        // RFC 8760 spells it SHA-256; some stacks drop the dash.
                        "SHA-256" | "SHA256" => DigestAlgorithm::Sha256,
                        _ => return Err(DigestError::Algorithm(v)),
                    }
                }
                _ => {}
            }
        }
        let qop_auth = match &qop {
            None => false,
            Some(q) if q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth")) => true,
            Some(q) => return Err(DigestError::Qop(q.clone())),
        };
        Ok(Self {
            realm: realm.ok_or(DigestError::Missing("realm"))?,
            nonce: nonce.ok_or(DigestError::Missing("nonce"))?,
            opaque,
            algorithm,
            qop_auth,
        })
    }

    /// The `Authorization` (or `Proxy-Authorization`) value answering this challenge for
    /// `method uri` (RFC 3261 §22.4; with qop=auth, `cnonce` and nonce count `nc`).
    pub fn answer(
        &self,
        username: &str,
        password: &str,
        method: &str,
        uri: &str,
        cnonce: &str,
        nc: u32,
    ) -> String {
        let a = self.algorithm;
        let ha1 = a.hash(&format!("{username}:{}:{password}", self.realm));
        let ha2 = a.hash(&format!("{method}:{uri}"));
        let nc = format!("{nc:08x}");
        let response = if self.qop_auth {
            a.hash(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce))
        } else {
            a.hash(&format!("{ha1}:{}:{ha2}", self.nonce))
        };
        let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let mut v = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{response}\", algorithm={}",
            quote(username),
            quote(&self.realm),
            quote(&self.nonce),
            quote(uri),
            a.token()
        );
        if self.qop_auth {
            v.push_str(&format!(
                ", qop=auth, cnonce=\"{}\", nc={nc}",
                quote(cnonce)
            ));
        }
        if let Some(o) = &self.opaque {
            v.push_str(&format!(", opaque=\"{}\"", quote(o)));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_8760_sha_256_challenge_is_read() {
        let c = Challenge::parse(
            r#"Digest realm="127.0.0.1", nonce="Zz1a+XYZ", qop="auth", algorithm=SHA-256, opaque="op""#,
        )
        .unwrap();
        assert_eq!(c.algorithm, DigestAlgorithm::Sha256);
        assert_eq!(c.realm, "127.0.0.1");
        assert_eq!(c.nonce, "Zz1a+XYZ");
        assert!(c.qop_auth);
        assert_eq!(c.opaque.as_deref(), Some("op"));
    }

    #[test]
    fn the_rfc_2617_example_gives_its_response() {
        // RFC 2617 §3.5 (HTTP, MD5, qop=auth).
        let c = Challenge::parse(
            r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .unwrap();
        let v = c.answer(
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "0a4f113b",
            1,
        );
        assert!(
            v.contains(r#"response="6629fae49393a05397450978507c4ef1""#),
            "{v}"
        );
        assert!(v.contains("nc=00000001") && v.contains("qop=auth,"), "{v}");
    }

    #[test]
    fn the_rfc_7616_sha_256_example_gives_its_response() {
        // RFC 7616 §3.9.1 (HTTP, SHA-256, qop=auth).
        let c = Challenge::parse(
            r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#,
        )
        .unwrap();
        let v = c.answer(
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            1,
        );
        assert!(
            v.contains(
                r#"response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1""#
            ),
            "{v}"
        );
        assert!(v.contains("algorithm=SHA-256"), "{v}");
    }

    #[test]
    fn bad_challenges_are_errors_not_panics() {
        assert_eq!(
            Challenge::parse("Basic realm=\"x\""),
            Err(DigestError::NotDigest)
        );
        assert_eq!(
            Challenge::parse("Digest nonce=\"n\""),
            Err(DigestError::Missing("realm"))
        );
        assert_eq!(
            Challenge::parse("Digest realm=\"r\", nonce=\"n"),
            Err(DigestError::Malformed)
        );
        assert!(matches!(
            Challenge::parse("Digest realm=r, nonce=n, algorithm=SHA-512-256"),
            Err(DigestError::Algorithm(_))
        ));
        assert!(matches!(
            Challenge::parse("Digest realm=r, nonce=n, qop=auth-int"),
            Err(DigestError::Qop(_))
        ));
        for junk in [
            "",
            "Digest",
            "Digest ,,,",
            "Digest a",
            "Digest =\"",
            "Digest realm=\"\\",
        ] {
            let _ = Challenge::parse(junk);
        }
    }
}
