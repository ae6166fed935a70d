//! The signed image format, its streaming reader and its writer.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "TCARTIMG"
//! 8       2     format, big-endian (1)
//! 10      4     manifest length N, big-endian (2..=65536)
//! 14      64    Ed25519 signature over "telecart-image/v1\0" || manifest
//! 78      N     manifest: JSON (see [`Manifest`])
//! 78+N    ...   payloads back to back, in manifest order, each exactly `size` bytes
//! ```
//!
//! The signature covers the manifest only; the manifest pins each payload's size and SHA-256,
//! so a payload is checked while it streams and never needs to be held in memory. Nothing in the
//! manifest is looked at before the signature verifies, and no payload byte counts as good before
//! its hash matched.

use std::io::{self, Read, Write};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, UpdateError};

/// First bytes of every image.
pub const MAGIC: &[u8; 8] = b"TCARTIMG";
/// The format this crate writes and reads.
pub const FORMAT: u16 = 1;
/// Bytes before the manifest.
pub const HEADER_LEN: usize = 8 + 2 + 4 + 64;
/// Largest manifest accepted.
pub const MAX_MANIFEST: u32 = 65_536;
/// Most payloads an image may carry.
pub const MAX_PAYLOADS: usize = 64;
/// Signature domain separation: a signature for anything else never verifies as an image.
const DOMAIN: &[u8] = b"telecart-image/v1\0";
/// Read and write unit while streaming.
pub const CHUNK: usize = 1 << 20;

/// What a payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadKind {
    /// The root file system image written to the inactive slot (exactly one, first).
    Rootfs,
    /// A file for the slot's boot partition (kernel, device tree, cmdline.txt).
    Boot,
}

/// One payload as the manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadInfo {
    /// `rootfs`, or the boot file's name (a plain file name, no directories).
    pub name: String,
    /// What it is.
    pub kind: PayloadKind,
    /// Exact length in bytes.
    pub size: u64,
    /// SHA-256, 64 lowercase hex digits.
    pub sha256: String,
}

/// The signed description of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Board the image is built for (`update.board` must match).
    pub board: String,
    /// Version of the image (semantic versioning).
    pub version: String,
    /// The installed version must be at least this to install the image directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<String>,
    /// Reproducible-build identifier (for example the source commit and build recipe hash).
    pub build_id: String,
    /// The payloads, in the order they follow the manifest.
    pub payloads: Vec<PayloadInfo>,
}

impl Manifest {
    /// Parses and checks a manifest (only ever called on signed bytes, and by the fuzz target).
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| UpdateError::BadManifest(e.to_string()))?;
        m.check()?;
        Ok(m)
    }

    /// The rules the types cannot express.
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(UpdateError::BadManifest(m));
        if self.board.is_empty() || self.board.len() > 32 {
            return bad("board must be 1 to 32 characters".into());
        }
        self.semver()?;
        if let Some(min) = &self.min_version {
            semver::Version::parse(min)
                .map_err(|e| UpdateError::BadManifest(format!("min_version {min:?}: {e}")))?;
        }
        if self.build_id.is_empty() || self.build_id.len() > 128 {
            return bad("build_id must be 1 to 128 characters".into());
        }
        if self.payloads.is_empty() || self.payloads.len() > MAX_PAYLOADS {
            return bad(format!("needs 1 to {MAX_PAYLOADS} payloads"));
        }
        if self.payloads[0].kind != PayloadKind::Rootfs
            || self.payloads[1..]
                .iter()
                .any(|p| p.kind == PayloadKind::Rootfs)
        {
            return bad("exactly one rootfs payload, first".into());
        }
        let mut total: u64 = 0;
        for (i, p) in self.payloads.iter().enumerate() {
            if parse_sha256(&p.sha256).is_none() {
                return bad(format!("payload {:?}: sha256 is not 64 hex digits", p.name));
            }
            if p.kind == PayloadKind::Boot && !is_plain_file_name(&p.name) {
                return bad(format!(
                    "boot file name {:?} is not a plain file name",
                    p.name
                ));
            }
            if p.kind == PayloadKind::Rootfs && p.name != "rootfs" {
                return bad("the rootfs payload is named \"rootfs\"".into());
            }
            if self.payloads[..i].iter().any(|q| q.name == p.name) {
                return bad(format!("payload {:?} appears twice", p.name));
            }
            total = total
                .checked_add(p.size)
                .ok_or_else(|| UpdateError::BadManifest("payload sizes overflow".into()))?;
        }
        Ok(())
    }

    /// The version, parsed.
    pub fn semver(&self) -> Result<semver::Version> {
        semver::Version::parse(&self.version)
            .map_err(|e| UpdateError::BadManifest(format!("version {:?}: {e}", self.version)))
    }

    /// The rootfs payload.
    pub fn rootfs(&self) -> &PayloadInfo {
        &self.payloads[0]
    }

    /// Sum of the payload sizes.
    pub fn total_size(&self) -> u64 {
        self.payloads.iter().map(|p| p.size).sum()
    }
}

fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits.
pub fn parse_sha256(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// What the cart checks a verified manifest against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallPolicy {
    /// `update.board`.
    pub board: String,
    /// Version running now, if known (a fresh cart has none).
    pub installed: Option<semver::Version>,
    /// The technician asked to install an older version (audited by the caller).
    pub allow_downgrade: bool,
}

/// A downgrade that the policy let through because it was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downgrade {
    /// Version running now.
    pub from: String,
    /// Version being installed.
    pub to: String,
}

impl InstallPolicy {
    /// Refuses a wrong-board, too-new-for-this-cart or downgrade image; returns the downgrade
    /// that was allowed by override, so the caller can audit it.
    pub fn check(&self, manifest: &Manifest) -> Result<Option<Downgrade>> {
        if manifest.board != self.board {
            return Err(UpdateError::WrongBoard {
                image: manifest.board.clone(),
                device: self.board.clone(),
            });
        }
        let version = manifest.semver()?;
        let Some(installed) = &self.installed else {
            return Ok(None);
        };
        if let Some(min) = &manifest.min_version {
            let min = semver::Version::parse(min)
                .map_err(|e| UpdateError::BadManifest(format!("min_version: {e}")))?;
            if *installed < min {
                return Err(UpdateError::InstalledTooOld {
                    minimum: min.to_string(),
                    installed: installed.to_string(),
                });
            }
        }
        if version < *installed {
            if !self.allow_downgrade {
                return Err(UpdateError::Downgrade {
                    image: version.to_string(),
                    installed: installed.to_string(),
                });
            }
            return Ok(Some(Downgrade {
                from: installed.to_string(),
                to: version.to_string(),
            }));
        }
        Ok(None)
    }
}

fn signed_message(manifest: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + manifest.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(manifest);
    m
}

fn read_full(r: &mut impl Read, buf: &mut [u8], what: &str) -> Result<()> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            UpdateError::Truncated(what.into())
        } else {
            UpdateError::io(format!("reading the image ({what})"), &e)
        }
    })
}

/// A streaming reader over an image whose signature verified.
pub struct ImageReader<R> {
    inner: R,
    manifest: Manifest,
    manifest_sha256: [u8; 32],
    next: usize,
    key_index: usize,
}

impl<R: Read> ImageReader<R> {
    /// Reads the header and the manifest, verifies the signature against `trusted` and checks the
    /// manifest. Reads nothing past the manifest.
    pub fn open(mut inner: R, trusted: &[VerifyingKey]) -> Result<Self> {
        let mut header = [0u8; HEADER_LEN];
        // Read the magic alone first, so a short foreign file is "not an image", not "truncated".
        let mut got = 0;
        while got < MAGIC.len() {
            match inner.read(&mut header[got..MAGIC.len()]) {
                Ok(0) => return Err(UpdateError::NotAnImage),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(UpdateError::io("reading the image", &e)),
            }
        }
        if &header[..8] != MAGIC {
            return Err(UpdateError::NotAnImage);
        }
        read_full(&mut inner, &mut header[8..], "the header")?;
        let format = u16::from_be_bytes([header[8], header[9]]);
        if format != FORMAT {
            return Err(UpdateError::UnsupportedFormat(format));
        }
        let len = u32::from_be_bytes([header[10], header[11], header[12], header[13]]);
        if !(2..=MAX_MANIFEST).contains(&len) {
            return Err(UpdateError::ManifestSize(len));
        }
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&header[14..78]);
        let mut manifest = vec![0u8; len as usize];
        read_full(&mut inner, &mut manifest, "the manifest")?;
        if sig == [0u8; 64] {
            return Err(UpdateError::Unsigned);
        }
        if trusted.is_empty() {
            return Err(UpdateError::NoTrustedKeys);
        }
        let signature = Signature::from_bytes(&sig);
        let message = signed_message(&manifest);
        let key_index = trusted
            .iter()
            .position(|k| k.verify_strict(&message, &signature).is_ok())
            .ok_or(UpdateError::BadSignature(trusted.len()))?;
        let parsed = Manifest::parse(&manifest)?;
        Ok(Self {
            inner,
            manifest: parsed,
            manifest_sha256: Sha256::digest(&manifest).into(),
            next: 0,
            key_index,
        })
    }

    /// The verified manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// SHA-256 of the signed manifest bytes (identifies the image in logs).
    pub fn manifest_sha256(&self) -> [u8; 32] {
        self.manifest_sha256
    }

    /// Which of the trusted keys verified the signature.
    pub fn key_index(&self) -> usize {
        self.key_index
    }

    /// Index of the payload [`ImageReader::copy_payload`] reads next, `None` after the last.
    pub fn next_payload(&self) -> Option<&PayloadInfo> {
        self.manifest.payloads.get(self.next)
    }

    /// Streams the next payload into `sink` in chunks, hashing as it goes; `progress` gets the
    /// bytes done so far after each chunk and may stop the copy by returning `false`. Fails with
    /// [`UpdateError::PayloadHash`] if the bytes do not match the manifest: whatever reached
    /// `sink` must then be treated as garbage.
    pub fn copy_payload(
        &mut self,
        sink: &mut dyn Write,
        progress: &mut dyn FnMut(u64) -> bool,
    ) -> Result<PayloadInfo> {
        let info = self
            .next_payload()
            .cloned()
            .ok_or_else(|| UpdateError::State("no payload left in the image".into()))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut done: u64 = 0;
        while done < info.size {
            let want = usize::try_from((info.size - done).min(CHUNK as u64)).unwrap_or(CHUNK);
            read_full(
                &mut self.inner,
                &mut buf[..want],
                &format!("payload {:?} at byte {done} of {}", info.name, info.size),
            )?;
            hasher.update(&buf[..want]);
            sink.write_all(&buf[..want])
                .map_err(|e| UpdateError::io(format!("writing payload {:?}", info.name), &e))?;
            done += want as u64;
            if !progress(done) {
                return Err(UpdateError::Interrupted(done));
            }
        }
        let digest: [u8; 32] = hasher.finalize().into();
        if Some(digest) != parse_sha256(&info.sha256) {
            return Err(UpdateError::PayloadHash(info.name));
        }
        self.next += 1;
        Ok(info)
    }

    /// After the last payload: the image must end here.
    pub fn finish(mut self) -> Result<()> {
        if self.next < self.manifest.payloads.len() {
            return Err(UpdateError::State("payloads left unread".into()));
        }
        let mut one = [0u8; 1];
        loop {
            match self.inner.read(&mut one) {
                Ok(0) => return Ok(()),
                Ok(_) => return Err(UpdateError::TrailingData),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(UpdateError::io("reading the image", &e)),
            }
        }
    }

    /// Reads every payload to the end, checking hashes and the end of the image.
    pub fn verify_all(mut self, progress: &mut dyn FnMut(u64) -> bool) -> Result<Manifest> {
        let mut base = 0;
        while self.next_payload().is_some() {
            let info = self.copy_payload(&mut io::sink(), &mut |d| progress(base + d))?;
            base += info.size;
        }
        let manifest = self.manifest.clone();
        self.finish()?;
        Ok(manifest)
    }
}

