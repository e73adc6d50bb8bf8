//! Tenants and API keys: who may call, and for which tenant.
//!
//! Keys are 256-bit random strings; only their SHA-256 is stored (a slow hash buys
//! nothing against keys of that entropy) and comparisons are constant-time. The store is
//! one JSON file, `DATA_DIR/api/keys.json`, replaced atomically (write, fsync, rename,
//! fsync the directory) on every change, so a crash leaves either the old or the new
//! state, never a mix. Changes are rare (tenant and key administration); lookups are a
//! map access under a read lock.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use base64::Engine as _;
use herald::TenantId;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// Prefix of tenant keys: `hrk_<key id>_<secret>`.
const TENANT_KEY_PREFIX: &str = "hrk_";
/// Prefix of generated admin keys.
const ADMIN_KEY_PREFIX: &str = "hra_";
/// Characters of a key shown in listings, enough to tell keys apart, too few to use.
const KEY_PREFIX_SHOWN_CHARS: usize = 12;
/// Largest `Authorization` value examined: keys are ~70 bytes; anything far longer is
/// not a key and is refused without hashing it.
pub const BEARER_BYTES_MAX: usize = 512;

/// Who a request speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The admin key: tenant administration, and any tenant through `Herald-Tenant`.
    Admin,
    /// A tenant key: that tenant's routes only.
    Tenant(TenantId),
}

/// A tenant as listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TenantEntry {
    /// Tenant id.
    pub id: String,
    /// Creation time, Unix ms.
    pub created_at_ms: u64,
    /// Live keys.
    pub keys: Vec<KeyEntry>,
}

/// One stored key (never the key itself).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyEntry {
    /// Key id (`key_<hex>`), part of the key.
    pub id: String,
    /// The key's first characters, for telling keys apart.
    pub prefix: String,
    /// Hex SHA-256 of the whole key.
    pub sha256: String,
    /// Creation time, Unix ms.
    pub created_at_ms: u64,
}

/// A key just minted: the only moment it exists in clear.
#[derive(Debug, Clone)]
pub struct MintedKey {
    /// Key id.
    pub key_id: String,
    /// The key.
    pub api_key: String,
    /// Creation time, Unix ms.
    pub created_at_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    /// Hex SHA-256 of the generated admin key (absent when one is configured).
    admin_sha256: Option<String>,
    tenants: Vec<TenantEntry>,
}

#[derive(Debug, Default, Clone)]
struct State {
    tenants: BTreeMap<String, TenantEntry>,
    /// key id → (tenant, sha256)
    keys: HashMap<String, (TenantId, [u8; 32])>,
    stored_admin_sha256: Option<String>,
}

/// Why a key-store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such tenant or key (404).
    #[error("{0}")]
    NotFound(String),
    /// Already exists (409).
    #[error("{0}")]
    Conflict(String),
    /// A limit was reached (409: the caller must delete something first).
    #[error("{0}")]
    Limit(String),
    /// The file could not be written or read (503).
    #[error("key store {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The file exists but is not a key store (start-up error).
    #[error("key store {path} is damaged: {message}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// The tenants and keys.
#[derive(Debug)]
pub struct KeyStore {
    path: PathBuf,
    admin_sha256: [u8; 32],
    state: RwLock<State>,
    /// Serialises writers so that file replacements happen in state order.
    write_lock: std::sync::Mutex<()>,
    tenants_max: usize,
    keys_per_tenant_max: usize,
}

/// What opening the store found out about the admin key.
#[derive(Debug)]
pub enum AdminKeyOrigin {
    /// Configured (config file or environment).
    Configured,
    /// Generated now, on first start: print it once.
    Generated(String),
    /// Generated on an earlier start; only its hash is known.
    Stored,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // The system RNG failing is not recoverable in any useful way for key minting.
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut buf)
        .expect("the system random number generator works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&buf)
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut buf)
        .expect("the system random number generator works");
    hex::encode(buf)
}

fn parse_hash(text: &str, path: &Path) -> Result<[u8; 32], StoreError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).map_err(|e| StoreError::Corrupt {
        path: path.display().to_string(),
        message: format!("bad hash {text:?}: {e}"),
    })?;
    Ok(out)
}

