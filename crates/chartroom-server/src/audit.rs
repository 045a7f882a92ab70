//! The server's audit trail: recording its own events, signed checkpoints, full verification and
//! export (DESIGN §6). The chain rules themselves live in `chartroom-audit`.
//!
//! Checkpoints are signed with `keys/signing.key`, which is not in the database: an insider who
//! rewrites stored entries and recomputes every hash still cannot produce matching signatures.
//! Entries appended after the last checkpoint are protected by the chains only; checkpoints are
//! written every [`CHECKPOINT_EVERY`] entries or [`CHECKPOINT_INTERVAL`], whichever comes first.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use chartroom_audit::{chain_fields, hash_canonical, server_link, ChainHead, Checkpoint, Digest32, Event};
use chartroom_domain::Timestamp;
use ed25519_dalek::{SigningKey, VerifyingKey};
use uuid::Uuid;

use crate::auth::Origin;
use crate::storage::{RawEntry, Storage, StoredEntry};
use crate::ServerError;

/// A checkpoint is due after this many new entries …
pub const CHECKPOINT_EVERY: u64 = 1000;
/// … or this long after the previous one (if anything was appended).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// An event of the server's own chain, seen from `origin`.
pub fn event(now: Timestamp, action: &str, resource_type: &str, outcome: &str, origin: &Origin) -> Event {
    let mut e = Event::new(now, action, resource_type, outcome);
    e.host = origin.remote.clone().unwrap_or_else(|| "server".into());
    e
}

/// Records an administrative action taken with the command line (who: the operating-system
/// account that ran it; where: this host).
pub fn admin_action(
    storage: &dyn Storage,
    action: &str,
    resource_type: &str,
    resource_id: &str,
    now: Timestamp,
) -> Result<(), ServerError> {
    let mut e = Event::new(now, action, resource_type, "ok");
    let os_user =
        std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).or_else(|_| std::env::var("LOGNAME"));
    e.username = Some(format!("os:{}", os_user.unwrap_or_else(|_| "unknown".into())));
    e.host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "admin-cli".into());
    e.resource_id = Some(resource_id.to_owned());
    storage.append_events(&[e])
}

/// The key that signs audit checkpoints: a seed in `keys/signing.key`, or an Ed25519 key pair in
/// an HSM (`init --signing-key pkcs11:…`), whose every signature is recorded in the trail.
pub enum CheckpointKey {
    Local(SigningKey),
    Hsm { key: crate::hsm::HsmKey, public: VerifyingKey },
}

impl std::fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckpointKey::Local(_) => f.write_str("CheckpointKey::Local(***)"),
            CheckpointKey::Hsm { key, .. } => write!(f, "CheckpointKey::Hsm({key:?})"),
        }
    }
}

impl From<SigningKey> for CheckpointKey {
    fn from(key: SigningKey) -> Self {
        CheckpointKey::Local(key)
    }
}

impl CheckpointKey {
    pub fn verifying_key(&self) -> VerifyingKey {
        match self {
            CheckpointKey::Local(k) => k.verifying_key(),
            CheckpointKey::Hsm { public, .. } => *public,
        }
    }

    /// Records in the trail that the HSM key is about to sign (`purpose`), so that what it signs
    /// covers the record; says whether it appended anything (nothing for a local key).
    fn record_use(&self, storage: &dyn Storage, purpose: &str) -> Result<bool, ServerError> {
        match self {
            CheckpointKey::Local(_) => Ok(false),
            CheckpointKey::Hsm { key, .. } => {
                storage.append_events(&[crate::hsm::use_event(key.label(), purpose)])?;
                Ok(true)
            }
        }
    }

    /// Signs `message` (the purge base).
    fn sign_message(&self, message: &[u8]) -> Result<ed25519_dalek::Signature, ServerError> {
        match self {
            CheckpointKey::Local(k) => Ok(ed25519_dalek::Signer::sign(k, message)),
            CheckpointKey::Hsm { key, .. } => key.sign(message),
        }
    }

