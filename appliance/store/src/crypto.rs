//! Keys and sealing: a device master key wraps per-epoch data keys; data keys seal records.
//!
//! Algorithm: XChaCha20-Poly1305 (random 24-byte nonces, so nonce reuse is negligible even across
//! restarts and billions of records). All key material lives in [`Zeroizing`] buffers or in cipher
//! instances that zeroize themselves on drop.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::error::{Result, StoreError};

/// Length of keys in bytes.
pub const KEY_LEN: usize = 32;
/// Length of nonces in bytes.
pub const NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag in bytes.
pub const TAG_LEN: usize = 16;

const WRAP_VERSION: u8 = 1;
const WRAP_AD: &[u8] = b"telecart/data-key/v1";

/// Fills `buf` from the operating system's random number generator.
pub fn random_bytes(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| StoreError::Random(e.to_string()))
}

/// A random `u64` from the operating system (seeds, jitter).
pub fn random_u64() -> Result<u64> {
    let mut b = [0u8; 8];
    random_bytes(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Wraps and unwraps data keys. Implemented by [`MasterKey`] (a provisioned key file); a TPM-backed
/// implementation would seal data keys to the TPM instead of holding the master key in memory.
pub trait KeyWrapper: Send + Sync {
    /// Seals `key` for `epoch`; the output is stored in the clear next to the records.
    fn wrap(&self, epoch: u32, key: &DataKey) -> Result<Vec<u8>>;
    /// Opens what [`KeyWrapper::wrap`] produced for the same `epoch`.
    fn unwrap(&self, epoch: u32, wrapped: &[u8]) -> Result<DataKey>;
}

/// The device master key: 32 random bytes from provisioning, kept in a file readable by its owner only.
pub struct MasterKey {
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A master key from raw bytes (provisioning, tests).
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(&(*bytes).into()),
        }
    }

    /// Loads the key file at `path`: exactly 32 raw bytes, or 64 hexadecimal digits with an optional
    /// trailing newline. Refuses a file that group or others may access, and anything but a regular file.
    pub fn load(path: &Path) -> Result<Self> {
        let io = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if !meta.is_file() {
            return Err(StoreError::KeyFileFormat {
                path: path.to_path_buf(),
                reason: "not a regular file",
            });
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(StoreError::KeyFilePermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let raw = Zeroizing::new(std::fs::read(path).map_err(io)?);
        let key = parse_key(&raw).ok_or(StoreError::KeyFileFormat {
            path: path.to_path_buf(),
            reason: "expected 32 raw bytes or 64 hex digits",
        })?;
        Ok(Self::from_bytes(&key))
    }

    /// Creates a new random master key file at `path` with mode 0600 (fails if the file exists).
    /// Used by provisioning and tests.
    pub fn generate_file(path: &Path) -> Result<Self> {
        let io = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        random_bytes(key.as_mut())?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        f.write_all(key.as_ref()).map_err(io)?;
        f.sync_all().map_err(io)?;
        Ok(Self::from_bytes(&key))
    }
}

fn parse_key(raw: &[u8]) -> Option<Zeroizing<[u8; KEY_LEN]>> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if raw.len() == KEY_LEN {
        key.copy_from_slice(raw);
        return Some(key);
    }
    let text = raw.strip_suffix(b"\n").unwrap_or(raw);
    if text.len() != 2 * KEY_LEN {
        return None;
    }
    for (i, pair) in text.chunks_exact(2).enumerate() {
        let hi = hex_val(pair[0])?;
        let lo = hex_val(pair[1])?;
        key[i] = (hi << 4) | lo;
    }
    Some(key)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn wrap_ad(epoch: u32) -> [u8; WRAP_AD.len() + 4] {
    let mut ad = [0u8; WRAP_AD.len() + 4];
    ad[..WRAP_AD.len()].copy_from_slice(WRAP_AD);
    ad[WRAP_AD.len()..].copy_from_slice(&epoch.to_be_bytes());
    ad
}

impl KeyWrapper for MasterKey {
    fn wrap(&self, epoch: u32, key: &DataKey) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce)?;
        let ad = wrap_ad(epoch);
        let ct = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: key.bytes.as_ref(),
                    aad: &ad,
                },
            )
            .map_err(|_| StoreError::Invalid("data key wrap failed"))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(WRAP_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn unwrap(&self, epoch: u32, wrapped: &[u8]) -> Result<DataKey> {
        if wrapped.len() != 1 + NONCE_LEN + KEY_LEN + TAG_LEN || wrapped[0] != WRAP_VERSION {
            return Err(StoreError::WrongKey { epoch });
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&wrapped[1..1 + NONCE_LEN]);
        let ad = wrap_ad(epoch);
        let pt = Zeroizing::new(
            self.cipher
                .decrypt(
                    &XNonce::from(nonce),
                    Payload {
                        msg: &wrapped[1 + NONCE_LEN..],
                        aad: &ad,
                    },
                )
                .map_err(|_| StoreError::WrongKey { epoch })?,
        );
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(&pt);
        Ok(DataKey::from_bytes(epoch, bytes))
    }
}

