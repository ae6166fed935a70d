//! Signing keys (PKCS#8 PEM, as `openssl genpkey -algorithm ed25519` writes them) and trusted
//! public keys (SPKI PEM, `openssl pkey -pubout`). Private keys never live in the repository.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::error::{Result, UpdateError};

fn key_err(path: &Path, reason: impl Into<String>) -> UpdateError {
    UpdateError::Key {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// Loads a PKCS#8 PEM Ed25519 private key.
pub fn load_signing_key(path: &Path) -> Result<SigningKey> {
    let pem =
        Zeroizing::new(std::fs::read_to_string(path).map_err(|e| key_err(path, e.to_string()))?);
    SigningKey::from_pkcs8_pem(&pem)
        .map_err(|e| key_err(path, format!("not an Ed25519 PKCS#8 PEM private key: {e}")))
}

/// Loads an SPKI PEM Ed25519 public key.
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey> {
    let pem = std::fs::read_to_string(path).map_err(|e| key_err(path, e.to_string()))?;
    VerifyingKey::from_public_key_pem(&pem)
        .map_err(|e| key_err(path, format!("not an Ed25519 PEM public key: {e}")))
}

/// Loads every trusted key; one bad file is an error (a typo must not silently drop a key).
pub fn load_trusted(paths: &[std::path::PathBuf]) -> Result<Vec<VerifyingKey>> {
    paths.iter().map(|p| load_verifying_key(p)).collect()
}

/// A new random signing key.
pub fn generate() -> Result<SigningKey> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut()).map_err(|e| UpdateError::Key {
        path: "(random)".into(),
        reason: e.to_string(),
    })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Writes `key` as PKCS#8 PEM (mode 0600, refuses to overwrite) and its public half as SPKI PEM.
pub fn write_key_pair(key: &SigningKey, private: &Path, public: &Path) -> Result<()> {
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| key_err(private, e.to_string()))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(private)
        .map_err(|e| key_err(private, e.to_string()))?;
    f.write_all(pem.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| key_err(private, e.to_string()))?;
    let public_pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| key_err(public, e.to_string()))?;
    std::fs::write(public, public_pem).map_err(|e| key_err(public, e.to_string()))
}
