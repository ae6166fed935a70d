//! `telecart-ingest`: the reference ingest server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use telecart_ingest::faults::Faults;
use telecart_ingest::server::{AppState, serve};
use telecart_ingest::{db, tls};

/// Reference ingest server for telecart session logs (HTTPS with mutual TLS, PostgreSQL).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "TELECART_INGEST_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Server certificate chain (PEM).
    #[arg(long, env = "TELECART_INGEST_CERT")]
    cert: PathBuf,
    /// Server private key (PEM).
    #[arg(long, env = "TELECART_INGEST_KEY")]
    key: PathBuf,
    /// CA certificate(s) that device certificates must chain to (PEM).
    #[arg(long, env = "TELECART_INGEST_CLIENT_CA")]
    client_ca: PathBuf,
    /// PostgreSQL connection (libpq key/value or URL), e.g. "host=/run/postgresql dbname=telecart".
    #[arg(long, env = "TELECART_INGEST_DATABASE")]
    database: String,
    /// Database connections.
    #[arg(long, default_value_t = 16)]
    pool_size: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let tls =
        tls::server_config(&args.cert, &args.key, &args.client_ca).context("TLS configuration")?;
    let pool = db::pool(&args.database, args.pool_size).context("database configuration")?;
    db::migrate(&pool).await.context("creating the schema")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(listen = %args.listen, "telecart-ingest serving");
    let state = AppState {
        pool,
        faults: Arc::new(Faults::new(1)),
    };
    serve(listener, tls, state, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
