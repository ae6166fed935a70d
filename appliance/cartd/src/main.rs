//! `cartd`: the telecart appliance daemon.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use telecart_core::Config;
use telecart_core::config::LogFormat;
use tracing::info;

#[derive(Debug, Parser)]
#[command(name = "cartd", version, about = "The telecart appliance daemon")]
struct Cli {
    /// Log level or tracing filter (overrides the config), e.g. `debug` or `info,telecart_devices=trace`.
    #[arg(long, global = true, env = "CARTD_LOG_LEVEL")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs on the embedded default: test-pattern camera, bundled speech, software encoder, console on 127.0.0.1.
    Demo {
        /// Console address (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Stop after this many seconds (default: until Ctrl-C).
        #[arg(long)]
        seconds: Option<u64>,
        /// Frame size and rate of the test pattern, e.g. 1280x720@30.
        #[arg(long, default_value = "1280x720@30")]
        video: String,
        /// Keep the demo's state (encrypted session log and its key) here; by default a
        /// temporary directory removed when the demo ends.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Runs the appliance with a configuration file.
    Run {
        /// The configuration file.
        #[arg(
            long,
            short,
            env = "CARTD_CONFIG",
            default_value = "/etc/telecart/cart.toml"
        )]
        config: PathBuf,
        /// Stop after this many seconds (default: until SIGTERM/Ctrl-C).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Publishes the configured sources once to a WHIP endpoint and prints what happened
    /// (ICE pair, codecs, packets sent): a site connectivity check for field techs.
    Publish {
        /// The WHIP endpoint URL.
        #[arg(long)]
        whip: String,
        /// Bearer token for the endpoint.
        #[arg(long, env = "CARTD_WHIP_TOKEN")]
        token: Option<String>,
        /// Publish this many seconds, then hang up (DELETE).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Configuration file (default: the demo's simulated sources).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Frame size and rate of the test pattern without a config, e.g. 1280x720@30.
        #[arg(long, default_value = "1280x720@30")]
        video: String,
        /// Local address for the host candidate (default: the one that routes to the endpoint).
        #[arg(long)]
        bind: Option<std::net::IpAddr>,
        /// Seconds to wait for ICE and DTLS after the answer.
        #[arg(long, default_value_t = 10)]
        connect_timeout: u64,
        /// Print the report as one JSON line only.
        #[arg(long)]
        json: bool,
        /// Also offer a relay from this TURN server, e.g. `turn:turn.example.org:3478?transport=udp`.
        #[arg(long)]
        turn: Option<String>,
        /// TURN user name.
        #[arg(long, default_value = "")]
        turn_username: String,
        /// TURN password.
        #[arg(long, env = "CARTD_TURN_PASSWORD", default_value = "")]
        turn_password: String,
        /// Offer only relay candidates (checks that the relay path works): from `--turn`,
        /// or without it from the TURN servers in the endpoint's `Link` headers.
        #[arg(long)]
        relay_only: bool,
        /// Keep the media on its first address: no rebind and ICE restart when the
        /// network changes (a Wi-Fi roam).
        #[arg(long)]
        no_follow_network: bool,
        /// Ignore the TURN servers the endpoint announces in `Link` headers.
        #[arg(long)]
        no_link_ice_servers: bool,
        /// Extra CA certificates (PEM) to trust for an HTTPS endpoint and a turns: server,
        /// besides the system store (a hospital's own CA or TLS-inspection proxy).
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
    /// Checks a configuration file and exits non-zero if anything is wrong.
    CheckConfig {
        /// The configuration file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(config) => {
                println!(
                    "{}: ok (cart {:?}, video {} {}x{}@{}, microphone {:?})",
                    file.display(),
                    config.cart.name,
                    format!("{:?}", config.video.source).to_lowercase(),
                    config.video.width,
                    config.video.height,
                    config.video.fps,
                    config.audio.microphone
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                eprintln!(
                    "{}: {} problem(s); see docs/config.md",
                    file.display(),
                    e.issues.len()
                );
                ExitCode::from(2)
            }
        },
        Command::Demo {
            listen,
            seconds,
            video,
            data_dir,
        } => {
            // Held until the demo ends, then removed with what is in it.
            let scratch = match data_dir {
                Some(_) => None,
                None => match tempfile::Builder::new().prefix("telecart-demo-").tempdir() {
                    Ok(t) => Some(t),
                    Err(e) => {
                        eprintln!("cartd demo: cannot create a temporary directory: {e}");
                        return ExitCode::FAILURE;
                    }
                },
            };
            let dir = data_dir.unwrap_or_else(|| {
                scratch
                    .as_ref()
                    .map_or_else(std::env::temp_dir, |t| t.path().to_owned())
            });
            let config = match demo_config(listen, &video, &dir) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("cartd demo: {e:#}");
                    return ExitCode::from(2);
                }
            };
            run(config, cli.log_level, seconds, true)
        }
        Command::Publish {
            whip,
            token,
            seconds,
            config,
            video,
            bind,
            connect_timeout,
            json,
            turn,
            turn_username,
            turn_password,
            relay_only,
            no_follow_network,
            no_link_ice_servers,
            ca_file,
        } => {
            let config = match config {
                Some(path) => match Config::load(&path) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::from(2);
                    }
                },
                None => {
                    // publish runs the pipeline only: no session log, nothing kept.
                    match demo_config(
                        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                        &video,
                        &std::env::temp_dir(),
                    ) {
                        Ok(c) => c,
                        Err(e) => {
                            eprintln!("cartd publish: {e:#}");
                            return ExitCode::from(2);
                        }
                    }
                }
            };
            let mut opts = telecart_runtime::webrtc::PublishOptions::new(whip);
            opts.token = token;
            opts.duration = Some(Duration::from_secs(seconds));
            opts.bind = bind;
            opts.connect_timeout = Duration::from_secs(connect_timeout);
            opts.ca_file = ca_file;
            if let Some(url) = turn {
                let server = telecart_runtime::webrtc::TurnServer::from_url(
                    &url,
                    &turn_username,
                    &turn_password,
                )
                .map_err(anyhow::Error::from)
                .and_then(|mut t| {
                    if t.is_tls() {
                        t.tls = Some(telecart_runtime::webrtc::turn_tls(
                            &url,
                            opts.ca_file.as_deref(),
                        )?);
                    }
                    Ok(t)
                });
                match server {
                    Ok(t) => opts.turn = Some(t),
                    Err(e) => {
                        eprintln!("cartd publish: {e:#}");
                        return ExitCode::from(2);
                    }
                }
            }
            opts.relay_only = relay_only;
            opts.follow_network = !no_follow_network;
            opts.link_ice_servers = !no_link_ice_servers;
            publish(config, opts, cli.log_level, json)
        }
        Command::Run { config, seconds } => match Config::load(&config) {
            Ok(c) => run(c, cli.log_level, seconds, false),
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
    }
}