    fn sign(
        &self,
        prev: Option<&Checkpoint>,
        count: u64,
        head: Digest32,
        at: Timestamp,
    ) -> Result<Checkpoint, ServerError> {
        match self {
            CheckpointKey::Local(k) => Ok(Checkpoint::sign(k, prev, count, head, at)),
            CheckpointKey::Hsm { key, .. } => Checkpoint::sign_with(|m| key.sign(m), prev, count, head, at),
        }
    }
}

/// Signs a checkpoint over the current trail if one is due; returns it.
pub fn checkpoint_if_due(
    storage: &dyn Storage,
    key: &CheckpointKey,
    now: Timestamp,
) -> Result<Option<Checkpoint>, ServerError> {
    let (count, head) = storage.audit_head()?;
    let last = storage.checkpoints()?.pop();
    let due = match &last {
        None => count > 0,
        Some(c) => {
            count > c.count && (count - c.count >= CHECKPOINT_EVERY || now.since(c.at) >= CHECKPOINT_INTERVAL)
        }
    };
    if !due {
        return Ok(None);
    }
    // An HSM signature is a key use: recorded first, so that this checkpoint covers it.
    let (count, head) =
        if key.record_use(storage, "sign audit checkpoint")? { storage.audit_head()? } else { (count, head) };
    let checkpoint = key.sign(last.as_ref(), count, head, now)?;
    Ok(storage.add_checkpoint(&checkpoint)?.then_some(checkpoint))
}

/// Puts the HSM key uses made since the last call into the trail.
pub fn record_hsm_uses(storage: &dyn Storage) -> Result<(), ServerError> {
    let uses = crate::hsm::take_uses();
    if uses.is_empty() {
        return Ok(());
    }
    storage.append_events(&uses)
}

/// What a clean verification covered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub entries: u64,
    pub devices: usize,
    pub checkpoints: usize,
}

/// The first problem `audit verify` found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("audit FAILED at stored entry {position}: {problem}")]
pub struct AuditProblem {
    /// The server sequence number (1-based) of the first bad stored entry, or the entry a checkpoint
    /// names.
    pub position: u64,
    pub problem: String,
}

/// Re-verifies everything: every device chain, the server chain over all stored entries, and every
/// checkpoint's signature, chaining, and agreement with the stored entries. After a retention purge
/// it starts from the purge base, which a signed checkpoint must anchor.
pub fn verify(
    storage: &dyn Storage,
    key: &VerifyingKey,
) -> Result<Result<Verified, AuditProblem>, ServerError> {
    let checkpoints = storage.checkpoints()?;
    let base = storage.audit_base()?;
    let start = base.as_ref().map_or(0, |b| b.server_seq);
    let mut due: HashMap<u64, &Checkpoint> =
        checkpoints.iter().filter(|c| c.count > start).map(|c| (c.count, c)).collect();
    let mut prev_digest = Digest32::GENESIS;
    for (i, c) in checkpoints.iter().enumerate() {
        let number = i as u64 + 1;
        if c.number != number || c.prev != prev_digest || !c.verify(key) {
            return Ok(Err(AuditProblem {
                position: c.count,
                problem: format!("checkpoint {number} is forged, altered or out of sequence"),
            }));
        }
        prev_digest = c.digest();
    }

    let mut heads: HashMap<Uuid, ChainHead> = HashMap::new();
    let mut server = ChainHead::GENESIS;
    if let Some(b) = &base {
        let anchored = checkpoints.iter().find(|c| c.number == b.checkpoint).is_some_and(|c| {
            c.count == b.server_seq
                && c.head == b.server_hash
                && b.purged_before.0 <= c.at.0.saturating_sub(retention_ms(MIN_RETENTION_DAYS))
        });
        let signed = crate::hex::decode::<64>(&b.signature).is_some_and(|sig| {
            key.verify_strict(&base_message(b), &ed25519_dalek::Signature::from_bytes(&sig)).is_ok()
        });
        if !anchored || !signed {
            return Ok(Err(AuditProblem {
                position: b.server_seq,
                problem: "the purge base does not match the signed checkpoint it names".into(),
            }));
        }
        server = ChainHead { seq: b.server_seq, hash: b.server_hash };
        heads.extend(b.device_heads.iter().copied());
    }
    let mut after = start;
    loop {
        // Verification reads the stored bytes: the hash covers exactly them, and the chain fields sit
        // at fixed offsets, so no entry needs decoding.
        let page = storage.audit_raw_page(after, 10_000)?;
        let Some(last) = page.last() else { break };
        after = last.server_seq;
        for raw in &page {
            if let Err(problem) = check_one(raw, &mut server, &mut heads) {
                return Ok(Err(AuditProblem { position: server.seq + 1, problem }));
            }
            if let Some(c) = due.remove(&server.seq) {
                if c.head != server.hash {
                    return Ok(Err(AuditProblem {
                        position: server.seq,
                        problem: format!(
                            "the entries up to here differ from what checkpoint {} signed",
                            c.number
                        ),
                    }));
                }
            }
        }
    }
    if let Some(c) = due.values().min_by_key(|c| c.count) {
        return Ok(Err(AuditProblem {
            position: server.seq + 1,
            problem: format!(
                "checkpoint {} covers {} entries but only {} are stored (entries were removed)",
                c.number, c.count, server.seq
            ),
        }));
    }
    Ok(Ok(Verified { entries: server.seq - start, devices: heads.len(), checkpoints: checkpoints.len() }))
}

