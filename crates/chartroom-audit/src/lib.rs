//! The tamper-evident audit trail (DESIGN §6): entries, their canonical encoding, hash chains per
//! device, and Ed25519-signed checkpoints.
//!
//! Each device (a station, or the server itself) keeps one chain: entry `n` names the hash of entry
//! `n − 1`, and its own hash is SHA-256 over a canonical, versioned binary encoding of every field.
//! Editing, deleting or reordering an entry breaks the chain at that point. An insider who rewrites
//! a whole chain consistently is caught by checkpoints: the count and head hash signed with a key
//! that is not kept in the database.
//!
//! Architecture invariant: pure logic — no IO, no clock (timestamps come in), no storage. The
//! encoding is frozen by golden tests: changing it is a new format version, never an edit.

#![forbid(unsafe_code)]

use chartroom_domain::Timestamp;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The version of the canonical entry encoding.
pub const ENTRY_FORMAT: u8 = 1;

/// A SHA-256 hash; hex on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Digest32(pub [u8; 32]);

impl Digest32 {
    /// The hash before the first entry of every chain.
    pub const GENESIS: Digest32 = Digest32([0; 32]);

    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// On the wire a digest is 64 lower-case hex digits.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Digest32 {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new().schema_type(Type::String).pattern(Some("^[0-9a-f]{64}$")).into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Digest32 {}

impl std::fmt::Debug for Digest32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", &self.to_hex()[..12])
    }
}

impl From<Digest32> for String {
    fn from(d: Digest32) -> String {
        d.to_hex()
    }
}

impl TryFrom<String> for Digest32 {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        let bad = || "expected 64 hex digits".to_string();
        if s.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, pair) in s.as_bytes().chunks_exact(2).enumerate() {
            let hex = std::str::from_utf8(pair).map_err(|_| bad())?;
            out[i] = u8::from_str_radix(hex, 16).map_err(|_| bad())?;
        }
        Ok(Digest32(out))
    }
}

/// What an entry records, apart from its place in the chain.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    pub at: Timestamp,
    pub user_id: Option<Uuid>,
    /// Staff usernames are not PHI; kept so an auditor can read a trail without a user table.
    pub username: Option<String>,
    /// Where: the device's host name, or the client's IP address on the server.
    pub host: String,
    /// On the server's own chain: the enrolled device the request came from.
    pub origin_device: Option<Uuid>,
    pub app_version: String,
    /// `view`, `create`, `update`, `sign`, `login`, `login_failed`, `lock`, `unlock`, `break_glass`,
    /// `export`, `key_access`, `denied`, …
    pub action: String,
    /// `patient`, `census`, `observation`, `note`, `session`, `user`, `device`, …
    pub resource_type: String,
    pub resource_id: Option<String>,
    /// The patients the action touched or showed (a census entry lists every patient on screen).
    pub patient_ids: Vec<Uuid>,
    /// `ok` or a stable error code.
    pub outcome: String,
    /// The record before and after the change, sealed with the patient's key (PHI): the chain covers
    /// the ciphertext, so it verifies without any key. Base64 in JSON.
    #[serde(default, with = "sealed_base64")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Byte))]
    pub before: Option<Vec<u8>>,
    #[serde(default, with = "sealed_base64")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Byte))]
    pub after: Option<Vec<u8>>,
}

impl Event {
    /// An event with no user, patient, resource id or record states (set the fields that apply).
    pub fn new(at: Timestamp, action: &str, resource_type: &str, outcome: &str) -> Event {
        Event {
            at,
            user_id: None,
            username: None,
            host: String::new(),
            origin_device: None,
            app_version: env!("CARGO_PKG_VERSION").into(),
            action: action.into(),
            resource_type: resource_type.into(),
            resource_id: None,
            patient_ids: Vec::new(),
            outcome: outcome.into(),
            before: None,
            after: None,
        }
    }
}

/// One entry of a device's chain.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    pub id: Uuid,
    pub device_id: Uuid,
    /// 1, 2, 3 … without gaps, per device.
    pub seq: u64,
    pub prev_hash: Digest32,
    #[serde(flatten)]
    pub event: Event,
    pub hash: Digest32,
}