/// A data key of one epoch: seals the records written while it is current.
pub struct DataKey {
    epoch: u32,
    bytes: Zeroizing<[u8; KEY_LEN]>,
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataKey(epoch {})", self.epoch)
    }
}

impl DataKey {
    /// A fresh random data key for `epoch`.
    pub fn generate(epoch: u32) -> Result<Self> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        random_bytes(bytes.as_mut())?;
        Ok(Self::from_bytes(epoch, bytes))
    }

    fn from_bytes(epoch: u32, bytes: Zeroizing<[u8; KEY_LEN]>) -> Self {
        let cipher = XChaCha20Poly1305::new(&(*bytes).into());
        Self {
            epoch,
            bytes,
            cipher,
        }
    }

    /// The key's epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Seals `plaintext` with a fresh random nonce, binding `ad`. Returns the nonce and ciphertext+tag.
    pub fn seal(&self, ad: &[u8], plaintext: &[u8]) -> Result<([u8; NONCE_LEN], Vec<u8>)> {
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce)?;
        let ct = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: ad,
                },
            )
            .map_err(|_| StoreError::Invalid("record too large to seal"))?;
        Ok((nonce, ct))
    }

    /// Opens a ciphertext sealed by [`DataKey::seal`]; `None` if authentication fails.
    pub fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        ad: &[u8],
        ciphertext: &[u8],
    ) -> Option<Zeroizing<Vec<u8>>> {
        self.cipher
            .decrypt(
                &XNonce::from(*nonce),
                Payload {
                    msg: ciphertext,
                    aad: ad,
                },
            )
            .ok()
            .map(Zeroizing::new)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn wrap_roundtrip_and_wrong_master() {
        let m1 = MasterKey::from_bytes(&[1; 32]);
        let m2 = MasterKey::from_bytes(&[2; 32]);
        let dk = DataKey::generate(7).unwrap();
        let w = m1.wrap(7, &dk).unwrap();
        let back = m1.unwrap(7, &w).unwrap();
        assert_eq!(back.bytes.as_ref(), dk.bytes.as_ref());
        assert!(matches!(
            m2.unwrap(7, &w),
            Err(StoreError::WrongKey { epoch: 7 })
        ));
        // The epoch is bound: a key of epoch 7 cannot be replayed as epoch 8.
        assert!(m1.unwrap(8, &w).is_err());
    }

    #[test]
    fn seal_open_and_tamper() {
        let dk = DataKey::generate(1).unwrap();
        let (n, mut ct) = dk.seal(b"ad", b"hello").unwrap();
        assert_eq!(dk.open(&n, b"ad", &ct).unwrap().as_slice(), b"hello");
        assert!(dk.open(&n, b"ae", &ct).is_none());
        ct[0] ^= 1;
        assert!(dk.open(&n, b"ad", &ct).is_none());
        let (n2, _) = dk.seal(b"ad", b"hello").unwrap();
        assert_ne!(n, n2, "nonces are random");
    }

    #[test]
    fn key_file_permissions_and_formats() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("master.key");
        MasterKey::generate_file(&p).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        MasterKey::load(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            MasterKey::load(&p),
            Err(StoreError::KeyFilePermissions { mode: 0o644, .. })
        ));
        let h = dir.path().join("hex.key");
        std::fs::write(&h, format!("{}\n", "ab".repeat(32))).unwrap();
        std::fs::set_permissions(&h, std::fs::Permissions::from_mode(0o400)).unwrap();
        MasterKey::load(&h).unwrap();
        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, "short").unwrap();
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            MasterKey::load(&bad),
            Err(StoreError::KeyFileFormat { .. })
        ));
        assert!(
            MasterKey::generate_file(&p).is_err(),
            "never overwrites a key"
        );
    }
}
