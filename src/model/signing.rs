//! Signed versions. Whoever can write a version runs commands as root on every host, and
//! ZooKeeper ACLs only say who may write, not who wrote. A publisher may sign what it publishes
//! with an ed25519 key; an app that lists trusted public keys (`trusted_keys`) installs only
//! versions signed by one of them, so a stolen agent or ZooKeeper credential cannot push a config.
//!
//! Keys are the PEM files OpenSSL writes (`openssl genpkey -algorithm ed25519`, and
//! `openssl pkey -pubout`), or `zkcoordctl key generate`. The signature covers a domain tag, the
//! app, the sha256, the size, when it was made and (optionally) when it expires, so a signature
//! for one app is no good for another, and hosts can refuse a replayed one: a signature made
//! before the one of the version a host runs, or past its expiry (see SECURITY.md for the
//! trade-offs). Signatures made before issue 18 carry no time (v1) and count as made at 0.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Tags what is signed, so a zkcoord signature can never be replayed as anything else.
const DOMAIN: &str = "zkcoord-version-v1";
/// The tag of signatures that carry their time (and expiry).
const DOMAIN_V2: &str = "zkcoord-version-v2";
/// How far ahead of a checker's clock a signature's time may be (clocks disagree a little).
const FUTURE_TOLERANCE_MS: u64 = 10 * 60 * 1000;

/// A publisher's signature over a version, carried in the request and kept in the metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionSignature {
    /// The signer's public key (32 bytes, base64), so readers can name the signer without a key list.
    pub public_key: String,
    /// The ed25519 signature (64 bytes, base64).
    pub signature: String,
    /// When it was made (ms since the epoch, the signer's clock); covered by the signature.
    /// Absent in signatures made before replay protection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_ms: Option<u64>,
    /// When it stops counting (ms since the epoch); covered by the signature. None: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
}

impl VersionSignature {
    /// When it was made, for comparisons: a signature without a time counts as the oldest.
    pub fn issued(&self) -> u64 {
        self.issued_ms.unwrap_or(0)
    }
}

/// The bytes a signature covers.
fn signed_message(app: &str, sha256_hex: &str, size: usize, issued_ms: Option<u64>, expires_ms: Option<u64>) -> Vec<u8> {
    match issued_ms {
        None => format!("{DOMAIN}\n{app}\n{sha256_hex}\n{size}").into_bytes(),
        Some(issued) => {
            let expires = expires_ms.map_or_else(|| "never".to_string(), |e| e.to_string());
            format!("{DOMAIN_V2}\n{app}\n{sha256_hex}\n{size}\n{issued}\n{expires}").into_bytes()
        }
    }
}

/// A time in messages.
fn when(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}

/// Why a key cannot be used or a signature does not count; each says which file or key, and
/// what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A key file is missing, unreadable, or readable by others.
    #[error("{0}")]
    KeyFile(String),
    /// A file or string is not the key it should be.
    #[error("{0}")]
    BadKey(String),
    /// The signature is malformed, or made by its key over other content.
    #[error("{0}")]
    BadSignature(String),
    /// The app requires a signature by a trusted key, and this version has none that counts.
    #[error("{0}")]
    NotTrusted(String),
}

impl From<SignatureError> for String {
    fn from(e: SignatureError) -> String {
        e.to_string()
    }
}

impl From<crate::secret::SecretError> for SignatureError {
    fn from(e: crate::secret::SecretError) -> SignatureError {
        SignatureError::KeyFile(e.to_string())
    }
}

/// A short, stable name for a public key in messages: the first 8 bytes of its sha256, in hex.
pub fn key_id(key: &VerifyingKey) -> String {
    crate::digest::sha256_hex(key.as_bytes())[..16].to_string()
}

/// Reads a PKCS#8 PEM private key, refusing a file that group or others can read.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, SignatureError> {
    crate::secret::refuse_if_shared(path)?;
    let pem = std::fs::read_to_string(path).map_err(|e| SignatureError::KeyFile(format!("cannot read {}: {e}", path.display())))?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
        SignatureError::BadKey(format!("{} is not an ed25519 private key in PKCS#8 PEM ({e}); make one with `zkcoordctl key generate`", path.display()))
    })
}

/// Reads a public key: SPKI PEM (`-----BEGIN PUBLIC KEY-----`) or the raw 32 bytes in base64.
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, SignatureError> {
    let text = std::fs::read_to_string(path).map_err(|e| SignatureError::KeyFile(format!("cannot read {}: {e}", path.display())))?;
    parse_verifying_key(&text).map_err(|e| SignatureError::BadKey(format!("{}: {e}", path.display())))
}

