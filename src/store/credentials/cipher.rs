//! Sealing credentials: XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`), a fresh random
//! 24-byte nonce per seal (random nonces of that size never realistically repeat), and the
//! session id as associated data, so a ciphertext copied to another session does not open.

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{AppError, AppResult};

/// One 32-byte key and its fingerprint.
struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl Key {
    fn from_base64(name: &str, text: &str) -> Result<Key, String> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| format!("{name} is not base64"))?;
        if bytes.len() != 32 {
            return Err(format!(
                "{name} must be 32 random bytes in base64 (it has {}); make one with \
                 `head -c 32 /dev/urandom | base64`",
                bytes.len()
            ));
        }
        let digest = Sha256::new()
            .chain_update(b"bughive credentials key\0")
            .chain_update(&bytes)
            .finalize();
        let id = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes)
            .map_err(|_| format!("{name} must be 32 bytes"))?;
        Ok(Key { id, cipher })
    }
}

/// The key that seals new credentials, and older keys that still open what they sealed.
pub struct Keyring {
    current: Key,
    previous: Vec<Key>,
}

// Never prints a key: only fingerprints.
impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current.id)
            .field(
                "previous",
                &self.previous.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Credentials as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl Keyring {
    /// A keyring from base64 keys: `current` (`CREDENTIALS_KEY`) and any older ones
    /// (`CREDENTIALS_KEY_PREVIOUS`, comma-separated).
    pub fn from_base64(current: &str, previous: &[&str]) -> Result<Keyring, String> {
        Ok(Keyring {
            current: Key::from_base64("CREDENTIALS_KEY", current)?,
            previous: previous
                .iter()
                .filter(|p| !p.trim().is_empty())
                .map(|p| Key::from_base64("CREDENTIALS_KEY_PREVIOUS", p))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The keyring of `CREDENTIALS_KEY` and, while rotating, the keys it replaced in
    /// `CREDENTIALS_KEY_PREVIOUS` (comma-separated), which still open what they sealed. Unset:
    /// `None`, and the gateway accepts no credentials. A malformed key is an error (start-up
    /// stops).
    pub fn from_env() -> Result<Option<std::sync::Arc<Keyring>>, String> {
        let current = std::env::var("CREDENTIALS_KEY").unwrap_or_default();
        let previous = std::env::var("CREDENTIALS_KEY_PREVIOUS").unwrap_or_default();
        if current.trim().is_empty() {
            if !previous.trim().is_empty() {
                return Err("CREDENTIALS_KEY_PREVIOUS is set but CREDENTIALS_KEY is not".into());
            }
            return Ok(None);
        }
        let previous: Vec<&str> = previous.split(',').collect();
        Keyring::from_base64(&current, &previous).map(|k| Some(std::sync::Arc::new(k)))
    }

    /// The fingerprint of the key that seals new credentials.
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    pub fn seal(&self, session: Uuid, plaintext: &[u8]) -> AppResult<Sealed> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ciphertext = self
            .current
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: session.as_bytes(),
                },
            )
            .map_err(|_| AppError::internal("sealing credentials failed"))?;
        Ok(Sealed {
            key_id: self.current.id.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Opens what any key of the ring sealed for this session.
    pub fn open(&self, session: Uuid, sealed: &Sealed) -> AppResult<Vec<u8>> {
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == sealed.key_id)
            .ok_or_else(|| {
                AppError::Unavailable(format!(
                    "the session's credentials were sealed with key {}, which this gateway does \
                     not have (set it as CREDENTIALS_KEY_PREVIOUS)",
                    sealed.key_id
                ))
            })?;
        if sealed.nonce.len() != 24 {
            return Err(AppError::internal("stored credentials have a bad nonce"));
        }
        key.cipher
            .decrypt(
                XNonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: session.as_bytes(),
                },
            )
            .map_err(|_| AppError::internal("stored credentials do not authenticate"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const B: &str = "HxweHRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=";

    #[test]
    fn sealed_credentials_open_only_for_their_session_and_with_their_key() {
        let ring = Keyring::from_base64(A, &[]).expect("key");
        let s = Uuid::now_v7();
        let sealed = ring.seal(s, b"hunter2").expect("seal");
        assert!(!sealed.ciphertext.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(ring.open(s, &sealed).expect("open"), b"hunter2");
        // Another session's associated data, a flipped bit, another key: all refused.
        assert!(ring.open(Uuid::now_v7(), &sealed).is_err());
        let mut bad = sealed.clone();
        bad.ciphertext[0] ^= 1;
        assert!(ring.open(s, &bad).is_err());
        let other = Keyring::from_base64(B, &[]).expect("key");
        assert_eq!(
            other.open(s, &sealed).map_err(|e| e.code()),
            Err("UNAVAILABLE")
        );
        // Rotation: the new key reads the old ciphertext as a previous key, and seals anew.
        let rotated = Keyring::from_base64(B, &[A]).expect("keys");
        assert_eq!(rotated.open(s, &sealed).expect("open"), b"hunter2");
        assert_ne!(rotated.seal(s, b"x").expect("seal").key_id, sealed.key_id);
        // Fresh nonces: the same plaintext never seals the same way twice.
        assert_ne!(ring.seal(s, b"hunter2").expect("seal"), sealed);
    }

    #[test]
    fn bad_keys_are_refused_and_never_printed() {
        assert!(Keyring::from_base64("not base64!", &[]).is_err());
        assert!(
            Keyring::from_base64("AAEC", &[])
                .unwrap_err()
                .contains("32 random bytes")
        );
        let ring = Keyring::from_base64(A, &[B]).expect("keys");
        let shown = format!("{ring:?}");
        assert!(!shown.contains(A) && !shown.contains(B), "{shown}");
        assert_eq!(ring.current_id().len(), 16);
    }
}
