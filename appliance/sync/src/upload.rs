//! One upload request.

use std::time::Duration;

use telecart_store::StoreConfig;
use telecart_store::config::valid_device_id;
use telecart_store::sync::UploadFailure;
use telecart_store::wire::{Ack, ApiError, UploadBatch};

use crate::SyncError;

/// Posts batches to `{url}/v1/devices/{device}/records` over mutual TLS.
#[derive(Clone, Debug)]
pub struct Uploader {
    http: reqwest::Client,
    endpoint: String,
    device: String,
    timeout: Duration,
}

impl Uploader {
    /// From the `[store]` configuration (reads the certificate files).
    pub fn from_config(cfg: &StoreConfig) -> Result<Self, SyncError> {
        let tls = crate::tls::client_config(
            &cfg.sync.ca_cert,
            &cfg.sync.client_cert,
            &cfg.sync.client_key,
        )?;
        Self::new(
            &cfg.sync.url,
            &cfg.device_id,
            tls,
            Duration::from_secs(cfg.sync.request_timeout_secs),
        )
    }

    /// With an explicit TLS configuration; `timeout` bounds each request.
    pub fn new(
        url: &str,
        device: &str,
        tls: rustls::ClientConfig,
        timeout: Duration,
    ) -> Result<Self, SyncError> {
        if !url.starts_with("https://") {
            return Err(SyncError::Config(format!(
                "sync URL must be https://, got {url}"
            )));
        }
        if !valid_device_id(device) {
            return Err(SyncError::Config("invalid device id".into()));
        }
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .https_only(true)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| SyncError::Http(e.to_string()))?;
        let endpoint = format!("{}/v1/devices/{device}/records", url.trim_end_matches('/'));
        Ok(Self {
            http,
            endpoint,
            device: device.to_string(),
            timeout,
        })
    }

    /// The device id records are uploaded as.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// POSTs one batch; returns the server's `acked_upto`.
    pub async fn upload(&self, batch: &UploadBatch) -> Result<u64, UploadFailure> {
        let resp = self
            .http
            .post(&self.endpoint)
            .timeout(self.timeout)
            .json(batch)
            .send()
            .await
            .map_err(|e| UploadFailure::Transient(describe(&e)))?;
        let status = resp.status();
        if status.is_success() {
            let ack: Ack = resp.json().await.map_err(|e| {
                UploadFailure::Transient(format!("bad acknowledgement: {}", describe(&e)))
            })?;
            return Ok(ack.acked_upto);
        }
        let text = resp.text().await.unwrap_or_default();
        let message = match serde_json::from_str::<ApiError>(&text) {
            Ok(e) => format!("{}: {}", e.error, e.message),
            Err(_) => text.chars().take(200).collect(),
        };
        let code = status.as_u16();
        if status.is_server_error() || code == 408 || code == 429 {
            Err(UploadFailure::Transient(format!("HTTP {code}: {message}")))
        } else {
            Err(UploadFailure::Rejected {
                status: code,
                message,
            })
        }
    }
}

/// reqwest's error with its causes (TLS alerts, connection refused), without request bodies.
fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}