/// The shortest retention allowed, and the default: six years (HIPAA, 45 CFR 164.316(b)(2)).
pub const MIN_RETENTION_DAYS: u64 = 6 * 365 + 2;

fn retention_ms(days: u64) -> i64 {
    i64::try_from(days.saturating_mul(86_400_000)).unwrap_or(i64::MAX)
}

/// What the purge command signs: the whole base, so that a base written by anyone else (to hide a
/// deleted prefix behind an existing checkpoint) does not verify.
fn base_message(b: &crate::storage::AuditBase) -> Vec<u8> {
    let mut m = b"chartroom/audit-purge-base/v1\0".to_vec();
    m.extend_from_slice(&b.server_seq.to_be_bytes());
    m.extend_from_slice(&b.server_hash.0);
    m.extend_from_slice(&u64::try_from(b.device_heads.len()).unwrap_or(u64::MAX).to_be_bytes());
    for (device, head) in &b.device_heads {
        m.extend_from_slice(device.as_bytes());
        m.extend_from_slice(&head.seq.to_be_bytes());
        m.extend_from_slice(&head.hash.0);
    }
    m.extend_from_slice(&b.checkpoint.to_be_bytes());
    m.extend_from_slice(&b.purged_before.0.to_be_bytes());
    m
}

/// What a purge did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Purged {
    pub entries: u64,
    pub remaining: u64,
}

/// Deletes the oldest stored entries (the longest prefix, in server order, older than `before`),
/// refusing anything younger than the retention period. The trail must verify first; the purge
/// point is signed as a checkpoint and recorded as the base later verifications start from.
pub fn purge(
    storage: &dyn Storage,
    key: &CheckpointKey,
    before: Timestamp,
    retention_days: u64,
    now: Timestamp,
) -> Result<Purged, ServerError> {
    let retention = retention_days.max(MIN_RETENTION_DAYS);
    let oldest_allowed =
        Timestamp(now.0.saturating_sub(i64::try_from(retention * 86_400_000).unwrap_or(i64::MAX)));
    if before > oldest_allowed {
        return Err(ServerError::RetentionRefused(format!(
            "entries younger than {retention} days must be kept; --before must be on or before {oldest_allowed}"
        )));
    }
    if let Err(problem) = verify(storage, &key.verifying_key())? {
        return Err(ServerError::RetentionRefused(format!(
            "the trail does not verify ({problem}); nothing purged"
        )));
    }
    let previous = storage.audit_base()?;
    let mut heads: HashMap<Uuid, ChainHead> =
        previous.as_ref().map(|b| b.device_heads.iter().copied().collect()).unwrap_or_default();
    let mut server = previous
        .as_ref()
        .map_or(ChainHead::GENESIS, |b| ChainHead { seq: b.server_seq, hash: b.server_hash });
    let start = server.seq;
    let mut after = start;
    'scan: loop {
        let page = storage.audit_page(after, 10_000)?;
        let Some(last) = page.last() else { break };
        after = last.server_seq;
        for s in &page {
            if s.entry.event.at >= before {
                break 'scan;
            }
            heads.insert(s.entry.device_id, ChainHead { seq: s.entry.seq, hash: s.entry.hash });
            server = ChainHead { seq: s.server_seq, hash: s.server_hash };
        }
    }
    let (total, _) = storage.audit_head()?;
    if server.seq == start {
        return Ok(Purged { entries: 0, remaining: total - start });
    }
    let last = storage.checkpoints()?.pop();
    key.record_use(storage, "sign audit purge point")?;
    let checkpoint = key.sign(last.as_ref(), server.seq, server.hash, now)?;
    if !storage.add_checkpoint(&checkpoint)? {
        return Err(ServerError::RetentionRefused(
            "another process is writing checkpoints; try again".into(),
        ));
    }
    let mut device_heads: Vec<(Uuid, ChainHead)> = heads.into_iter().collect();
    device_heads.sort_by_key(|(d, _)| *d);
    let mut base = crate::storage::AuditBase {
        server_seq: server.seq,
        server_hash: server.hash,
        device_heads,
        checkpoint: checkpoint.number,
        purged_before: before,
        signature: String::new(),
    };
    base.signature = crate::hex::encode(&key.sign_message(&base_message(&base))?.to_bytes());
    let entries = storage.purge_audit(&base)?;
    let mut e = event(now, "audit_purge", "audit", "ok", &Origin::default());
    e.resource_id = Some(format!("{entries} entries before {before}"));
    storage.append_events(&[e])?;
    Ok(Purged { entries, remaining: total - server.seq + 1 })
}