/// A public key from its text (PEM or base64); the error says what it is not.
fn parse_verifying_key(text: &str) -> Result<VerifyingKey, SignatureError> {
    let bad = |why: String| SignatureError::BadKey(why);
    if text.contains("-----BEGIN PUBLIC KEY-----") {
        return VerifyingKey::from_public_key_pem(text).map_err(|e| bad(format!("not an ed25519 public key in PEM ({e})")));
    }
    let raw = B64.decode(text.trim()).map_err(|_| bad("expected an ed25519 public key in PEM or base64".to_string()))?;
    let bytes: [u8; 32] = raw.try_into().map_err(|_| bad("expected 32 bytes of ed25519 public key".to_string()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| bad(format!("not a valid ed25519 public key ({e})")))
}

/// Signs version content for `app` now, valid for `valid_for` (None: without expiry).
pub fn sign(key: &SigningKey, app: &str, sha256_hex: &str, size: usize, valid_for: Option<std::time::Duration>) -> VersionSignature {
    let issued = crate::clock::now_ms();
    let expires = valid_for.map(|d| issued.saturating_add(d.as_millis().min(u64::MAX as u128) as u64));
    let sig = key.sign(&signed_message(app, sha256_hex, size, Some(issued), expires));
    VersionSignature {
        public_key: B64.encode(key.verifying_key().as_bytes()),
        signature: B64.encode(sig.to_bytes()),
        issued_ms: Some(issued),
        expires_ms: expires,
    }
}

/// Checks that `sig` is a well-formed, valid signature by the key it names. The agent runs this
/// to refuse garbage early; only an app's trusted keys decide whether the signer counts.
pub fn check(sig: &VersionSignature, app: &str, sha256_hex: &str, size: usize) -> Result<VerifyingKey, SignatureError> {
    let bad = SignatureError::BadSignature;
    let key = parse_verifying_key(&sig.public_key).map_err(|e| bad(format!("signature names a bad public key: {e}")))?;
    let raw = B64.decode(&sig.signature).map_err(|_| bad("signature is not base64".to_string()))?;
    let bytes: [u8; 64] = raw.try_into().map_err(|_| bad("signature is not 64 bytes".to_string()))?;
    key.verify(&signed_message(app, sha256_hex, size, sig.issued_ms, sig.expires_ms), &Signature::from_bytes(&bytes))
        .map_err(|_| bad(format!("signature by key {} does not match the content", key_id(&key))))?;
    let now = crate::clock::now_ms();
    // A signer whose clock runs ahead would lock hosts out of every later signature.
    if sig.issued() > now + FUTURE_TOLERANCE_MS {
        return Err(bad(format!("signature by key {} says it was made at {}, ahead of this clock ({}): is the signer's clock right?", key_id(&key), when(sig.issued()), when(now))));
    }
    if let Some(expires) = sig.expires_ms.filter(|e| now > *e) {
        return Err(bad(format!("signature by key {} expired at {} (made {}); sign it again", key_id(&key), when(expires), when(sig.issued()))));
    }
    Ok(key)
}

/// The public keys an app trusts. Empty means signatures are not required.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    /// Each key with the file it came from, for messages.
    keys: Vec<(VerifyingKey, PathBuf)>,
    /// Why the configured keys could not be read (then nothing is installed: failing open
    /// would turn a deleted key file into "accept anything").
    unusable: Option<SignatureError>,
}

impl TrustedKeys {
    /// Loads every file in `paths`; the first unreadable one is the error.
    pub fn load(paths: &[PathBuf]) -> Result<TrustedKeys, SignatureError> {
        let keys = paths.iter().map(|p| load_verifying_key(p).map(|k| (k, p.clone()))).collect::<Result<_, _>>()?;
        Ok(TrustedKeys { keys, unusable: None })
    }

    /// Like [`TrustedKeys::load`], but keys that cannot be read refuse every version instead.
    pub fn load_or_refuse(paths: &[PathBuf]) -> TrustedKeys {
        TrustedKeys::load(paths).unwrap_or_else(|e| TrustedKeys { keys: Vec::new(), unusable: Some(e) })
    }

    /// Whether this app requires signed versions.
    pub fn required(&self) -> bool {
        !self.keys.is_empty() || self.unusable.is_some()
    }

    /// Accepts content only with a valid, unexpired signature by a trusted key made no earlier
    /// than `held_ms`, the signature time of the version this host runs (None: it runs none
    /// that was signed); says who signed.
    pub fn verify(&self, sig: Option<&VersionSignature>, app: &str, sha256_hex: &str, size: usize, held_ms: Option<u64>) -> Result<String, SignatureError> {
        let refuse = SignatureError::NotTrusted;
        if let Some(e) = &self.unusable {
            return Err(refuse(format!("trusted_keys cannot be read ({e}); not installing")));
        }
        let Some(sig) = sig else {
            return Err(refuse("version is not signed and this app requires a signature by a trusted key; not installing".into()));
        };
        let key = check(sig, app, sha256_hex, size).map_err(|e| refuse(format!("{e}; not installing")))?;
        if let Some(held) = held_ms.filter(|h| sig.issued() < *h) {
            let made = if sig.issued_ms.is_some() { format!("made {}", when(sig.issued())) } else { "made without a time (before replay protection)".into() };
            return Err(refuse(format!(
                "replayed signature: {made}, before the signature of the version this host runs ({}); not installing (a rollback needs a fresh signature: zkcoordctl rollback --sign-key)",
                when(held)
            )));
        }
        match self.keys.iter().find(|(k, _)| *k == key) {
            Some((_, path)) => Ok(format!("key {} ({})", key_id(&key), path.display())),
            None => Err(refuse(format!("version is signed by key {}, which is not in trusted_keys; not installing", key_id(&key)))),
        }
    }
}

