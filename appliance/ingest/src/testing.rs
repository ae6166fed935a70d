//! Test harness (feature `testing`): a throwaway PostgreSQL server, a test PKI, and an in-process
//! ingest server that can be stopped and restarted on the same port.

use std::io::Write;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::IngestError;
use crate::faults::Faults;
use crate::server::{AppState, serve};

fn harness(msg: impl Into<String>) -> IngestError {
    IngestError::Harness(msg.into())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IngestError + '_ {
    move |source| IngestError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> Result<u16, IngestError> {
    let l = StdListener::bind("127.0.0.1:0").map_err(io(Path::new("127.0.0.1:0")))?;
    Ok(l.local_addr().map_err(io(Path::new("127.0.0.1:0")))?.port())
}

/// Directory of PostgreSQL's server binaries: `$PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`.
pub fn pg_bin_dir() -> Result<PathBuf, IngestError> {
    if let Some(p) = std::env::var_os("PG_BIN") {
        return Ok(PathBuf::from(p));
    }
    let mut best: Option<(u32, PathBuf)> = None;
    let root = Path::new("/usr/lib/postgresql");
    for e in std::fs::read_dir(root)
        .map_err(|_| harness("PostgreSQL server not installed (apt-get install postgresql)"))?
    {
        let Ok(e) = e else { continue };
        let Some(v) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let bin = e.path().join("bin");
        if bin.join("postgres").exists() && best.as_ref().is_none_or(|(b, _)| v > *b) {
            best = Some((v, bin));
        }
    }
    best.map(|(_, p)| p).ok_or_else(|| {
        harness("no /usr/lib/postgresql/*/bin/postgres (apt-get install postgresql)")
    })
}

/// uid/gid of the `postgres` system user, when running as root (PostgreSQL refuses to run as root).
fn run_as() -> Result<Option<(u32, u32)>, IngestError> {
    let me = std::fs::metadata("/proc/self")
        .map_err(io(Path::new("/proc/self")))?
        .uid();
    if me != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(io(Path::new("/etc/passwd")))?;
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() > 3 && f[0] == "postgres" {
            let uid = f[2].parse().map_err(|_| harness("bad /etc/passwd"))?;
            let gid = f[3].parse().map_err(|_| harness("bad /etc/passwd"))?;
            return Ok(Some((uid, gid)));
        }
    }
    Err(harness(
        "running as root but there is no postgres user (apt-get install postgresql)",
    ))
}

