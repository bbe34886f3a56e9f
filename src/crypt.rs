//! Encryption at rest of the values ebb keeps: webhook event bodies (the inbox and its
//! dead letters) and the values of conflicts and their bases (docs/security.md).
//!
//! AES-256-GCM (ring) under the key in `EBB_ENCRYPTION_KEY`, written `ID:BASE64` (32 bytes;
//! `ebb keys generate` makes one). A sealed value is text: `ebb:enc:v1:ID:BASE64URL` of a
//! random 96-bit nonce, the ciphertext and the tag, with the column it belongs to as
//! associated data (a value moved to another column does not open). The key id says which
//! key opens it, so keys can rotate: set the new key in `EBB_ENCRYPTION_KEY`, the old ones
//! in `EBB_ENCRYPTION_KEYS_OLD` (`ID:BASE64,…`), run `ebb keys rotate` (every value sealed
//! anew under the new key), then drop the old ones.
//!
//! Without a key, values are kept in clear (the daemon warns: `values_in_clear`); text that is not
//! sealed opens as itself, so a store written before a key was set keeps working and
//! `ebb keys rotate` seals it.

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::sync::OnceLock;

/// What sealed text starts with.
pub const PREFIX: &str = "ebb:enc:v1:";

/// Why a value cannot be sealed or opened, or the keys cannot be read. Never quotes a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptError {
    #[error("`{var}`: {why} (expected `ID:BASE64` of 32 random bytes; `ebb keys generate` makes one)")]
    BadKey { var: &'static str, why: String },
    #[error(
        "a value in the state store is sealed under key `{0}`, which neither `EBB_ENCRYPTION_KEY` nor `EBB_ENCRYPTION_KEYS_OLD` holds"
    )]
    UnknownKey(String),
    #[error("a value in the state store sealed under key `{0}` does not open: it was altered, or belongs elsewhere")]
    Tampered(String),
    #[error("a value in the state store is not sealed text ebb wrote")]
    Malformed,
}

/// The keys: the current one seals; every one opens.
pub struct Keys {
    current: Option<(String, LessSafeKey)>,
    old: Vec<(String, LessSafeKey)>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // (Never the key material.)
        f.debug_struct("Keys")
            .field("current", &self.current.as_ref().map(|(id, _)| id))
            .field("old", &self.old.iter().map(|(id, _)| id).collect::<Vec<_>>())
            .finish()
    }
}

fn parse_key(var: &'static str, text: &str) -> Result<(String, LessSafeKey), CryptError> {
    let bad = |why: &str| CryptError::BadKey { var, why: why.into() };
    let (id, b64) = text
        .trim()
        .split_once(':')
        .ok_or_else(|| bad("no `ID:` before the key"))?;
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(bad("the key id must be letters, digits, `-` or `_`"));
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64.trim()))
        .map_err(|_| bad("the key is not base64"))?;
    if raw.len() != 32 {
        return Err(bad(&format!("the key is {} bytes, not 32", raw.len())));
    }
    let key = UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| bad("not an AES-256 key"))?;
    Ok((id.to_string(), LessSafeKey::new(key)))
}

impl Keys {
    /// The keys from `current` (`EBB_ENCRYPTION_KEY`) and `old` (`EBB_ENCRYPTION_KEYS_OLD`).
    pub fn parse(current: Option<&str>, old: Option<&str>) -> Result<Keys, CryptError> {
        let current = current
            .filter(|t| !t.trim().is_empty())
            .map(|t| parse_key("EBB_ENCRYPTION_KEY", t))
            .transpose()?;
        let old = old
            .unwrap_or("")
            .split(',')
            .filter(|t| !t.trim().is_empty())
            .map(|t| parse_key("EBB_ENCRYPTION_KEYS_OLD", t))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Keys { current, old })
    }

    /// The process's keys, read from the environment once.
    pub fn global() -> Result<&'static Keys, CryptError> {
        static KEYS: OnceLock<Result<Keys, CryptError>> = OnceLock::new();
        KEYS.get_or_init(|| {
            Keys::parse(
                std::env::var("EBB_ENCRYPTION_KEY").ok().as_deref(),
                std::env::var("EBB_ENCRYPTION_KEYS_OLD").ok().as_deref(),
            )
        })
        .as_ref()
        .map_err(Clone::clone)
    }

    /// The id of the key values are sealed under, if any.
    pub fn current_id(&self) -> Option<&str> {
        self.current.as_ref().map(|(id, _)| id.as_str())
    }

    /// `plain` sealed under the current key for `column`; as it is without a key.
    pub fn seal(&self, column: &str, plain: &str) -> String {
        let Some((id, key)) = &self.current else {
            return plain.to_string();
        };
        let mut nonce = [0u8; NONCE_LEN];
        // (The system's random source failing is not recoverable: ring's own keys need it.)
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the system's random source");
        let mut data = plain.as_bytes().to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(column.as_bytes()),
            &mut data,
        )
        .expect("AES-GCM seals any length ebb keeps");
        let mut all = nonce.to_vec();
        all.extend_from_slice(&data);
        format!(
            "{PREFIX}{id}:{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(all)
        )
    }

    /// The text sealed in `text` for `column`; text that is not sealed, as it is.
    pub fn open(&self, column: &str, text: &str) -> Result<String, CryptError> {
        let Some(rest) = text.strip_prefix(PREFIX) else {
            return Ok(text.to_string());
        };
        let (id, b64) = rest.split_once(':').ok_or(CryptError::Malformed)?;
        let key = self
            .current
            .iter()
            .chain(&self.old)
            .find(|(k, _)| k == id)
            .map(|(_, k)| k)
            .ok_or_else(|| CryptError::UnknownKey(id.to_string()))?;
        let mut all = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|_| CryptError::Malformed)?;
        if all.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(CryptError::Malformed);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&all[..NONCE_LEN]);
        let data = &mut all[NONCE_LEN..];
        let plain = key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(column.as_bytes()), data)
            .map_err(|_| CryptError::Tampered(id.to_string()))?;
        String::from_utf8(plain.to_vec()).map_err(|_| CryptError::Malformed)
    }

    /// Whether `text` needs sealing anew under the current key (clear text, or sealed
    /// under another key) for `ebb keys rotate`.
    pub fn stale(&self, text: &str) -> bool {
        let Some(id) = self.current_id() else {
            return false;
        };
        match text.strip_prefix(PREFIX).and_then(|r| r.split_once(':')) {
            Some((k, _)) => k != id,
            None => true,
        }
    }
}