/// The embedded default: everything simulated, nothing to configure.
fn demo_config(
    listen: SocketAddr,
    video: &str,
    data_dir: &std::path::Path,
) -> anyhow::Result<Config> {
    let mut config = Config::default();
    config.cart.name = "telecart-demo".into();
    config.cart.data_dir = std::path::absolute(data_dir)?;
    // The demo keeps a real encrypted log, with a key of its own, in its throw-away directory.
    config.store.data_dir = config.cart.data_dir.join("log");
    config.store.master_key = config.cart.data_dir.join("master.key");
    config.console.listen = listen;
    let (size, fps) = video
        .split_once('@')
        .context("--video takes WIDTHxHEIGHT@FPS, e.g. 1280x720@30")?;
    let (w, h) = size
        .split_once('x')
        .context("--video takes WIDTHxHEIGHT@FPS, e.g. 1280x720@30")?;
    config.video.width = w.parse().context("--video: width")?;
    config.video.height = h.parse().context("--video: height")?;
    config.video.fps = fps.parse().context("--video: fps")?;
    let issues = config.validate();
    if let Some(issue) = issues.first() {
        anyhow::bail!("--video: {}: {}", issue.key, issue.message);
    }
    Ok(config)
}

fn run(config: Config, log_level: Option<String>, seconds: Option<u64>, demo: bool) -> ExitCode {
    let level = log_level.unwrap_or_else(|| config.log.level.clone());
    let runtime = match start(&level, config.log.format) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let update = if demo {
        None
    } else {
        update_config(&config.cart.update_config)
    };
    let keys = if demo {
        telecart_runtime::KeyPolicy::CreateIfMissing
    } else {
        telecart_runtime::KeyPolicy::Provisioned
    };
    let result = runtime.block_on(telecart_runtime::run(
        config,
        keys,
        move |addr, cart| {
            if let Some(update) = update {
                report_healthy_boot(update);
            }
            if demo {
                println!(
                    "telecart demo running: open http://{addr}/ (Ctrl-C to stop; keys + Enter: c call, h hang up, p privacy)"
                );
                keyboard(cart);
            }
            info!(%addr, "cartd ready");
        },
        shutdown_signal(seconds),
    ));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("cartd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A cart without A/B updates has no update configuration; one that has it
/// but cannot read it says so and runs on.
fn update_config(path: &std::path::Path) -> Option<telecart_update::UpdateConfig> {
    if !path.exists() {
        info!(path = %path.display(), "no A/B update configuration: boot health not reported");
        return None;
    }
    match telecart_update::UpdateConfig::load(path) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(error = %e, "cart.update_config unreadable: a new slot on trial will roll back");
            None
        }
    }
}

/// How long the daemon must have been up and serving before a boot counts as healthy.
const HEALTHY_AFTER: Duration = Duration::from_secs(20);

