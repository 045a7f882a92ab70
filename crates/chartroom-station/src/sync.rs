//! Sync, the station's side (DESIGN §7): push the outbox, pull what changed, upload the audit
//! chain; settle conflicts as the clinician decides; the status the sync indicator shows; and the
//! retry schedule for a server that cannot be reached.

use std::time::Duration;

use chartroom_domain::{Allergy, Condition, MedicationRequest, Note, Observation, Patient, Timestamp};
use chartroom_protocol::{Change, ChangeOutcome, ChangeRecord, PullPage, PushBatch, PushResponse};
use chartroom_store::{
    OutboxEntry, PulledPatient, PulledRecord, Resolution, Settlement, StoreError, SyncStatus, Synced,
};
use rand::Rng;
use uuid::Uuid;

use crate::{StationError, UnlockedVault};

type Result<T> = std::result::Result<T, StationError>;

/// Called with the rows (charts and records) a pull has applied so far, after each page.
#[derive(Clone)]
pub struct Progress(pub std::sync::Arc<dyn Fn(usize) + Send + Sync>);

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

/// What a pull did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PullReport {
    pub charts: usize,
    pub changes: usize,
    /// Server versions of records with an unsynced local change: kept beside it, to be resolved.
    pub conflicts: usize,
    /// Patients that left this station's units and were crypto-shredded.
    pub shredded: usize,
    /// Patients that left while local changes to them were unsynced (kept, hidden, pushed).
    pub quarantined: usize,
    /// Whether the station now holds everything the server had (a first sync that was interrupted
    /// says so instead of passing a partial census off as whole).
    pub complete: bool,
}

/// What a push of the outbox did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PushReport {
    pub applied: usize,
    pub conflicts: usize,
    pub rejected: usize,
    /// Still waiting: another user's (pushed in their session), or queued behind a conflict or
    /// refusal of the same record.
    pub pending: usize,
    /// Quarantined patients whose changes all reached the server, now crypto-shredded.
    pub released: usize,
}

/// What a whole sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    pub push: PushReport,
    pub pull: PullReport,
    pub audit_uploaded: u64,
}

/// The sync indicator: the store's counts, and whether this session is online.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SyncIndicator {
    pub online: bool,
    #[serde(flatten)]
    pub status: SyncStatus,
}

/// Both versions of a record in conflict, for the clinician to choose.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ConflictView {
    pub change_id: Uuid,
    pub kind: String,
    pub mine: ChangeRecord,
    pub theirs: ChangeRecord,
}

/// Calls `$body` with `$t` bound to the record type an outbox `kind` names.
macro_rules! by_kind {
    ($kind:expr, $t:ident => $body:expr) => {{
        let kind: &str = $kind;
        if kind == <Observation as Synced>::KIND {
            type $t = Observation;
            $body
        } else if kind == <Note as Synced>::KIND {
            type $t = Note;
            $body
        } else if kind == <Allergy as Synced>::KIND {
            type $t = Allergy;
            $body
        } else if kind == <Condition as Synced>::KIND {
            type $t = Condition;
            $body
        } else if kind == <MedicationRequest as Synced>::KIND {
            type $t = MedicationRequest;
            $body
        } else if kind == <Patient as Synced>::KIND {
            type $t = Patient;
            $body
        } else {
            Err(StationError::Store(StoreError::Decode))
        }
    }};
}

/// Converts between stored records and their wire form.
trait Wire: Synced + Sized {
    fn wrap(self) -> ChangeRecord;
    fn unwrap(c: ChangeRecord) -> Option<Self>;
}

macro_rules! wire {
    ($t:ty, $variant:ident) => {
        impl Wire for $t {
            fn wrap(self) -> ChangeRecord {
                ChangeRecord::$variant(self)
            }
            fn unwrap(c: ChangeRecord) -> Option<Self> {
                match c {
                    ChangeRecord::$variant(r) => Some(r),
                    _ => None,
                }
            }
        }
    };
}

wire!(Observation, Observation);
wire!(Note, Note);
wire!(Allergy, Allergy);
wire!(Condition, Condition);
wire!(MedicationRequest, Medication);
wire!(Patient, Patient);

