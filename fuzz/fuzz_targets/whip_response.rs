//! Any WHIP endpoint response (status, headers, body): a session or an error.
#![no_main]
use libfuzzer_sys::fuzz_target;
use telecart_webrtc::whip::{Response, ice_servers_from_links, read_offer_response, read_patch_response};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let status = lines.next().and_then(|l| l.trim().parse::<u16>().ok()).unwrap_or(201);
    let mut headers = Vec::new();
    let mut body = String::new();
    for line in lines.by_ref() {
        match line.split_once(':') {
            Some((k, v)) if !line.is_empty() => headers.push((k.to_string(), v.to_string())),
            _ => break,
        }
    }
    for line in lines {
        body.push_str(line);
        body.push('\n');
    }
    let endpoint = url::Url::parse("https://whip.example/endpoint/cart").expect("static URL");
    let res = Response { status, headers: &headers, body: body.as_bytes() };
    let _ = read_offer_response(&endpoint, res);
    let _ = read_patch_response(res);
    let _ = ice_servers_from_links(headers.iter().map(|(_, v)| v.as_str()));
});