/// A new key pair as (private PKCS#8 PEM, public SPKI PEM).
pub fn generate() -> (String, String) {
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
    let key = SigningKey::from_bytes(&seed);
    let private = key.to_pkcs8_pem(Default::default()).expect("encodes").to_string();
    let public = key.verifying_key().to_public_key_pem(Default::default()).expect("encodes");
    (private, public)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_binds_app_hash_and_size() {
        let (private, public) = generate();
        let key = SigningKey::from_pkcs8_pem(&private).unwrap();
        let sig = sign(&key, "web", "ab", 3, None);
        let trusted = TrustedKeys { keys: vec![(parse_verifying_key(&public).unwrap(), "k.pub".into())], unusable: None };
        assert!(trusted.verify(Some(&sig), "web", "ab", 3, None).unwrap().contains("k.pub"));
        assert!(trusted.verify(Some(&sig), "other", "ab", 3, None).unwrap_err().to_string().contains("does not match"));
        assert!(trusted.verify(Some(&sig), "web", "ac", 3, None).is_err());
        assert!(trusted.verify(Some(&sig), "web", "ab", 4, None).is_err());
        assert!(trusted.verify(None, "web", "ab", 3, None).unwrap_err().to_string().contains("not signed"));
        let stranger = SigningKey::from_pkcs8_pem(&generate().0).unwrap();
        let e = trusted.verify(Some(&sign(&stranger, "web", "ab", 3, None)), "web", "ab", 3, None).unwrap_err().to_string();
        assert!(e.contains("not in trusted_keys"), "{e}");
    }

    #[test]
    fn a_signature_older_than_the_held_one_or_expired_is_refused_and_its_time_cannot_be_changed() {
        let (private, public) = generate();
        let key = SigningKey::from_pkcs8_pem(&private).unwrap();
        let trusted = TrustedKeys { keys: vec![(parse_verifying_key(&public).unwrap(), "k.pub".into())], unusable: None };
        let sig = sign(&key, "web", "ab", 3, None);
        let at = sig.issued();
        // The same signature again (a reinstall) and a later one pass; an earlier one is a replay.
        assert!(trusted.verify(Some(&sig), "web", "ab", 3, Some(at)).is_ok());
        assert!(trusted.verify(Some(&sig), "web", "ab", 3, Some(at - 1)).is_ok());
        let e = trusted.verify(Some(&sig), "web", "ab", 3, Some(at + 1)).unwrap_err().to_string();
        assert!(e.contains("replayed signature") && e.contains("rollback --sign-key"), "{e}");
        // Moving the time forward breaks the signature.
        let forged = VersionSignature { issued_ms: Some(at + 60_000), ..sig.clone() };
        assert!(trusted.verify(Some(&forged), "web", "ab", 3, Some(at + 1)).unwrap_err().to_string().contains("does not match"));
        let lifted = VersionSignature { expires_ms: None, ..sign(&key, "web", "ab", 3, Some(std::time::Duration::from_secs(60))) };
        assert!(trusted.verify(Some(&lifted), "web", "ab", 3, None).unwrap_err().to_string().contains("does not match"));
        // Made "in the future" (a signer's clock far ahead): refused, it would lock hosts out.
        let ahead = VersionSignature { issued_ms: Some(at + 3_600_000), ..sig.clone() };
        let ahead = VersionSignature { signature: B64.encode(key.sign(&signed_message("web", "ab", 3, ahead.issued_ms, None)).to_bytes()), ..ahead };
        assert!(trusted.verify(Some(&ahead), "web", "ab", 3, None).unwrap_err().to_string().contains("ahead of this clock"));
        // Expired.
        let mut old = sign(&key, "web", "ab", 3, Some(std::time::Duration::from_millis(1)));
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(trusted.verify(Some(&old), "web", "ab", 3, None).unwrap_err().to_string().contains("expired at"));
        old.expires_ms = Some(u64::MAX);
        assert!(trusted.verify(Some(&old), "web", "ab", 3, None).is_err());
        // A signature made before replay protection counts as the oldest.
        let v1 = VersionSignature { issued_ms: None, expires_ms: None, signature: B64.encode(key.sign(&signed_message("web", "ab", 3, None, None)).to_bytes()), ..sig };
        assert!(trusted.verify(Some(&v1), "web", "ab", 3, None).is_ok());
        assert!(trusted.verify(Some(&v1), "web", "ab", 3, Some(at)).unwrap_err().to_string().contains("without a time"));
    }

    #[test]
    fn public_keys_read_as_pem_or_base64() {
        let (private, public) = generate();
        let key = SigningKey::from_pkcs8_pem(&private).unwrap().verifying_key();
        assert_eq!(parse_verifying_key(&public).unwrap(), key);
        assert_eq!(parse_verifying_key(&B64.encode(key.as_bytes())).unwrap(), key);
        assert!(parse_verifying_key("nonsense").is_err());
    }
}