/// The vault as a sync reaches it: only to read or write the store, never across a network round
/// trip. A shell that shares the vault with other work (the desktop app) implements this over its
/// own lock, so a chart opened during a sync waits for one store step, not for the server; a vault
/// that syncs on its own goes through [`UnlockedVault::sync`] and friends.
///
/// Only one sync may run against a vault at a time (the caller's duty): two pulls interleaving
/// their pages would move the cursor back.
pub trait VaultAccess: Sync {
    /// Calls `f` with the vault, or fails (e.g. [`StationError::SessionEnded`]) when the session
    /// the sync started in is gone.
    fn with<R: Send>(
        &self,
        f: impl FnOnce(&mut UnlockedVault) -> Result<R> + Send,
    ) -> impl std::future::Future<Output = Result<R>> + Send;
}

/// A vault that nothing else uses while it syncs.
pub(crate) struct Exclusive<'a>(tokio::sync::Mutex<&'a mut UnlockedVault>);

impl<'a> Exclusive<'a> {
    pub(crate) fn new(vault: &'a mut UnlockedVault) -> Self {
        Exclusive(tokio::sync::Mutex::new(vault))
    }
}

impl VaultAccess for Exclusive<'_> {
    async fn with<R: Send>(&self, f: impl FnOnce(&mut UnlockedVault) -> Result<R> + Send) -> Result<R> {
        let mut vault = self.0.lock().await;
        f(&mut vault)
    }
}

/// Runs `call`, and once more after renewing the session's tokens if the access token had expired
/// (it lasts minutes; a refused renewal ends the online session).
macro_rules! renewing {
    ($access:expr, $client:expr, $now:expr, $call:expr) => {
        match $call.await {
            Err(StationError::Server(e)) if e.code() == Some("auth.invalid_token") => {
                refresh($access, $client, $now).await?;
                $call.await
            }
            other => other,
        }
    };
}

/// A whole sync after an online login: push the outbox, pull what changed, upload the audit chain;
/// then note the time. A retryable failure (server unreachable or busy) leaves everything
/// consistent for the next attempt.
pub async fn sync(
    access: &impl VaultAccess,
    client: &chartroom_client::ServerClient,
    now: Timestamp,
) -> Result<SyncReport> {
    renewing!(access, client, now, async {
        let push = push(access, client, now).await?;
        let pull = pull(access, client, now).await?;
        let audit_uploaded = upload_audit(access, client).await?;
        access.with(|v| Ok(v.store.set_last_sync(now)?)).await?;
        log::debug!(
            "sync: pushed {} applied, {} conflicts, {} refused, {} pending; pulled {} charts, {} records \
             ({} conflicts, {} shredded); {audit_uploaded} audit entries uploaded",
            push.applied,
            push.conflicts,
            push.rejected,
            push.pending,
            pull.charts,
            pull.changes,
            pull.conflicts,
            pull.shredded
        );
        Ok(SyncReport { push, pull, audit_uploaded })
    })
}

/// Renews the session's tokens with its refresh token. If the server refuses — the refresh token
/// expired or was used, the account was disabled, the device revoked — the session goes offline
/// (recorded); a revoked device also wipes itself.
pub async fn refresh(
    access: &impl VaultAccess,
    client: &chartroom_client::ServerClient,
    now: Timestamp,
) -> Result<()> {
    let (refresh, identity) = access.with(|v| v.refresh_request()).await?;
    let answer = client.refresh(&identity, &refresh).await;
    access.with(|v| v.refresh_answer(answer, now)).await
}

/// One push request: the changes read from the store and what settling the answer needs.
struct OutgoingPush {
    token: zeroize::Zeroizing<String>,
    identity: chartroom_client::DeviceIdentity,
    batch: PushBatch,
    change_ids: Vec<Uuid>,
    /// The outbox's last change when the records were read (see [`chartroom_store::Store::settle_changes`]).
    sent_upto: i64,
}

/// Pushes the outbox to the server (after an online login) and settles each change as the server
/// answers: accepted ones leave the outbox with their server version; conflicts and refusals stay,
/// marked with the reason. Later changes to a record go in later rounds, each on the version the
/// server gave the one before.
pub async fn push(
    access: &impl VaultAccess,
    client: &chartroom_client::ServerClient,
    now: Timestamp,
) -> Result<PushReport> {
    let mut report = PushReport::default();
    while let Some(out) = access.with(UnlockedVault::next_push).await? {
        let response: PushResponse =
            client.post_signed(&out.identity, &out.token, "/v1/sync/push", &out.batch).await?;
        access.with(|v| v.settle_push(&out, response, &mut report)).await?;
    }
    access.with(|v| v.finish_push(report, now)).await
}