/// One payload to put into an image: its description and where its bytes come from.
pub struct PayloadSource<'a> {
    /// `rootfs` or the boot file name.
    pub name: String,
    /// What it is.
    pub kind: PayloadKind,
    /// The bytes (read twice: once to hash, once to copy).
    pub open: Box<dyn FnMut() -> io::Result<Box<dyn Read + 'a>> + 'a>,
}

/// Builds the manifest for payloads by hashing them (streaming).
pub fn describe_payloads(payloads: &mut [PayloadSource<'_>]) -> Result<Vec<PayloadInfo>> {
    let mut out = Vec::with_capacity(payloads.len());
    for p in payloads.iter_mut() {
        let mut r = (p.open)().map_err(|e| UpdateError::io(format!("opening {}", p.name), &e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut size = 0u64;
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(UpdateError::io(format!("reading {}", p.name), &e)),
            };
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        out.push(PayloadInfo {
            name: p.name.clone(),
            kind: p.kind,
            size,
            sha256: hex(&hasher.finalize()),
        });
    }
    Ok(out)
}

/// Signs `manifest` and writes the whole image to `out`, streaming the payloads; fails if a
/// payload changed between hashing and copying.
pub fn write_image(
    manifest: &Manifest,
    key: &SigningKey,
    payloads: &mut [PayloadSource<'_>],
    out: &mut dyn Write,
) -> Result<()> {
    manifest.check()?;
    if payloads.len() != manifest.payloads.len() {
        return Err(UpdateError::BadManifest(
            "payload count differs from the manifest".into(),
        ));
    }
    let bytes =
        serde_json::to_vec_pretty(manifest).map_err(|e| UpdateError::BadManifest(e.to_string()))?;
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|l| *l <= MAX_MANIFEST)
        .ok_or(UpdateError::ManifestSize(u32::MAX))?;
    let signature = key.sign(&signed_message(&bytes));
    let w = |e: io::Error| UpdateError::io("writing the image", &e);
    out.write_all(MAGIC).map_err(w)?;
    out.write_all(&FORMAT.to_be_bytes()).map_err(w)?;
    out.write_all(&len.to_be_bytes()).map_err(w)?;
    out.write_all(&signature.to_bytes()).map_err(w)?;
    out.write_all(&bytes).map_err(w)?;
    for (info, source) in manifest.payloads.iter().zip(payloads.iter_mut()) {
        let r =
            (source.open)().map_err(|e| UpdateError::io(format!("opening {}", info.name), &e))?;
        let mut hashing = HashingReader {
            inner: r,
            hasher: Sha256::new(),
        };
        let copied = io::copy(&mut (&mut hashing).take(info.size + 1), out).map_err(w)?;
        if copied != info.size || hex(&hashing.hasher.finalize()) != info.sha256 {
            return Err(UpdateError::State(format!(
                "{} changed while the image was written",
                info.name
            )));
        }
    }
    out.flush().map_err(w)
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