impl AuditEntry {
    /// The canonical encoding of every field but `hash`: a format byte, then each field in a fixed
    /// order, variable-length ones prefixed with their length (u32 BE), options with a presence byte.
    /// Nothing depends on a serializer's field order or whitespace.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let e = &self.event;
        let mut out = Vec::with_capacity(256);
        out.push(ENTRY_FORMAT);
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(self.device_id.as_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.prev_hash.0);
        out.extend_from_slice(&e.at.0.to_be_bytes());
        put_opt(&mut out, e.user_id.as_ref().map(|u| &u.as_bytes()[..]));
        put_opt(&mut out, e.username.as_deref().map(str::as_bytes));
        put(&mut out, e.host.as_bytes());
        put_opt(&mut out, e.origin_device.as_ref().map(|u| &u.as_bytes()[..]));
        put(&mut out, e.app_version.as_bytes());
        put(&mut out, e.action.as_bytes());
        put(&mut out, e.resource_type.as_bytes());
        put_opt(&mut out, e.resource_id.as_deref().map(str::as_bytes));
        out.extend_from_slice(&u32::try_from(e.patient_ids.len()).unwrap_or(u32::MAX).to_be_bytes());
        for p in &e.patient_ids {
            out.extend_from_slice(p.as_bytes());
        }
        put(&mut out, e.outcome.as_bytes());
        put_opt(&mut out, e.before.as_deref());
        put_opt(&mut out, e.after.as_deref());
        out
    }

    /// SHA-256 over a domain label and the canonical encoding.
    pub fn compute_hash(&self) -> Digest32 {
        hash_canonical(&self.canonical_bytes())
    }

    /// Decodes a canonical encoding (as stored) back into the entry it came from, with its claimed
    /// hash. Fails on anything that is not exactly one well-formed encoding.
    pub fn decode(canonical: &[u8], hash: Digest32) -> Result<AuditEntry, DecodeError> {
        decode::entry(canonical, hash).ok_or(DecodeError)
    }
}

/// A stored entry that is not a well-formed canonical encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the audit entry is not a well-formed encoding")]
pub struct DecodeError;

/// The hash of an entry from its canonical encoding.
pub fn hash_canonical(canonical: &[u8]) -> Digest32 {
    let mut h = Sha256::new();
    h.update(b"chartroom/audit-entry/v1\0");
    h.update(canonical);
    Digest32(h.finalize().into())
}

/// The chain fields of a canonical encoding — device, sequence number, previous hash — read at their
/// fixed offsets, so that verifying a chain needs no full decode.
pub fn chain_fields(canonical: &[u8]) -> Option<(Uuid, u64, Digest32)> {
    if canonical.len() < 73 || canonical[0] != ENTRY_FORMAT {
        return None;
    }
    let device = Uuid::from_bytes(canonical[17..33].try_into().ok()?);
    let seq = u64::from_be_bytes(canonical[33..41].try_into().ok()?);
    let prev = Digest32(canonical[41..73].try_into().ok()?);
    Some((device, seq, prev))
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn put_opt(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => out.push(0),
        Some(b) => {
            out.push(1);
            put(out, b);
        }
    }
}

/// Where a chain stands: the last sequence number and hash.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: Digest32,
}

impl ChainHead {
    /// The head of an empty chain.
    pub const GENESIS: ChainHead = ChainHead { seq: 0, hash: Digest32::GENESIS };

    /// The next entry of `device_id`'s chain; advances the head.
    pub fn append(&mut self, device_id: Uuid, id: Uuid, event: Event) -> AuditEntry {
        let mut entry = AuditEntry {
            id,
            device_id,
            seq: self.seq + 1,
            prev_hash: self.hash,
            event,
            hash: Digest32::GENESIS,
        };
        entry.hash = entry.compute_hash();
        *self = ChainHead { seq: entry.seq, hash: entry.hash };
        entry
    }
}

/// Why a chain does not verify, at which entry (0-based position in what was checked).
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ChainBreak {
    #[error("entry {position} (seq {seq}): its content does not match its hash (edited)")]
    Edited { position: u64, seq: u64 },
    #[error("entry {position}: expected seq {expected}, found {found} (an entry is missing, duplicated or out of order)")]
    Gap { position: u64, expected: u64, found: u64 },
    #[error(
        "entry {position} (seq {seq}): does not follow the entry before it (reordered, replaced or forked)"
    )]
    Unlinked { position: u64, seq: u64 },
    #[error("entry {position} (seq {seq}): belongs to another device's chain")]
    WrongDevice { position: u64, seq: u64 },
}

/// Checks that `entries` continue `device_id`'s chain from `from` (for example the genesis, or a
/// purge point). Returns the new head.
pub fn verify_chain<'a>(
    device_id: Uuid,
    from: ChainHead,
    entries: impl IntoIterator<Item = &'a AuditEntry>,
) -> Result<ChainHead, ChainBreak> {
    let mut head = from;
    for (position, e) in entries.into_iter().enumerate() {
        let position = position as u64;
        if e.device_id != device_id {
            return Err(ChainBreak::WrongDevice { position, seq: e.seq });
        }
        if e.seq != head.seq + 1 {
            return Err(ChainBreak::Gap { position, expected: head.seq + 1, found: e.seq });
        }
        if e.compute_hash() != e.hash {
            return Err(ChainBreak::Edited { position, seq: e.seq });
        }
        if e.prev_hash != head.hash {
            return Err(ChainBreak::Unlinked { position, seq: e.seq });
        }
        head = ChainHead { seq: e.seq, hash: e.hash };
    }
    Ok(head)
}