/// Pulls what changed on the server since the last pull, page by page; each page is applied with
/// its cursor in one transaction, so an interrupted pull resumes where it stopped. The next page is
/// fetched (and decoded) while this one is applied.
pub async fn pull(
    access: &impl VaultAccess,
    client: &chartroom_client::ServerClient,
    now: Timestamp,
) -> Result<PullReport> {
    let (token, identity, cursor, mut limit) = access
        .with(|v| {
            let (token, identity) = v.online()?;
            Ok((token, identity, v.store.sync_state()?.0, v.store.pull_limit()?))
        })
        .await?;
    let identity = std::sync::Arc::new(identity);
    let fetch = |after: i64, limit: usize| {
        let (client, identity, token) = (client.clone(), identity.clone(), token.clone());
        tokio::spawn(async move {
            client
                .get::<PullPage>(&identity, &token, &format!("/v1/sync/pull?after={after}&limit={limit}"))
                .await
        })
    };
    let mut report = PullReport::default();
    let mut next = Some(fetch(cursor, limit));
    while let Some(pending) = next.take() {
        let fetched = pending.await.map_err(|_| StationError::ServerAnswer)?;
        let page = match fetched {
            Ok(page) => page,
            // Cut off: ask for smaller pages next time (a flaky link may never carry a big one).
            Err(e) if e.is_retryable() => {
                access.with(|v| Ok(v.store.set_pull_limit(limit / 2)?)).await?;
                return Err(e.into());
            }
            // The server never issued our cursor (it was restored from a backup): start a first
            // sync again rather than believe we are up to date.
            Err(e) if e.code() == Some("sync.cursor_ahead") => {
                let restarted = access
                    .with(|v| {
                        let ahead = v.store.sync_state()?.0 > 0;
                        if ahead {
                            v.store.restart_first_sync()?;
                        }
                        Ok(ahead)
                    })
                    .await?;
                if !restarted {
                    return Err(e.into());
                }
                next = Some(fetch(0, limit));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let grown = (limit < chartroom_store::MAX_PULL_LIMIT)
            .then(|| (limit * 2).min(chartroom_store::MAX_PULL_LIMIT));
        limit = grown.unwrap_or(limit);
        if page.more {
            next = Some(fetch(page.cursor, limit));
        }
        report.charts += page.patients.len();
        report.changes += page.records.len();
        report.complete = !page.more;
        let rows = report.charts + report.changes;
        let applied = access
            .with(|v| {
                if let Some(limit) = grown {
                    v.store.set_pull_limit(limit)?;
                }
                let pulled = v.unwrap_page(page)?;
                let applied = v.store.apply_pull(&v.actor(), pulled, now)?;
                if let Some(Progress(tell)) = &v.progress {
                    tell(rows);
                }
                Ok(applied)
            })
            .await?;
        report.conflicts += applied.conflicts;
        report.shredded += applied.shredded;
        report.quarantined += applied.quarantined;
        log::debug!("pull: page applied ({rows} rows so far, next page limit {limit})");
    }
    Ok(report)
}

/// Uploads this device's audit entries the server does not hold yet (in order, in batches); the
/// server verifies that they continue the chain it has. Returns how many it stored.
pub async fn upload_audit(access: &impl VaultAccess, client: &chartroom_client::ServerClient) -> Result<u64> {
    use chartroom_protocol::{AuditUpload, AuditUploadResponse, MAX_AUDIT_UPLOAD};
    let mut stored = 0;
    loop {
        let batch = access
            .with(|v| {
                let (token, identity) = v.online()?;
                let mut entries = v.store.audit_entries(v.store.audit_uploaded()?, MAX_AUDIT_UPLOAD)?;
                entries.truncate(fitting(&entries));
                Ok(entries.last().map(|e| e.seq).map(|last| (token, identity, entries, last)))
            })
            .await?;
        let Some((token, identity, entries, last)) = batch else { return Ok(stored) };
        let r: AuditUploadResponse =
            client.post_signed(&identity, &token, "/v1/audit/entries", &AuditUpload { entries }).await?;
        stored += r.stored;
        access.with(|v| Ok(v.store.set_audit_uploaded(last)?)).await?;
    }
}

impl UnlockedVault {
    /// A whole sync of a vault nothing else uses meanwhile (see [`sync()`]).
    pub async fn sync(
        &mut self,
        client: &chartroom_client::ServerClient,
        now: Timestamp,
    ) -> Result<SyncReport> {
        sync(&Exclusive::new(self), client, now).await
    }

    /// See [`push()`].
    pub async fn push_outbox(
        &mut self,
        client: &chartroom_client::ServerClient,
        now: Timestamp,
    ) -> Result<PushReport> {
        push(&Exclusive::new(self), client, now).await
    }

    /// See [`pull()`].
    pub async fn pull(
        &mut self,
        client: &chartroom_client::ServerClient,
        now: Timestamp,
    ) -> Result<PullReport> {
        pull(&Exclusive::new(self), client, now).await
    }

    /// See [`upload_audit()`].
    pub async fn upload_audit(&mut self, client: &chartroom_client::ServerClient) -> Result<u64> {
        upload_audit(&Exclusive::new(self), client).await
    }

    /// The next push request, read from the outbox (`None`: nothing left to send).
    fn next_push(&mut self) -> Result<Option<OutgoingPush>> {
        let (token, identity) = self.online()?;
        // Every change queued so far is in the records as they are read now (a push sends a
        // record's current state): an accepted change settles the author's earlier ones too.
        let sent_upto = self.store.outbox_seq()?;
        let mut batch: Vec<OutboxEntry> =
            self.store.sendable(self.user_id())?.into_iter().take(chartroom_protocol::MAX_PUSH).collect();
        if batch.is_empty() {
            return Ok(None);
        }
        let mut changes = Vec::with_capacity(batch.len());
        for e in &batch {
            let change = by_kind!(&e.kind, T => self.store.get::<T>(e.record_id).map(T::wrap).map_err(StationError::from))?;
            changes.push(Change { change_id: e.change_id.to_string(), base_version: e.base_version, change });
        }
        let fits = fitting(&changes);
        changes.truncate(fits);
        batch.truncate(fits);
        Ok(Some(OutgoingPush {
            token,
            identity,
            batch: PushBatch { changes },
            change_ids: batch.iter().map(|e| e.change_id).collect(),
            sent_upto,
        }))
    }

    /// Settles one push request's answer in the outbox.
    fn settle_push(
        &mut self,
        out: &OutgoingPush,
        response: PushResponse,
        report: &mut PushReport,
    ) -> Result<()> {
        let mut settled = Vec::with_capacity(out.change_ids.len());
        for result in response.results {
            let Ok(change_id) = result.change_id.parse::<Uuid>() else { continue };
            if !out.change_ids.contains(&change_id) {
                continue;
            }
            let settlement = match result.outcome {
                ChangeOutcome::Applied { version } | ChangeOutcome::Duplicate { version } => {
                    report.applied += 1;
                    Settlement::Accepted { version }
                }
                ChangeOutcome::Conflict { current_version } => {
                    report.conflicts += 1;
                    Settlement::Kept {
                        state: "conflict",
                        reason: format!(
                            "the server has version {current_version}: keep mine, take theirs or merge"
                        ),
                    }
                }
                ChangeOutcome::Rejected { code, message } => {
                    report.rejected += 1;
                    Settlement::Kept { state: "rejected", reason: format!("{code}: {message}") }
                }
            };
            settled.push((change_id, settlement));
        }
        self.store.settle_changes(&settled, out.sent_upto)?;
        if settled.is_empty() {
            // The server answered for none of them: try again at the next sync, not in a loop.
            return Err(StationError::ServerAnswer);
        }
        Ok(())
    }

    /// A pulled page in the store's terms: the patients' keys unwrapped with this session's sync
    /// key (a key that does not open is a server answer we cannot use).
    fn unwrap_page(&self, page: PullPage) -> Result<chartroom_store::PulledPage> {
        let sync_key = self.sync_key.as_ref().ok_or(StationError::Offline)?;
        let mut keys = Vec::with_capacity(page.keys.len());
        for k in page.keys {
            let key = sync_key
                .unwrap_patient_key(k.patient_id, &k.wrapped)
                .map_err(|_| StationError::ServerAnswer)?;
            keys.push((k.patient_id, Box::new(key)));
        }
        Ok(chartroom_store::PulledPage {
            patients: page
                .patients
                .into_iter()
                .map(|p| PulledPatient {
                    id: p.id,
                    unit: p.unit,
                    bed: p.bed,
                    version: p.version,
                    body: p.body,
                })
                .collect(),
            records: page
                .records
                .into_iter()
                .map(|r| PulledRecord {
                    id: r.id,
                    patient_id: r.patient_id,
                    kind: r.kind,
                    sort_key: r.sort_key,
                    version: r.version,
                    body: r.body,
                })
                .collect(),
            keys,
            left: page.left,
            cursor: page.cursor,
            complete: !page.more,
        })
    }

    /// After the last push request: what is still pending, quarantined patients released, and the
    /// push recorded in the audit trail.
    fn finish_push(&mut self, mut report: PushReport, now: Timestamp) -> Result<PushReport> {
        report.pending = usize::try_from(self.store.sync_status()?.pending).unwrap_or(usize::MAX);
        let actor = self.actor();
        report.released = self.store.release_quarantine(&actor, now)?;
        let mut e = chartroom_audit::Event::new(now, "sync_push", "outbox", "ok");
        e.resource_id = Some(format!(
            "{} applied, {} conflicts, {} rejected, {} pending",
            report.applied, report.conflicts, report.rejected, report.pending
        ));
        self.store.record(&actor, e)?;
        Ok(report)
    }

    /// Reports the progress of the pulls this session runs (`None`: stop reporting).
    pub fn set_progress(&mut self, progress: Option<Progress>) {
        self.progress = progress;
    }

    /// What the sync indicator shows.
    pub fn sync_indicator(&self) -> Result<SyncIndicator> {
        Ok(SyncIndicator { online: self.online().is_ok(), status: self.store.sync_status()? })
    }

    /// Both versions of the record a conflicting change is about (reading them is audited as a
    /// chart read would be).
    pub fn conflict(&mut self, change_id: Uuid, now: Timestamp) -> Result<ConflictView> {
        let entry = self.outbox_entry(change_id)?;
        let (mine, theirs) = by_kind!(&entry.kind, T => {
            match self.store.conflict::<T>(entry.record_id)? {
                Some((mine, theirs)) => Ok((mine.wrap(), theirs.wrap())),
                None => Err(StationError::Store(StoreError::NoConflict)),
            }
        })?;
        let actor = self.actor();
        let mut e = chartroom_audit::Event::new(now, "view", "conflict", "ok");
        e.resource_id = Some(entry.record_id.to_string());
        e.patient_ids = vec![entry.patient_id];
        self.store.record(&actor, e)?;
        Ok(ConflictView { change_id, kind: entry.kind, mine, theirs })
    }

    /// Settles the conflict a change ran into: keep mine (pushed again on top of the server's
    /// version), take theirs (the local change is dropped, audited), or — for a note — merge, with
    /// the text the clinician wrote from both. Returns the id of the change queued, if any.
    pub fn resolve(
        &mut self,
        change_id: Uuid,
        how: Resolution,
        merged_text: Option<&str>,
        now: Timestamp,
    ) -> Result<Option<Uuid>> {
        let entry = self.outbox_entry(change_id)?;
        if entry.user_id.is_some_and(|u| u != self.user_id()) {
            return Err(StationError::NotAuthor);
        }
        let unit = self.store.patient_unit(entry.patient_id)?;
        by_kind!(&entry.kind, T => {
            let (mine, _) = self.store.conflict::<T>(entry.record_id)?.ok_or(StoreError::NoConflict)?;
            let mine = mine.wrap();
            self.permit(mine.action(), &unit, entry.patient_id, now)?;
            let chosen = match (how, merged_text) {
                (Resolution::Merge, Some(text)) => {
                    Some(T::unwrap(mine.with_note_text(text)?).ok_or(StationError::MergeTextOnly)?)
                }
                (Resolution::Merge, None) => return Err(StationError::MergeTextOnly),
                _ => None,
            };
            let actor = self.actor();
            Ok(self.store.resolve_conflict::<T>(&actor, entry.record_id, how, chosen, now)?)
        })
    }

    /// Discards one of this user's changes the server refused for good (a new record it never
    /// had), audited; a quarantined patient with nothing else unsynced is then crypto-shredded.
    pub fn discard(&mut self, change_id: Uuid, now: Timestamp) -> Result<()> {
        let entry = self.outbox_entry(change_id)?;
        if entry.user_id.is_some_and(|u| u != self.user_id()) {
            return Err(StationError::NotAuthor);
        }
        let actor = self.actor();
        self.store.discard_change(&actor, change_id, now)?;
        self.store.release_quarantine(&actor, now)?;
        Ok(())
    }

    fn outbox_entry(&self, change_id: Uuid) -> Result<OutboxEntry> {
        self.store
            .outbox()?
            .into_iter()
            .find(|e| e.change_id == change_id)
            .ok_or(StationError::ChangeNotFound)
    }
}

/// How many of `items`, from the first, fit in one request body (at least one: a single change or
/// audit entry is always far below the limit).
fn fitting<T: serde::Serialize>(items: &[T]) -> usize {
    let budget = chartroom_protocol::MAX_REQUEST_BYTES * 3 / 4;
    let mut used = 0;
    for (i, item) in items.iter().enumerate() {
        used += serde_json::to_vec(item).map_or(budget, |v| v.len() + 1);
        if used > budget {
            return i.max(1);
        }
    }
    items.len()
}

/// Merging is for text: only a note has any.
trait NoteText: Sized {
    fn with_note_text(self, text: &str) -> Result<Self>;
}

impl NoteText for ChangeRecord {
    fn with_note_text(self, text: &str) -> Result<Self> {
        match self {
            ChangeRecord::Note(n) => Ok(ChangeRecord::Note(Note { text: text.trim_end().to_owned(), ..n })),
            _ => Err(StationError::MergeTextOnly),
        }
    }
}

/// When to try again after a retryable failure: exponential backoff with full jitter (a random
/// delay between zero and `base × 2^attempt`, capped), so that 200 stations coming back after an
/// outage do not all knock at once.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff { base, cap, attempt: 0 }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.base.saturating_mul(1u32 << self.attempt.min(20)).min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rng.gen_range(0..=ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn batches_stay_below_the_request_limit() {
        let items = vec!["x".repeat(100_000); 20];
        let n = fitting(&items);
        assert!((1..20).contains(&n), "{n}");
        let size = serde_json::to_vec(&items[..n]).map(|v| v.len()).unwrap_or(usize::MAX);
        assert!(size <= chartroom_protocol::MAX_REQUEST_BYTES, "{size}");
        assert_eq!(fitting(&items[..3]), 3);
        assert_eq!(fitting(&["y".repeat(2_000_000)]), 1, "one item always goes");
    }

    #[test]
    fn backoff_grows_exponentially_within_the_cap_and_jitters() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let (base, cap) = (Duration::from_millis(100), Duration::from_secs(2));
        let mut ceilings = Vec::new();
        for attempt in 0..8u32 {
            // Many draws at the same attempt: all within the ceiling, and spread across it.
            let ceiling = base.saturating_mul(1 << attempt).min(cap);
            let draws: Vec<Duration> =
                (0..200).map(|_| Backoff { base, cap, attempt }.next_delay(&mut rng)).collect();
            assert!(draws.iter().all(|d| *d <= ceiling), "attempt {attempt}");
            let max = draws.iter().max().copied().unwrap_or_default();
            let min = draws.iter().min().copied().unwrap_or_default();
            assert!(max > ceiling * 3 / 4 && min < ceiling / 4, "attempt {attempt}: {min:?}..{max:?}");
            ceilings.push(max);
        }
        assert!(ceilings.windows(2).take(4).all(|w| w[1] > w[0]), "grows: {ceilings:?}");
        assert!(ceilings.iter().all(|c| *c <= cap));
        // The attempt counter advances with each delay.
        let mut b = Backoff::new(base, cap);
        for _ in 0..40 {
            assert!(b.next_delay(&mut rng) <= cap);
        }
    }
}