/// A PostgreSQL server of its own, in a temporary directory, on a free port of 127.0.0.1.
/// Stopped (fast shutdown, then SIGKILL) and removed on drop, also when a test fails.
#[derive(Debug)]
pub struct PgServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl PgServer {
    /// initdb + postgres; returns once it accepts connections.
    pub fn start() -> Result<Self, IngestError> {
        let bin = pg_bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("tc-pg-")
            .tempdir()
            .map_err(io(Path::new("/tmp")))?;
        let data = dir.path().join("data");
        let user = run_as()?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).map_err(io(dir.path()))?;
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(io(dir.path()))?;
        let cmd = |name: &str| {
            let mut c = Command::new(bin.join(name));
            if let Some((uid, gid)) = user {
                c.uid(uid).gid(gid);
            }
            c.env("LC_ALL", "C").current_dir(dir.path());
            c
        };
        let out = cmd("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ])
            .output()
            .map_err(io(&bin))?;
        if !out.status.success() {
            return Err(harness(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let port = free_port()?;
        let log = dir.path().join("postgres.log");
        let logf = std::fs::File::create(&log).map_err(io(&log))?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&log, Some(uid), Some(gid)).map_err(io(&log))?;
        }
        let child = cmd("postgres")
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(dir.path())
            .args([
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=50",
            ])
            .stdin(Stdio::null())
            .stdout(logf.try_clone().map_err(io(&log))?)
            .stderr(logf)
            .spawn()
            .map_err(io(&bin))?;
        let mut pg = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(st)) = pg.child.try_wait() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(harness(format!("postgres exited ({st}): {log}")));
            }
            let ready = Command::new(bin.join("pg_isready"))
                .args([
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    "postgres",
                ])
                .status()
                .map_err(io(&bin))?;
            if ready.success() {
                return Ok(pg);
            }
            if Instant::now() > deadline {
                pg.stop();
                return Err(harness("postgres did not become ready within 60 s"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Connection string for the `postgres` database.
    pub fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// Data directory (for tests that inspect files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // Fast shutdown of exactly our postmaster (it ends its own backends).
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A test PKI in a directory: a CA, a server certificate for `localhost`/127.0.0.1, and device
/// certificates (common name = device id). Private keys are written with mode 0600.
pub struct TestPki {
    /// Where the PEM files are.
    pub dir: PathBuf,
    /// CA certificate (trust anchor of both sides).
    pub ca_cert: PathBuf,
    /// Server certificate.
    pub server_cert: PathBuf,
    /// Server key.
    pub server_key: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), IngestError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io(path))?;
    f.write_all(text.as_bytes()).map_err(io(path))
}

fn rc(e: rcgen::Error) -> IngestError {
    harness(format!("rcgen: {e}"))
}

impl TestPki {
    /// Generates the CA and the server certificate in `dir`.
    pub fn generate(dir: &Path) -> Result<Self, IngestError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(rc)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "telecart test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().map_err(rc)?;
        let ca_cert = ca.self_signed(&ca_key).map_err(rc)?;
        let issuer = Issuer::new(ca, ca_key);
        let mut sp = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(rc)?;
        sp.distinguished_name.push(DnType::CommonName, "localhost");
        sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let sk = KeyPair::generate().map_err(rc)?;
        let sc = sp.signed_by(&sk, &issuer).map_err(rc)?;
        let pki = Self {
            dir: dir.to_path_buf(),
            ca_cert: dir.join("ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            issuer,
        };
        write_file(&pki.ca_cert, &ca_cert.pem(), 0o644)?;
        write_file(&pki.server_cert, &sc.pem(), 0o644)?;
        write_file(&pki.server_key, &sk.serialize_pem(), 0o600)?;
        Ok(pki)
    }

    /// Issues a device certificate with common name `device`; returns (certificate, key) paths.
    pub fn device(&self, device: &str) -> Result<(PathBuf, PathBuf), IngestError> {
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(rc)?;
        p.distinguished_name.push(DnType::CommonName, device);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let k = KeyPair::generate().map_err(rc)?;
        let c = p.signed_by(&k, &self.issuer).map_err(rc)?;
        let cert = self.dir.join(format!("{device}.crt"));
        let key = self.dir.join(format!("{device}.key"));
        write_file(&cert, &c.pem(), 0o644)?;
        write_file(&key, &k.serialize_pem(), 0o600)?;
        Ok((cert, key))
    }
}

/// An in-process ingest server on a fixed address that can be stopped (abruptly, like a crash:
/// connections are dropped mid-request) and started again.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state (database pool, fault plan).
    pub state: AppState,
    tls: Arc<rustls::ServerConfig>,
    running: Option<(JoinHandle<()>, oneshot::Sender<()>)>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl TestServer {
    /// Creates the schema in `conninfo`'s database and starts serving on 127.0.0.1 (a free port).
    pub async fn start(conninfo: &str, pki: &TestPki) -> Result<Self, IngestError> {
        let pool = crate::db::pool(conninfo, 8)?;
        crate::db::migrate(&pool).await?;
        let tls = crate::tls::server_config(&pki.server_cert, &pki.server_key, &pki.ca_cert)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let mut s = Self {
            addr,
            state: AppState {
                pool,
                faults: Arc::new(Faults::new(0x5eed)),
            },
            tls,
            running: None,
        };
        s.resume().await?;
        Ok(s)
    }

    /// `https://localhost:{port}`.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// The fault plan and counters.
    pub fn faults(&self) -> &Faults {
        &self.state.faults
    }

    /// Stops abruptly: the listener closes and every connection is dropped.
    pub async fn stop(&mut self) {
        if let Some((task, _tx)) = self.running.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Starts serving again on the same address (after [`TestServer::stop`]).
    pub async fn resume(&mut self) -> Result<(), IngestError> {
        self.stop().await;
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    tracing::debug!(error = %e, "rebind");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    return Err(IngestError::Io {
                        path: PathBuf::from(self.addr.to_string()),
                        source: e,
                    });
                }
            }
        };
        let (tx, rx) = oneshot::channel();
        let state = self.state.clone();
        let tls = self.tls.clone();
        let task = tokio::spawn(async move {
            let _ = serve(listener, tls, state, async {
                let _ = rx.await;
            })
            .await;
        });
        self.running = Some((task, tx));
        Ok(())
    }
}