/// A new key for `EBB_ENCRYPTION_KEY`, with the id `id`.
pub fn generate(id: &str) -> String {
    let mut raw = [0u8; 32];
    SystemRandom::new().fill(&mut raw).expect("the system's random source");
    format!("{id}:{}", base64::engine::general_purpose::STANDARD.encode(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_column() {
        let k1 = generate("k1");
        let keys = Keys::parse(Some(&k1), None).unwrap();
        let sealed = keys.seal("inbox.body", r#"{"email":"ada@example.com"}"#);
        assert!(sealed.starts_with("ebb:enc:v1:k1:"), "{sealed}");
        assert!(!sealed.contains("ada@"));
        assert_eq!(
            keys.open("inbox.body", &sealed).unwrap(),
            r#"{"email":"ada@example.com"}"#
        );
        // Each seal has its own nonce.
        assert_ne!(sealed, keys.seal("inbox.body", r#"{"email":"ada@example.com"}"#));
        // Another column: does not open.
        assert_eq!(
            keys.open("conflicts.value", &sealed),
            Err(CryptError::Tampered("k1".into()))
        );
        // A flipped byte: does not open.
        let mut bytes = sealed.clone().into_bytes();
        let last = bytes.len() - 3;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(bytes).unwrap();
        assert_eq!(
            keys.open("inbox.body", &flipped),
            Err(CryptError::Tampered("k1".into()))
        );
        // Clear text opens as itself; without a key nothing is sealed.
        assert_eq!(keys.open("inbox.body", "plain").unwrap(), "plain");
        let none = Keys::parse(None, None).unwrap();
        assert_eq!(none.seal("inbox.body", "x"), "x");
        assert_eq!(
            none.open("inbox.body", &sealed),
            Err(CryptError::UnknownKey("k1".into()))
        );
    }

    #[test]
    fn a_rotation_keeps_old_values_readable_and_seals_anew() {
        let (k1, k2) = (generate("k1"), generate("k2"));
        let before = Keys::parse(Some(&k1), None).unwrap();
        let sealed = before.seal("c", "v");
        let after = Keys::parse(Some(&k2), Some(&format!(" {k1} ,"))).unwrap();
        assert_eq!(after.open("c", &sealed).unwrap(), "v");
        assert!(after.stale(&sealed) && after.stale("clear") && !after.stale(&after.seal("c", "v")));
        assert!(!before.stale(&sealed));
    }

    #[test]
    fn bad_keys_are_named_but_never_shown() {
        for (text, why) in [
            ("nokeyid", "no `ID:`"),
            ("k1:not base64!", "not base64"),
            ("k1:AAAA", "3 bytes, not 32"),
            ("k 1:AAAA", "letters, digits"),
        ] {
            let e = Keys::parse(Some(text), None).unwrap_err().to_string();
            assert!(e.contains("EBB_ENCRYPTION_KEY") && e.contains(why), "{e}");
            assert!(!e.contains("AAAA") && !e.contains("nokeyid"), "{e}");
        }
        let keys = Keys::parse(Some(&generate("k1")), None).unwrap();
        assert!(!format!("{keys:?}").contains('='), "{keys:?}");
    }
}