/// A signed statement: "the server's trail held `count` entries ending in `head`", chained to the
/// previous checkpoint so checkpoints cannot be dropped or reordered either.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    pub number: u64,
    pub count: u64,
    pub head: Digest32,
    pub at: Timestamp,
    pub prev: Digest32,
    #[serde(with = "signature_hex")]
    pub signature: [u8; 64],
}

impl Checkpoint {
    fn message(number: u64, count: u64, head: &Digest32, at: Timestamp, prev: &Digest32) -> Vec<u8> {
        let mut m = b"chartroom/audit-checkpoint/v1\0".to_vec();
        m.extend_from_slice(&number.to_be_bytes());
        m.extend_from_slice(&count.to_be_bytes());
        m.extend_from_slice(&head.0);
        m.extend_from_slice(&at.0.to_be_bytes());
        m.extend_from_slice(&prev.0);
        m
    }

    /// Signs the next checkpoint after `prev` (or the first, with `None`).
    pub fn sign(
        key: &SigningKey,
        prev: Option<&Checkpoint>,
        count: u64,
        head: Digest32,
        at: Timestamp,
    ) -> Checkpoint {
        match Checkpoint::sign_with(|m| Ok::<_, std::convert::Infallible>(key.sign(m)), prev, count, head, at)
        {
            Ok(c) => c,
            Err(never) => match never {},
        }
    }

    /// [`Checkpoint::sign`] with a signer that may fail (a key in an HSM).
    pub fn sign_with<E>(
        sign: impl FnOnce(&[u8]) -> Result<Signature, E>,
        prev: Option<&Checkpoint>,
        count: u64,
        head: Digest32,
        at: Timestamp,
    ) -> Result<Checkpoint, E> {
        let (number, prev_digest) = match prev {
            Some(p) => (p.number + 1, p.digest()),
            None => (1, Digest32::GENESIS),
        };
        let signature = sign(&Checkpoint::message(number, count, &head, at, &prev_digest))?.to_bytes();
        Ok(Checkpoint { number, count, head, at, prev: prev_digest, signature })
    }

    /// Whether the signature is valid for `key`.
    pub fn verify(&self, key: &VerifyingKey) -> bool {
        let m = Checkpoint::message(self.number, self.count, &self.head, self.at, &self.prev);
        key.verify(&m, &Signature::from_bytes(&self.signature)).is_ok()
    }

    /// What the next checkpoint names as its predecessor.
    pub fn digest(&self) -> Digest32 {
        let mut h = Sha256::new();
        h.update(Checkpoint::message(self.number, self.count, &self.head, self.at, &self.prev));
        h.update(self.signature);
        Digest32(h.finalize().into())
    }
}

/// Sealed record states as base64 in JSON (a quarter of the size of a list of numbers, which is
/// what entries stored before this encoding hold: still read).
mod sealed_base64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Base64(String),
        Numbers(Vec<u8>),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<Stored>::deserialize(d)? {
            None => Ok(None),
            Some(Stored::Numbers(b)) => Ok(Some(b)),
            Some(Stored::Base64(s)) => base64::engine::general_purpose::STANDARD
                .decode(s.as_bytes())
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

mod signature_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(sig: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&sig.iter().map(|b| format!("{b:02x}")).collect::<String>())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let s = String::deserialize(d)?;
        let bad = || serde::de::Error::custom("expected 128 hex digits");
        if s.len() != 128 {
            return Err(bad());
        }
        let mut out = [0u8; 64];
        for (i, pair) in s.as_bytes().chunks_exact(2).enumerate() {
            let hex = std::str::from_utf8(pair).map_err(|_| bad())?;
            out[i] = u8::from_str_radix(hex, 16).map_err(|_| bad())?;
        }
        Ok(out)
    }
}

/// The server's own chain over everything it stores, in arrival order: link `n` hashes link
/// `n − 1` with the stored entry's hash, so reordering or dropping stored entries (of any device)
/// breaks it too.
pub fn server_link(prev: &Digest32, server_seq: u64, entry_hash: &Digest32) -> Digest32 {
    let mut h = Sha256::new();
    h.update(b"chartroom/audit-server-link/v1\0");
    h.update(prev.0);
    h.update(server_seq.to_be_bytes());
    h.update(entry_hash.0);
    Digest32(h.finalize().into())
}

mod decode;

#[cfg(test)]
mod tests;
