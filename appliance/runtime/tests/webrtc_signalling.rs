//! Bad WHIP endpoints: an HTML page where an SDP answer belongs, a refused
//! token, an endpoint that stays down (retried, then a clear error), a
//! redirect (followed), malformed SDP in a 201. Each ends in a clear error and
//! a clean teardown; a tiny HTTP server on loopback plays the endpoint.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use telecart_runtime::webrtc::{PublishOptions, publish_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves canned responses: `respond(n)` gives the raw response to the n-th request.
async fn endpoint(respond: fn(u32, u16) -> String) -> (String, Arc<AtomicU32>) {
    let (port, count) = serve(None, respond).await;
    (format!("http://127.0.0.1:{port}/whip/cart"), count)
}

/// The same over HTTPS, with a certificate for `localhost` from a private CA;
/// returns the URL, the request count and the CA's PEM file.
async fn endpoint_tls(
    respond: fn(u32, u16) -> String,
) -> (String, Arc<AtomicU32>, tempfile::TempDir) {
    let pki = common::private_pki();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &pki.ca_pem).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![pki.cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(pki.key.serialize_der()).unwrap(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (port, count) = serve(Some(acceptor), respond).await;
    (format!("https://localhost:{port}/whip/cart"), count, dir)
}

async fn serve(
    tls: Option<tokio_rustls::TlsAcceptor>,
    respond: fn(u32, u16) -> String,
) -> (u16, Arc<AtomicU32>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicU32::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            match &tls {
                Some(acceptor) => {
                    // A client that refuses our certificate ends the handshake: not a request.
                    if let Ok(sock) = acceptor.accept(sock).await {
                        answer(sock, &c, respond, port).await;
                    }
                }
                None => answer(sock, &c, respond, port).await,
            }
        }
    });
    (port, count)
}

async fn answer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut sock: S,
    count: &AtomicU32,
    respond: fn(u32, u16) -> String,
    port: u16,
) {
    let n = count.fetch_add(1, Ordering::SeqCst);
    let mut buf = vec![0u8; 65536];
    let mut got = 0;
    // Read headers and the body Content-Length announces.
    while let Ok(k) = sock.read(&mut buf[got..]).await {
        if k == 0 {
            break;
        }
        got += k;
        let text = String::from_utf8_lossy(&buf[..got]).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if got >= end + 4 + len {
                break;
            }
        }
    }
    let _ = sock.write_all(respond(n, port).as_bytes()).await;
    let _ = sock.shutdown().await;
}

fn reply(status: &str, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn config() -> telecart_core::Config {
    let mut c = telecart_core::Config::default();
    c.video.width = 640;
    c.video.height = 480;
    c.cart.data_dir = std::env::temp_dir().join("telecart-webrtc-signalling");
    c
}

async fn publish_err(url: String, retries: u32) -> String {
    publish_err_with(PublishOptions::new(url), retries).await
}

async fn publish_err_with(mut opts: PublishOptions, retries: u32) -> String {
    opts.retries = retries;
    opts.duration = Some(Duration::from_secs(1));
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let err = publish_config(config(), opts, rx)
        .await
        .expect_err("publishing to a bad endpoint fails");
    format!("{err:#}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_instead_of_sdp_is_a_clear_error() {
    let (url, _) = endpoint(|_, _| {
        reply(
            "201 Created",
            "Content-Type: text/html\r\nLocation: /x\r\n",
            "<html>login</html>",
        )
    })
    .await;
    let e = publish_err(url, 0).await;
    assert!(
        e.contains("text/html") && e.contains("application/sdp"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_not_retried() {
    let (url, count) = endpoint(|_, _| {
        reply(
            "401 Unauthorized",
            "WWW-Authenticate: Bearer\r\n",
            "bad token",
        )
    })
    .await;
    let e = publish_err(url, 3).await;
    assert!(e.contains("refused the token (401)"), "{e}");
    assert_eq!(count.load(Ordering::SeqCst), 1, "4xx is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_stays_down_is_retried_then_reported() {
    let (url, count) = endpoint(|_, _| reply("503 Service Unavailable", "", "maintenance")).await;
    let e = publish_err(url, 2).await;
    assert!(e.contains("unavailable (503)"), "{e}");
    assert_eq!(count.load(Ordering::SeqCst), 3, "first try + 2 retries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_followed_and_malformed_answers_refused() {
    let (url, count) = endpoint(|n, _| {
        if n == 0 {
            reply("307 Temporary Redirect", "Location: /whip/other\r\n", "")
        } else if n == 1 {
            reply(
                "201 Created",
                "Content-Type: application/sdp\r\nLocation: /whip/other/1\r\n",
                "v=0\r\nthis is not sdp\r\n",
            )
        } else {
            // The DELETE after the refused answer.
            reply("200 OK", "", "")
        }
    })
    .await;
    let e = publish_err(url, 0).await;
    assert!(e.contains("WHIP answer refused"), "{e}");
    assert_eq!(
        count.load(Ordering::SeqCst),
        3,
        "POST, POST after 307, DELETE"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_listening_is_retryable_and_clear() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = publish_err(format!("http://127.0.0.1:{port}/whip"), 1).await;
    assert!(e.contains("unreachable"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoints_are_reached_with_the_configured_ca_and_refused_without_it() {
    let (url, count, ca) = endpoint_tls(|_, _| {
        reply(
            "201 Created",
            "Content-Type: text/html\r\nLocation: /x\r\n",
            "<html>captive portal</html>",
        )
    })
    .await;
    // Trusting the hospital's CA: TLS is up and the WHIP rules see the HTML page.
    let mut opts = PublishOptions::new(url.clone());
    opts.ca_file = Some(ca.path().join("ca.pem"));
    let e = publish_err_with(opts, 0).await;
    assert!(e.contains("text/html"), "{e}");
    assert_eq!(count.load(Ordering::SeqCst), 1);
    // Without it the certificate is refused, clearly, and nothing is sent.
    let e = publish_err(url, 0).await;
    assert!(
        e.to_ascii_lowercase().contains("certificate") || e.contains("UnknownIssuer"),
        "{e}"
    );
    assert_eq!(count.load(Ordering::SeqCst), 1, "no request without trust");
}
