//! `cartctl provision`: a new cart's identity and keys.
//!
//! `init` creates the device identity key pair (ECDSA P-256, PEM, mode 0600) and a CSR whose
//! common name is the device id, creates the session log's master key with the store's own key
//! creation (mode 0600), and writes `cart.toml` from a template after validating it with
//! `telecart_core::config`. The CSR goes to the hospital's or the fleet's CA;
//! `install-cert` installs what comes back, after checking it certifies this device's key and
//! names this device.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData};
use telecart_core::Config;
use telecart_store::MasterKey;

/// `cartctl provision`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: ProvisionCommand,
}

#[derive(Debug, Subcommand)]
enum ProvisionCommand {
    /// Identity key pair and CSR, storage master key, and the config from a template.
    Init {
        /// Device id (letters, digits, '-', '.', '_'): the certificate's common name.
        #[arg(long)]
        device_id: String,
        /// Template configuration (a cart.toml); its store paths and device id are filled in.
        #[arg(long)]
        template: PathBuf,
        /// Where the keys go.
        #[arg(long, default_value = "/etc/telecart/keys")]
        keys_dir: PathBuf,
        /// The configuration to write (refuses to overwrite).
        #[arg(long, default_value = "/etc/telecart/cart.toml")]
        config_out: PathBuf,
    },
    /// Installs the certificate the CA issued for the CSR, after checking it matches the key.
    InstallCert {
        /// The issued certificate (PEM; a chain may follow it).
        cert: PathBuf,
        /// The cart's configuration (store.sync.client_cert/client_key, store.device_id).
        #[arg(
            long,
            short,
            env = "CARTD_CONFIG",
            default_value = "/etc/telecart/cart.toml"
        )]
        config: PathBuf,
    },
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        ProvisionCommand::Init {
            device_id,
            template,
            keys_dir,
            config_out,
        } => init(&device_id, &template, &keys_dir, &config_out),
        ProvisionCommand::InstallCert { cert, config } => install_cert(&cert, &config),
    }
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| {
            format!(
                "creating {} (refusing to overwrite an existing file)",
                path.display()
            )
        })?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn init(
    device_id: &str,
    template: &Path,
    keys_dir: &Path,
    config_out: &Path,
) -> anyhow::Result<()> {
    if !telecart_core::config::valid_device_id(device_id) {
        bail!("device id {device_id:?} is not valid (letters, digits, '-', '.', '_')");
    }
    if config_out.exists() {
        bail!(
            "{} exists; move it away to provision again",
            config_out.display()
        );
    }
    let text = std::fs::read_to_string(template)
        .with_context(|| format!("reading {}", template.display()))?;
    let mut config =
        Config::from_toml(template, &text).map_err(|e| anyhow::anyhow!("template: {e}"))?;
    config.store.device_id = device_id.to_string();
    config.store.master_key = keys_dir.join("master.key");
    config.store.sync.client_key = keys_dir.join("device.key");
    config.store.sync.client_cert = keys_dir.join("device.crt");
    let issues = config.validate();
    if !issues.is_empty() {
        bail!(
            "the provisioned config would not validate: {}",
            issues
                .iter()
                .map(|i| format!("{}: {}", i.key, i.message))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    let rendered = toml::to_string(&config).context("rendering the config")?;
    // Round trip through the same parser cartd uses, so what is written is what cartd accepts.
    Config::from_toml(config_out, &rendered)
        .map_err(|e| anyhow::anyhow!("rendered config: {e}"))?;

    std::fs::create_dir_all(keys_dir)
        .with_context(|| format!("creating {}", keys_dir.display()))?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .context("generating the identity key")?;
    write_new(
        &config.store.sync.client_key,
        key.serialize_pem().as_bytes(),
        0o600,
    )?;
    let mut params = CertificateParams::new(Vec::<String>::new()).context("CSR parameters")?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, device_id);
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key).context("signing the CSR")?;
    let csr_path = keys_dir.join("device.csr");
    write_new(
        &csr_path,
        csr.pem().context("encoding the CSR")?.as_bytes(),
        0o644,
    )?;
    if config.store.master_key.exists() {
        println!(
            "{}: kept (exists; a new one would make the session log unreadable)",
            config.store.master_key.display()
        );
    } else {
        MasterKey::generate_file(&config.store.master_key)
            .with_context(|| format!("creating {}", config.store.master_key.display()))?;
        println!(
            "{}: new storage master key (mode 0600)",
            config.store.master_key.display()
        );
    }
    if let Some(dir) = config_out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_new(config_out, rendered.as_bytes(), 0o640)?;
    println!(
        "{}: identity key (ECDSA P-256, mode 0600)",
        config.store.sync.client_key.display()
    );
    println!(
        "{}: CSR for CN={device_id}: have the CA sign it, then run `cartctl provision install-cert`",
        csr_path.display()
    );
    println!("{}: configuration (validated)", config_out.display());
    Ok(())
}

fn install_cert(cert_path: &Path, config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let pem_bytes =
        std::fs::read(cert_path).with_context(|| format!("reading {}", cert_path.display()))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem_bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a PEM certificate: {e}", cert_path.display()))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| anyhow::anyhow!("{}: not an X.509 certificate: {e}", cert_path.display()))?;
    let key_path = &config.store.sync.client_key;
    let key_pem = std::fs::read_to_string(key_path)
        .with_context(|| format!("reading {}", key_path.display()))?;
    let key = KeyPair::from_pem(&key_pem)
        .with_context(|| format!("{}: not a private key", key_path.display()))?;
    if cert.public_key().raw != key.subject_public_key_info().as_slice() {
        bail!(
            "{} certifies another key than {}: not installed",
            cert_path.display(),
            key_path.display()
        );
    }
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or_default()
        .to_string();
    if cn != config.store.device_id {
        bail!(
            "{} is for CN={cn:?}, this cart is {:?}: not installed",
            cert_path.display(),
            config.store.device_id
        );
    }
    if !cert.validity().is_valid() {
        bail!(
            "{} is not valid now ({} to {}): check the clock or the certificate",
            cert_path.display(),
            cert.validity().not_before,
            cert.validity().not_after
        );
    }
    let out = &config.store.sync.client_cert;
    let tmp = out.with_extension("crt.new");
    let _ = std::fs::remove_file(&tmp);
    write_new(&tmp, &pem_bytes, 0o644)?;
    std::fs::rename(&tmp, out).with_context(|| format!("installing {}", out.display()))?;
    println!(
        "{}: certificate for CN={cn} installed (matches {}; valid until {})",
        out.display(),
        key_path.display(),
        cert.validity().not_after
    );
    Ok(())
}