/// After [`HEALTHY_AFTER`] of running, tells the boot loader this slot works: a new
/// slot on trial is committed; if cartd dies first, the boot counter runs out and
/// the boot loader returns to the old slot.
fn report_healthy_boot(update: telecart_update::UpdateConfig) {
    let spawned = std::thread::Builder::new()
        .name("boot-health".into())
        .spawn(move || {
            std::thread::sleep(HEALTHY_AFTER);
            match telecart_update::mark_booted_healthy(&update) {
                Ok(outcome) => info!(?outcome, "boot health reported"),
                Err(e) => tracing::error!(error = %e, "boot health not reported"),
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "boot health not reported");
    }
}

/// The demo's keyboard: the simulated board's buttons from a terminal.
fn keyboard(cart: std::sync::Arc<telecart_runtime::cart::CartController>) {
    use std::io::{BufRead, IsTerminal};
    if !std::io::stdin().is_terminal() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("keyboard".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                for key in line.chars().filter(|c| !c.is_whitespace()) {
                    if !cart.key(key) {
                        eprintln!("keys: c call, C long press (hang up), h hang up, p privacy");
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no keyboard input");
    }
}

fn publish(
    config: Config,
    opts: telecart_runtime::webrtc::PublishOptions,
    log_level: Option<String>,
    json: bool,
) -> ExitCode {
    let level = log_level.unwrap_or_else(|| "warn".into());
    let runtime = match start(&level, config.log.format) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let url = opts.url.clone();
    let mut opts = opts;
    let result = runtime.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // SIGUSR1 restarts ICE (a technician's "reconnect" without ending the session).
        let restart = std::sync::Arc::new(tokio::sync::Notify::new());
        opts.ice_restart = Some(restart.clone());
        if let Ok(mut usr1) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        {
            tokio::spawn(async move {
                while usr1.recv().await.is_some() {
                    restart.notify_one();
                }
            });
        }
        tokio::spawn(async move {
            shutdown_signal(None).await;
            let _ = stop_tx.send(true);
        });
        telecart_runtime::webrtc::publish_config(config, opts, stop_rx).await
    });
    match result {
        Ok(report) => {
            if !json {
                let s = &report.stats;
                println!("published to {url}");
                println!("  resource   {}", report.resource);
                println!("  ICE pair   {}", s.ice_pair.as_deref().unwrap_or("?"));
                println!(
                    "  video      {}",
                    s.video_codec.as_deref().unwrap_or("none")
                );
                println!(
                    "  audio      {}",
                    s.audio_codec.as_deref().unwrap_or("none")
                );
                println!(
                    "  connected  {:.0} ms after the POST; first frame at {:.0} ms",
                    s.connect_ms.unwrap_or(f64::NAN),
                    s.first_frame_ms.unwrap_or(f64::NAN)
                );
                println!(
                    "  sent       {} video frames ({} RTP packets, {} bytes), {} audio packets",
                    s.video_frames_sent,
                    s.video_packets_sent,
                    s.video_bytes_sent,
                    s.audio_packets_sent
                );
                println!(
                    "  feedback   {} NACKs, {} PLIs, {} FIRs; estimate {} bps; RTT {} ms; MOS {}",
                    s.nacks,
                    s.plis,
                    s.firs,
                    s.bwe_bps.map_or("?".into(), |b| b.to_string()),
                    s.rtt_ms.map_or("?".into(), |r| format!("{r:.1}")),
                    s.mos.map_or("?".into(), |m| format!("{m:.2}"))
                );
                for r in &report.ice_restarts {
                    println!(
                        "  ICE restart ({}) {} -> {}: {}",
                        r.reason, r.from, r.to, r.result
                    );
                }
                if !report.trickled_candidates.is_empty() {
                    println!(
                        "  trickled   {} candidates ({} relays from Link headers)",
                        report.trickled_candidates.len(),
                        report.late_relay_candidates.len()
                    );
                }
                println!("  hang-up    DELETE {}", report.delete);
            }
            println!("{}", report.to_json());
            if report.stats.video_frames_sent == 0 {
                eprintln!("cartd publish: connected but no video frame was sent");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cartd publish: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logging, then the async runtime (two workers: media runs on its own threads).
fn start(level: &str, format: LogFormat) -> Result<tokio::runtime::Runtime, ExitCode> {
    if let Err(e) = init_logging(level, format) {
        eprintln!("cartd: {e:#}");
        return Err(ExitCode::from(2));
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("cartd: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}

fn init_logging(level: &str, format: LogFormat) -> anyhow::Result<()> {
    let mut filter = tracing_subscriber::EnvFilter::try_new(level)
        .with_context(|| format!("bad log level {level:?}"))?;
    // rsipstack logs every SIP message whole at `info`: SDP with SDES-SRTP keys, caller
    // identities. Kept to warnings unless the level names rsipstack on purpose.
    if !level.contains("rsipstack") {
        filter = filter.add_directive("rsipstack=warn".parse()?);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(|e| anyhow::anyhow!("{e}"))
}

async fn shutdown_signal(seconds: Option<u64>) {
    let deadline = async {
        match seconds {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = deadline => {},
        _ = terminate => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