/// Checks one stored entry against its device chain and the server chain.
fn check_one(
    raw: &RawEntry,
    server: &mut ChainHead,
    heads: &mut HashMap<Uuid, ChainHead>,
) -> Result<(), String> {
    let expected = server.seq + 1;
    if raw.server_seq != expected {
        return Err(format!(
            "expected stored entry {expected}, found {} (entries removed or reordered)",
            raw.server_seq
        ));
    }
    let Some((device, seq, prev)) = chain_fields(&raw.canonical) else {
        return Err("the stored entry is unreadable".into());
    };
    let chain = if device == crate::storage::SERVER_CHAIN {
        "server".to_string()
    } else {
        format!("device {device}")
    };
    let head = heads.entry(device).or_insert(ChainHead::GENESIS);
    if seq != head.seq + 1 {
        return Err(format!(
            "{chain} chain: expected seq {}, found {seq} (an entry is missing, duplicated or out of order)",
            head.seq + 1
        ));
    }
    if hash_canonical(&raw.canonical) != raw.hash {
        return Err(format!("{chain} chain: entry seq {seq}: its content does not match its hash (edited)"));
    }
    if prev != head.hash {
        return Err(format!("{chain} chain: entry seq {seq} does not follow the entry before it (reordered, replaced or forked)"));
    }
    *head = ChainHead { seq, hash: raw.hash };
    let link = server_link(&server.hash, expected, &raw.hash);
    if link != raw.server_hash {
        return Err("the server chain does not link here (entries removed, inserted or reordered)".into());
    }
    *server = ChainHead { seq: expected, hash: link };
    Ok(())
}

/// Which entries an export includes.
#[derive(Clone, Debug, Default)]
pub struct ExportFilter {
    pub username: Option<String>,
    pub patient_id: Option<Uuid>,
    pub action: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

impl ExportFilter {
    pub fn matches(&self, e: &Event) -> bool {
        self.username
            .as_deref()
            .is_none_or(|u| e.username.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(u)))
            && self.patient_id.is_none_or(|p| e.patient_ids.contains(&p))
            && self.action.as_deref().is_none_or(|a| e.action == a)
            && self.since.is_none_or(|t| e.at >= t)
            && self.until.is_none_or(|t| e.at < t)
    }
}