impl KeyStore {
    /// Opens (or creates) `dir/keys.json`. `admin_key` is the configured admin key, if
    /// any; without one, a key is generated on first start and only its hash is stored.
    /// What the admin key's origin changes in the file (a generated key's hash stored, a
    /// stored one forgotten once a key is configured) is written only by
    /// [`KeyStore::settle_admin_key`], which the server calls once it has started: a
    /// start that fails (a port in use, a journal another process holds) neither stores
    /// a key nobody saw printed nor changes a file another server uses.
    pub fn open(
        dir: &Path,
        admin_key: Option<&str>,
        tenants_max: usize,
        keys_per_tenant_max: usize,
    ) -> Result<(KeyStore, AdminKeyOrigin), StoreError> {
        let io = |source| StoreError::Io {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join("keys.json");
        let file: StoreFile = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: path.display().to_string(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StoreFile::default(),
            Err(source) => {
                return Err(StoreError::Io {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        let mut state = State {
            stored_admin_sha256: file.admin_sha256.clone(),
            ..State::default()
        };
        for tenant in file.tenants {
            let id = TenantId::parse(&tenant.id).map_err(|e| StoreError::Corrupt {
                path: path.display().to_string(),
                message: format!("tenant {:?}: {e}", tenant.id),
            })?;
            for key in &tenant.keys {
                let hash = parse_hash(&key.sha256, &path)?;
                state.keys.insert(key.id.clone(), (id.clone(), hash));
            }
            state.tenants.insert(tenant.id.clone(), tenant);
        }
        let mut store = KeyStore {
            path,
            admin_sha256: [0; 32],
            state: RwLock::new(state),
            write_lock: std::sync::Mutex::new(()),
            tenants_max,
            keys_per_tenant_max,
        };
        let origin = match admin_key {
            Some(key) => {
                store.admin_sha256 = sha256(key.as_bytes());
                AdminKeyOrigin::Configured
            }
            None => {
                let stored = store.read().stored_admin_sha256.clone();
                match stored {
                    Some(hash) => {
                        store.admin_sha256 = parse_hash(&hash, &store.path)?;
                        AdminKeyOrigin::Stored
                    }
                    None => {
                        let key = format!("{ADMIN_KEY_PREFIX}{}", random_token(32));
                        store.admin_sha256 = sha256(key.as_bytes());
                        AdminKeyOrigin::Generated(key)
                    }
                }
            }
        };
        Ok((store, origin))
    }

    /// Writes what the admin key's `origin` ([`KeyStore::open`]'s) changes in the file:
    /// a generated key's hash is stored (a later start uses it); a stored one is
    /// forgotten once a key is configured (often because the printed one leaked: a
    /// later start without the configured key makes a new one instead of letting the
    /// old one work again).
    pub fn settle_admin_key(&self, origin: &AdminKeyOrigin) -> Result<(), StoreError> {
        match origin {
            AdminKeyOrigin::Generated(_) => {
                let hash = hex::encode(self.admin_sha256);
                self.change(|state| {
                    state.stored_admin_sha256 = Some(hash);
                    Ok(())
                })
            }
            AdminKeyOrigin::Configured if self.read().stored_admin_sha256.is_some() => {
                self.change(|state| {
                    state.stored_admin_sha256 = None;
                    Ok(())
                })
            }
            AdminKeyOrigin::Configured | AdminKeyOrigin::Stored => Ok(()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A poisoned lock means a panic while holding it; the state is still a valid map.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `edit` to a copy of the state, makes the copy durable, then publishes it.
    /// Writers queue on `write_lock`; readers (every authenticated request) keep using
    /// the current state meanwhile instead of waiting for the file's fsyncs, and see
    /// the change only once it is durable. A failed edit or write changes nothing.
    fn change<T>(
        &self,
        edit: impl FnOnce(&mut State) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // A poisoned lock means a panic in an earlier writer, which published nothing.
        let _writer = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = self.read().clone();
        let result = edit(&mut next)?;
        self.persist(&next)?;
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(result)
    }

    /// Who `bearer` (the `Authorization` value after `Bearer `) is, or `None`.
    pub fn authenticate(&self, bearer: &[u8]) -> Option<Principal> {
        if bearer.is_empty() || bearer.len() > BEARER_BYTES_MAX {
            return None;
        }
        let presented = sha256(bearer);
        if bool::from(presented.ct_eq(&self.admin_sha256)) {
            return Some(Principal::Admin);
        }
        let text = std::str::from_utf8(bearer).ok()?;
        let rest = text.strip_prefix(TENANT_KEY_PREFIX)?;
        let (key_id, _) = rest.split_once('_')?;
        let state = self.read();
        let (tenant, hash) = state.keys.get(&format!("key_{key_id}"))?;
        bool::from(presented.ct_eq(hash)).then(|| Principal::Tenant(tenant.clone()))
    }

    /// True when `tenant` exists.
    pub fn has_tenant(&self, tenant: &TenantId) -> bool {
        self.read().tenants.contains_key(tenant.as_str())
    }

    /// Creates a tenant with its first key.
    pub fn create_tenant(&self, tenant: &TenantId, now_ms: u64) -> Result<MintedKey, StoreError> {
        self.change(|state| {
            if state.tenants.contains_key(tenant.as_str()) {
                return Err(StoreError::Conflict(format!(
                    "tenant {tenant} already exists"
                )));
            }
            if state.tenants.len() >= self.tenants_max {
                return Err(StoreError::Limit(format!(
                    "this server holds at most {} tenants (limits.tenants_max); delete one \
                     first (DELETE /v1/tenants/{{id}})",
                    self.tenants_max
                )));
            }
            let (minted, entry) = mint(now_ms);
            state.tenants.insert(
                tenant.as_str().to_string(),
                TenantEntry {
                    id: tenant.as_str().to_string(),
                    created_at_ms: now_ms,
                    keys: vec![entry.clone()],
                },
            );
            state.keys.insert(
                entry.id.clone(),
                (tenant.clone(), sha256(minted.api_key.as_bytes())),
            );
            Ok(minted)
        })
    }

    /// Mints another key for a tenant.
    pub fn mint_key(&self, tenant: &TenantId, now_ms: u64) -> Result<MintedKey, StoreError> {
        self.change(|state| {
        let Some(entry) = state.tenants.get(tenant.as_str()) else {
            return Err(StoreError::NotFound(format!("no tenant {tenant}")));
        };
        if entry.keys.len() >= self.keys_per_tenant_max {
            return Err(StoreError::Limit(format!(
                "tenant {tenant} has {} keys, the most allowed (limits.keys_per_tenant_max); revoke one first",
                entry.keys.len()
            )));
        }
        let (minted, key) = mint(now_ms);
        let key_id = key.id.clone();
        if let Some(entry) = state.tenants.get_mut(tenant.as_str()) {
            entry.keys.push(key);
        }
        state.keys.insert(
            key_id,
            (tenant.clone(), sha256(minted.api_key.as_bytes())),
        );
        Ok(minted)
        })
    }

    /// Revokes a key; it stops working at once.
    pub fn revoke_key(&self, tenant: &TenantId, key_id: &str) -> Result<(), StoreError> {
        self.change(|state| {
            let Some(entry) = state.tenants.get_mut(tenant.as_str()) else {
                return Err(StoreError::NotFound(format!("no tenant {tenant}")));
            };
            let Some(position) = entry.keys.iter().position(|k| k.id == key_id) else {
                return Err(StoreError::NotFound(format!(
                    "tenant {tenant} has no key {key_id}"
                )));
            };
            entry.keys.remove(position);
            state.keys.remove(key_id);
            Ok(())
        })
    }

    /// Deletes a tenant and every key it has: they stop authenticating at once, and the
    /// tenant no longer counts against `limits.tenants_max`. Its webhooks, events and
    /// deliveries are the engine's, not the store's: the caller sees to them.
    pub fn delete_tenant(&self, tenant: &TenantId) -> Result<(), StoreError> {
        self.change(|state| {
            let Some(entry) = state.tenants.remove(tenant.as_str()) else {
                return Err(StoreError::NotFound(format!("no tenant {tenant}")));
            };
            for key in &entry.keys {
                state.keys.remove(&key.id);
            }
            Ok(())
        })
    }

    /// One tenant, if it exists.
    pub fn tenant(&self, tenant: &TenantId) -> Option<TenantEntry> {
        self.read().tenants.get(tenant.as_str()).cloned()
    }

    /// A page of tenants in id order: at most `limit` after `after`.
    pub fn tenants(&self, after: Option<&str>, limit: usize) -> (Vec<TenantEntry>, bool) {
        let state = self.read();
        let mut iter = state
            .tenants
            .range::<str, _>((
                after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded),
                std::ops::Bound::Unbounded,
            ))
            .map(|(_, t)| t.clone());
        let page: Vec<TenantEntry> = iter.by_ref().take(limit).collect();
        let more = iter.next().is_some();
        (page, more)
    }

    /// Writes the whole state to a temporary file, syncs it, renames it over the store
    /// and syncs the directory, so the change survives a crash once this returns.
    fn persist(&self, state: &State) -> Result<(), StoreError> {
        let io = |source| StoreError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let file = StoreFile {
            admin_sha256: state.stored_admin_sha256.clone(),
            tenants: state.tenants.values().cloned().collect(),
        };
        // Plain data always serialises.
        let bytes = serde_json::to_vec_pretty(&file).expect("key store serialises");
        let temp = self.path.with_extension("json.tmp");
        let mut out = std::fs::File::create(&temp).map_err(io)?;
        out.write_all(&bytes).map_err(io)?;
        out.sync_all().map_err(io)?;
        drop(out);
        std::fs::rename(&temp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(())
    }
}

fn mint(now_ms: u64) -> (MintedKey, KeyEntry) {
    let key_hex = random_hex(8);
    let api_key = format!("{TENANT_KEY_PREFIX}{key_hex}_{}", random_token(32));
    let key_id = format!("key_{key_hex}");
    let entry = KeyEntry {
        id: key_id.clone(),
        prefix: api_key.chars().take(KEY_PREFIX_SHOWN_CHARS).collect(),
        sha256: hex::encode(sha256(api_key.as_bytes())),
        created_at_ms: now_ms,
    };
    (
        MintedKey {
            key_id,
            api_key,
            created_at_ms: now_ms,
        },
        entry,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str) -> TenantId {
        TenantId::parse(id).unwrap()
    }

    #[test]
    fn generated_admin_key_works_and_only_its_hash_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let (store, origin) = KeyStore::open(dir.path(), None, 10, 4).unwrap();
        let AdminKeyOrigin::Generated(key) = &origin else {
            panic!("first start generates a key");
        };
        let key = key.clone();
        assert_eq!(store.authenticate(key.as_bytes()), Some(Principal::Admin));
        assert_eq!(store.authenticate(b"hra_wrong"), None);
        store.settle_admin_key(&origin).unwrap();
        let text = std::fs::read_to_string(dir.path().join("keys.json")).unwrap();
        assert!(!text.contains(&key), "the clear key is never stored");
        drop(store);
        let (store, origin) = KeyStore::open(dir.path(), None, 10, 4).unwrap();
        assert!(matches!(origin, AdminKeyOrigin::Stored));
        assert_eq!(store.authenticate(key.as_bytes()), Some(Principal::Admin));
    }

    #[test]
    fn a_configured_admin_key_forgets_the_generated_one() {
        let dir = tempfile::tempdir().unwrap();
        let (store, origin) = KeyStore::open(dir.path(), None, 10, 4).unwrap();
        store.settle_admin_key(&origin).unwrap();
        let AdminKeyOrigin::Generated(printed) = origin else {
            panic!("first start generates a key");
        };
        drop(store);
        let (store, origin) =
            KeyStore::open(dir.path(), Some("admin-key-0123456789"), 10, 4).unwrap();
        store.settle_admin_key(&origin).unwrap();
        assert_eq!(store.authenticate(printed.as_bytes()), None);
        drop(store);
        // Started again without it: a new key, the printed one still refused.
        let (store, origin) = KeyStore::open(dir.path(), None, 10, 4).unwrap();
        let AdminKeyOrigin::Generated(fresh) = origin else {
            panic!("a new key is generated, not the forgotten one restored");
        };
        assert_ne!(fresh, printed);
        assert_eq!(store.authenticate(printed.as_bytes()), None);
        assert_eq!(store.authenticate(fresh.as_bytes()), Some(Principal::Admin));
    }

    /// A start that fails before the key is settled (the port in use, the journal held
    /// by another server) leaves the file as it was: the next start generates a key
    /// and prints it, instead of trusting one nobody saw; and a configured key does not
    /// make a running server's file forget its stored one.
    #[test]
    fn nothing_is_written_before_the_admin_key_is_settled() {
        let dir = tempfile::tempdir().unwrap();
        let (store, origin) = KeyStore::open(dir.path(), None, 10, 4).unwrap();
        assert!(matches!(origin, AdminKeyOrigin::Generated(_)));
        drop(store);
        assert!(!dir.path().join("keys.json").exists());
        let (store, origin) = KeyStore::open(dir.path(), None, 10, 4).unwrap();
        let AdminKeyOrigin::Generated(key) = &origin else {
            panic!("a key nobody saw is not kept");
        };
        let key = key.clone();
        store.settle_admin_key(&origin).unwrap();
        drop(store);
        let (store, _) = KeyStore::open(dir.path(), Some("admin-key-0123456789"), 10, 4).unwrap();
        drop(store);
        let (store, origin) = KeyStore::open(dir.path(), None, 10, 4).unwrap();
        assert!(matches!(origin, AdminKeyOrigin::Stored));
        assert_eq!(store.authenticate(key.as_bytes()), Some(Principal::Admin));
    }

    #[test]
    fn configured_admin_key_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let (store, origin) =
            KeyStore::open(dir.path(), Some("admin-key-0123456789"), 10, 4).unwrap();
        assert!(matches!(origin, AdminKeyOrigin::Configured));
        assert_eq!(
            store.authenticate(b"admin-key-0123456789"),
            Some(Principal::Admin)
        );
    }

    #[test]
    fn tenant_keys_survive_reopen_and_revocation_is_immediate() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = KeyStore::open(dir.path(), None, 10, 2).unwrap();
        let acme = tenant("acme");
        let first = store.create_tenant(&acme, 1).unwrap();
        assert!(matches!(
            store.create_tenant(&acme, 2),
            Err(StoreError::Conflict(_))
        ));
        let second = store.mint_key(&acme, 3).unwrap();
        assert!(matches!(
            store.mint_key(&acme, 4),
            Err(StoreError::Limit(_))
        ));
        assert_eq!(
            store.authenticate(first.api_key.as_bytes()),
            Some(Principal::Tenant(acme.clone()))
        );
        drop(store);
        let (store, _) = KeyStore::open(dir.path(), None, 10, 2).unwrap();
        assert_eq!(
            store.authenticate(second.api_key.as_bytes()),
            Some(Principal::Tenant(acme.clone()))
        );
        store.revoke_key(&acme, &first.key_id).unwrap();
        assert_eq!(store.authenticate(first.api_key.as_bytes()), None);
        // A key with a valid id but a wrong secret is refused.
        let forged = format!("{}x", second.api_key);
        assert_eq!(store.authenticate(forged.as_bytes()), None);
        assert!(matches!(
            store.revoke_key(&acme, &first.key_id),
            Err(StoreError::NotFound(_))
        ));
        let (page, more) = store.tenants(None, 10);
        assert_eq!(page.len(), 1);
        assert!(!more);
        assert_eq!(page[0].keys.len(), 1);
    }

    #[test]
    fn concurrent_changes_are_all_durable() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = KeyStore::open(dir.path(), None, 100, 4).unwrap();
        let threads = 8;
        let per_thread = 4;
        let minted: Vec<(TenantId, MintedKey)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let store = &store;
                    scope.spawn(move || {
                        let mut minted = Vec::new();
                        for i in 0..per_thread {
                            let id = tenant(&format!("t{t}-{i}"));
                            minted.push((id.clone(), store.create_tenant(&id, 1).unwrap()));
                            minted.push((id.clone(), store.mint_key(&id, 2).unwrap()));
                            // Readers keep working while others write.
                            assert_eq!(
                                store.authenticate(minted[0].1.api_key.as_bytes()),
                                Some(Principal::Tenant(minted[0].0.clone()))
                            );
                        }
                        minted
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        drop(store);
        let (store, _) = KeyStore::open(dir.path(), None, 100, 4).unwrap();
        assert_eq!(store.tenants(None, 1000).0.len(), threads * per_thread);
        for (id, key) in &minted {
            assert_eq!(
                store.authenticate(key.api_key.as_bytes()),
                Some(Principal::Tenant(id.clone())),
                "{id}"
            );
        }
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = KeyStore::open(dir.path(), None, 10, 4).unwrap();
        let acme = tenant("acme");
        let first = store.create_tenant(&acme, 1).unwrap();
        // A directory where the temporary file goes makes every write fail.
        let temp = dir.path().join("keys.json.tmp");
        std::fs::create_dir(&temp).unwrap();
        assert!(matches!(
            store.create_tenant(&tenant("globex"), 2),
            Err(StoreError::Io { .. })
        ));
        assert!(matches!(
            store.mint_key(&acme, 2),
            Err(StoreError::Io { .. })
        ));
        assert!(matches!(
            store.revoke_key(&acme, &first.key_id),
            Err(StoreError::Io { .. })
        ));
        assert!(!store.has_tenant(&tenant("globex")));
        assert_eq!(store.tenants(None, 10).0[0].keys.len(), 1);
        assert_eq!(
            store.authenticate(first.api_key.as_bytes()),
            Some(Principal::Tenant(acme.clone()))
        );
        std::fs::remove_dir(&temp).unwrap();
        store.create_tenant(&tenant("globex"), 3).unwrap();
        drop(store);
        let (store, _) = KeyStore::open(dir.path(), None, 10, 4).unwrap();
        assert_eq!(store.tenants(None, 10).0.len(), 2);
    }

    #[test]
    fn tenant_cap_is_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = KeyStore::open(dir.path(), None, 1, 2).unwrap();
        store.create_tenant(&tenant("a"), 1).unwrap();
        assert!(matches!(
            store.create_tenant(&tenant("b"), 1),
            Err(StoreError::Limit(_))
        ));
    }

    #[test]
    fn a_deleted_tenant_loses_every_key_and_frees_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = KeyStore::open(dir.path(), None, 2, 4).unwrap();
        let (acme, globex) = (tenant("acme"), tenant("globex"));
        let first = store.create_tenant(&acme, 1).unwrap();
        let second = store.mint_key(&acme, 2).unwrap();
        let other = store.create_tenant(&globex, 3).unwrap();
        assert!(matches!(
            store.create_tenant(&tenant("initech"), 4),
            Err(StoreError::Limit(_))
        ));
        store.delete_tenant(&acme).unwrap();
        assert!(!store.has_tenant(&acme));
        assert_eq!(store.tenant(&acme), None);
        for key in [&first, &second] {
            assert_eq!(store.authenticate(key.api_key.as_bytes()), None);
        }
        assert_eq!(
            store.authenticate(other.api_key.as_bytes()),
            Some(Principal::Tenant(globex.clone()))
        );
        assert!(matches!(
            store.delete_tenant(&acme),
            Err(StoreError::NotFound(_))
        ));
        // Its place under the cap is free again.
        store.create_tenant(&tenant("initech"), 5).unwrap();
        drop(store);
        let (store, _) = KeyStore::open(dir.path(), None, 2, 4).unwrap();
        assert!(!store.has_tenant(&acme));
        assert_eq!(store.authenticate(first.api_key.as_bytes()), None);
        assert_eq!(
            store.tenant(&globex).map(|t| t.keys.len()),
            Some(1),
            "the other tenant keeps its key"
        );
        // A tenant of the same id made again gets new keys; the old ones stay dead.
        let again = store.create_tenant(&acme, 6);
        assert!(
            matches!(again, Err(StoreError::Limit(_))),
            "the cap still holds"
        );
        store.delete_tenant(&tenant("initech")).unwrap();
        let again = store.create_tenant(&acme, 7).unwrap();
        assert_eq!(store.authenticate(first.api_key.as_bytes()), None);
        assert_eq!(
            store.authenticate(again.api_key.as_bytes()),
            Some(Principal::Tenant(acme))
        );
    }

    #[test]
    fn a_damaged_store_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keys.json"), b"{not json").unwrap();
        let error = KeyStore::open(dir.path(), None, 1, 1).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
    }
}
