//! API key / secret pairs the server accepts.

use std::collections::HashMap;
use std::fmt;

/// An API key (the JWT `iss`). Not secret; may be logged.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a key set could not be built from configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("api key must not be empty")]
    EmptyKey,
    #[error("secret for api key {0} must not be empty")]
    EmptySecret(String),
}

/// The configured API keys and their secrets. Secrets never appear in `Debug` output.
#[derive(Clone, Default)]
pub struct KeySet {
    secrets: HashMap<ApiKey, Vec<u8>>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<_> = self.secrets.keys().map(|k| k.as_str()).collect();
        keys.sort_unstable();
        f.debug_struct("KeySet").field("keys", &keys).finish()
    }
}

impl KeySet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, key: &str, secret: &str) -> Result<(), KeyError> {
        if key.is_empty() {
            return Err(KeyError::EmptyKey);
        }
        if secret.is_empty() {
            return Err(KeyError::EmptySecret(key.to_string()));
        }
        self.secrets.insert(ApiKey::new(key), secret.as_bytes().to_vec());
        Ok(())
    }

    pub fn secret(&self, key: &str) -> Option<&[u8]> {
        self.secrets.get(&ApiKey::new(key)).map(Vec::as_slice)
    }

    /// The configured key names, sorted.
    pub fn key_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.secrets.keys().map(|k| k.as_str().to_string()).collect();
        v.sort_unstable();
        v
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    pub fn len(&self) -> usize {
        self.secrets.len()
    }
}