/// The newest `limit` entries that match `filter`, newest first (a search for auditors; unlike
/// [`export`] it records nothing itself — the caller records the search).
pub fn search(
    storage: &dyn Storage,
    filter: &ExportFilter,
    limit: usize,
) -> Result<Vec<StoredEntry>, ServerError> {
    let limit = limit.max(1);
    let mut newest = std::collections::VecDeque::with_capacity(limit.min(1024));
    let mut after = 0;
    loop {
        let page = storage.audit_page(after, 10_000)?;
        let Some(last) = page.last() else { break };
        after = last.server_seq;
        for stored in page.into_iter().filter(|s| filter.matches(&s.entry.event)) {
            if newest.len() == limit {
                newest.pop_front();
            }
            newest.push_back(stored);
        }
    }
    Ok(newest.into_iter().rev().collect())
}

/// An entry as a search lists it: no patient named, no sealed state.
pub fn summary(s: &StoredEntry) -> chartroom_protocol::AuditEntrySummary {
    let e = &s.entry;
    let v = &e.event;
    // The server's own entries say which device the request came from.
    let device = match v.origin_device {
        Some(d) if e.device_id == crate::storage::SERVER_CHAIN => d,
        _ => e.device_id,
    };
    chartroom_protocol::AuditEntrySummary {
        seq: s.server_seq,
        id: e.id.to_string(),
        at: v.at.to_string(),
        username: v.username.clone(),
        device_id: device.to_string(),
        action: v.action.clone(),
        resource_type: v.resource_type.clone(),
        outcome: v.outcome.clone(),
        patients: u32::try_from(v.patient_ids.len()).unwrap_or(u32::MAX),
        break_glass: v.action == BREAK_GLASS_VIEW,
    }
}

/// The action of a read that only a break-glass grant allowed (server and stations alike).
pub const BREAK_GLASS_VIEW: &str = "break_glass_view";

/// Export formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    Jsonl,
    Csv,
}

/// Writes the matching entries (sealed before/after states stay sealed) and records the export
/// itself in the trail. Returns how many were written.
pub fn export(
    storage: &dyn Storage,
    filter: &ExportFilter,
    format: ExportFormat,
    out: &mut dyn Write,
    now: Timestamp,
) -> Result<u64, ServerError> {
    if format == ExportFormat::Csv {
        writeln!(out, "server_seq,at,device_id,seq,user_id,username,host,origin_device,action,resource_type,resource_id,patient_ids,outcome,hash")?;
    }
    let mut n = 0;
    let mut after = 0;
    loop {
        let page = storage.audit_page(after, 10_000)?;
        let Some(last) = page.last() else { break };
        after = last.server_seq;
        for stored in page.iter().filter(|s| filter.matches(&s.entry.event)) {
            match format {
                ExportFormat::Jsonl => {
                    let line = serde_json::to_string(&stored.entry)
                        .map_err(|_| ServerError::Internal("export encoding"))?;
                    writeln!(out, "{line}")?;
                }
                ExportFormat::Csv => writeln!(out, "{}", csv_row(stored))?,
            }
            n += 1;
        }
    }
    let mut e = event(now, "export", "audit", "ok", &Origin::default());
    e.resource_id = Some(format!("{n} entries"));
    e.patient_ids = filter.patient_id.into_iter().collect();
    storage.append_events(&[e])?;
    Ok(n)
}

fn csv_row(s: &StoredEntry) -> String {
    let e = &s.entry;
    let v = &e.event;
    let opt = |o: Option<String>| o.unwrap_or_default();
    let fields = [
        s.server_seq.to_string(),
        v.at.0.to_string(),
        e.device_id.to_string(),
        e.seq.to_string(),
        opt(v.user_id.map(|u| u.to_string())),
        opt(v.username.clone()),
        v.host.clone(),
        opt(v.origin_device.map(|u| u.to_string())),
        v.action.clone(),
        v.resource_type.clone(),
        opt(v.resource_id.clone()),
        v.patient_ids.iter().map(Uuid::to_string).collect::<Vec<_>>().join(" "),
        v.outcome.clone(),
        e.hash.to_hex(),
    ];
    fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",")
}

/// RFC 4180 quoting; a leading `=`, `+`, `-` or `@` is prefixed with `'` so a spreadsheet never
/// runs a cell as a formula.
fn csv_field(f: &str) -> String {
    let f = if f.starts_with(['=', '+', '-', '@']) { format!("'{f}") } else { f.to_string() };
    if f.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f
    }
}
