//! Oversight and the clinical features around it, end to end on a real server over pinned TLS with
//! real SQLCipher stations: an auditor's login on a station and the trail searched, verified and
//! reviewed from there; break-glass by MRN online (server copy and shared-ward copy) and offline;
//! the notes lifecycle (drafts private to their author, addenda, entered-in-error accepted by the
//! server exactly as allowed); and each user's own patient list.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use chartroom_client::{DeviceIdentity, ServerClient};
use chartroom_crypto::Password;
use chartroom_domain::{Chart, DeviceProfile, NoteStatus, Role};
use chartroom_protocol::{AuditQuery, BreakGlassReason};
use chartroom_server::storage::{RecordKind, Storage};
use chartroom_server::{init, start, wall_now, DataDir, InitOptions, RunningServer};
use chartroom_station::{DeviceSecretStore, LockedVault, Login, Profile, UnlockedVault};
use uuid::Uuid;

use chartroom_tests::keystore;

/// Each user's password (never containing the username, which the server refuses).
fn secret(user: &str) -> String {
    let n: usize = user.bytes().map(usize::from).sum();
    format!("correct-horse-{n}-staple")
}

fn password(user: &str) -> Password {
    Password::new(secret(user))
}

const USERS: [(&str, Role, &[&str]); 6] = [
    ("kim.rn", Role::Nurse, &["ICU"]),
    ("ana.rn", Role::Nurse, &["ICU"]),
    ("lee.md", Role::Physician, &["ICU"]),
    ("sam.audit", Role::Auditor, &["*"]),
    ("root.admin", Role::Admin, &[]),
    ("bob.billing", Role::Billing, &["ICU"]),
];

struct Env {
    _tmp: tempfile::TempDir,
    root: std::path::PathBuf,
    fingerprint: String,
    storage: std::sync::Arc<dyn Storage>,
    keys: chartroom_server::phi::RecordKeys,
    client: ServerClient,
    server: Option<RunningServer>,
    charts: Vec<Chart>,
    keystore: Arc<dyn DeviceSecretStore>,
    devices: Vec<Uuid>,
}

impl Env {
    async fn new() -> Env {
        Env::with_clock(None, None).await
    }

    /// A server on an injected clock (tests of token expiry), on the embedded database or (with a
    /// URL) PostgreSQL.
    async fn with_clock(
        clock: Option<Arc<chartroom_domain::clock::ManualClock>>,
        database_url: Option<String>,
    ) -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        let dir = DataDir::new(root.join("server"));
        let report = init(&dir, &InitOptions { database_url, ..InitOptions::default() }).unwrap();
        let storage = dir.open_storage().unwrap();
        for (name, role, units) in USERS {
            let units = units.iter().map(|u| u.to_string()).collect();
            chartroom_server::users::add_user(&*storage, name, role, units, &password(name), wall_now())
                .unwrap();
        }
        let config = chartroom_synth::SynthConfig::new(17, wall_now());
        let charts: Vec<Chart> = (0..8).map(|i| chartroom_synth::patient(&config, i)).collect();
        let keys = dir.record_keys().unwrap();
        chartroom_server::records::load_charts(&*storage, &keys, &charts).unwrap();
        let listen = "127.0.0.1:0".parse().unwrap();
        let server = match clock {
            Some(clock) => chartroom_server::start_with_clock(&dir, listen, clock).await.unwrap(),
            None => start(&dir, listen).await.unwrap(),
        };
        let url = format!("https://localhost:{}", server.addr.port());
        let client = ServerClient::new(&url, &report.fingerprint).unwrap();
        Env {
            _tmp: tmp,
            root,
            fingerprint: report.fingerprint.clone(),
            storage,
            keys,
            client,
            server: Some(server),
            charts,
            keystore: keystore(),
            devices: Vec::new(),
        }
    }

    fn on(&self, unit: &str) -> Vec<&Chart> {
        self.charts.iter().filter(|c| c.patient.unit == unit).collect()
    }

    async fn station(&mut self, name: &str, units: &[&str]) -> LockedVault {
        let token = chartroom_server::devices::issue_token(
            &*self.storage,
            name,
            DeviceProfile::Station,
            units.iter().map(|u| u.to_string()).collect(),
            Duration::from_secs(600),
            wall_now(),
        )
        .unwrap();
        let locked = LockedVault::enroll(
            Profile::new(self.root.join(name)),
            self.keystore.clone(),
            &self.client,
            &self.fingerprint,
            &token,
            wall_now(),
        )
        .await
        .unwrap();
        self.devices.push(locked.device_id());
        locked
    }

    /// A bare device (no station), for calls a station would never make.
    async fn raw_device(&self, name: &str) -> DeviceIdentity {
        let token = chartroom_server::devices::issue_token(
            &*self.storage,
            name,
            DeviceProfile::Laptop,
            vec![],
            Duration::from_secs(600),
            wall_now(),
        )
        .unwrap();
        let seed = [7u8; 32];
        let probe = DeviceIdentity::new(String::new(), &seed);
        let enrolled = self.client.enroll(&token, &probe.public_key_hex()).await.unwrap();
        DeviceIdentity::new(enrolled.device_id, &seed)
    }

    async fn clinical(&self, station: &LockedVault, user: &str) -> UnlockedVault {
        match station.login(&self.client, user, &password(user), wall_now()).await.unwrap() {
            Login::Clinical(v) => v,
            Login::Oversight(s) => panic!("{user} got an oversight session: {s:?}"),
        }
    }

    /// The server's chart of a patient (all records, opened).
    fn server_chart(&self, id: Uuid) -> Chart {
        let sealed = self.storage.patient(id).unwrap().unwrap();
        let records = self.storage.records(id, &RecordKind::ALL, usize::MAX).unwrap();
        self.keys.open_chart(&sealed, &records).unwrap()
    }

    fn server_events(&self) -> Vec<chartroom_audit::Event> {
        self.storage.audit_page(0, 1_000_000).unwrap().into_iter().map(|s| s.entry.event).collect()
    }

    async fn finish(mut self) {
        for d in &self.devices {
            let _ = self.keystore.delete(*d);
        }
        if let Some(s) = self.server.take() {
            s.shutdown(Duration::from_secs(2)).await.unwrap();
        }
    }
}

fn trail(v: &mut UnlockedVault) -> Vec<chartroom_audit::AuditEntry> {
    v.store().audit_entries(0, usize::MAX).unwrap()
}

fn no_text_in(entries: &[chartroom_audit::AuditEntry], text: &str) {
    let json = serde_json::to_string(entries).unwrap();
    assert!(!json.contains(text), "free text reached the audit trail in the clear");
}

#[tokio::test]
async fn auditors_search_verify_and_review_from_a_station_and_clinicians_break_the_glass() {
    break_glass_and_audit_story(Env::new().await).await;
}

/// The same story with the server on PostgreSQL.
#[tokio::test]
async fn break_glass_and_audit_story_on_postgres() {
    if let Some(url) = chartroom_tests::fresh_postgres() {
        break_glass_and_audit_story(Env::with_clock(None, Some(url)).await).await;
    }
}

async fn break_glass_and_audit_story(mut env: Env) {
    let icu = env.station("icu-1", &["ICU"]).await;
    let med = env.on("MED")[0].patient.clone();
    let icu_patient = env.on("ICU")[0].patient.clone();
    let detail = "Rapid response on MED, covering the arrest";

    // A nurse logs in as before and works her unit.
    let mut kim = env.clinical(&icu, "kim.rn").await;
    kim.sync(&env.client, wall_now()).await.unwrap();
    kim.chart_by_mrn(&icu_patient.mrn, 50, wall_now()).unwrap();
    // A MED patient is not on this station and not on her units: break-glass asks the server.
    assert_eq!(kim.chart_by_mrn(&med.mrn, 50, wall_now()).unwrap_err().code(), "store.patient_not_found");
    let short =
        kim.break_glass(&env.client, &med.mrn, BreakGlassReason::EmergencyCare, "x", wall_now()).await;
    assert_eq!(short.unwrap_err().code(), "break_glass.detail");
    let unknown = kim
        .break_glass(&env.client, "NO-SUCH-MRN", BreakGlassReason::EmergencyCare, detail, wall_now())
        .await;
    assert_eq!(unknown.unwrap_err().code(), "patient.not_found");
    let chart = kim
        .break_glass(&env.client, &med.mrn, BreakGlassReason::EmergencyCare, detail, wall_now())
        .await
        .unwrap();
    assert_eq!(chart.patient.id, med.id);
    assert_eq!(chart.observations.len(), env.on("MED")[0].observations.len().min(200));
    assert!(!chart.observations.is_empty(), "the whole chart, not demographics only");
    // Shown, not kept: the station still does not hold the patient.
    assert_eq!(kim.store().find_by_mrn(&med.mrn).unwrap_err().code(), "store.patient_not_found");
    let entries = trail(&mut kim);
    let bg = entries.iter().find(|e| e.event.action == "break_glass").unwrap();
    assert_eq!(
        (bg.event.outcome.as_str(), bg.event.patient_ids.as_slice()),
        ("emergency_care", &[med.id][..])
    );
    no_text_in(&entries, detail);
    no_text_in(&entries, &med.mrn);
    kim.sync(&env.client, wall_now()).await.unwrap();
    kim.lock();

    // A billing clerk has no break-glass.
    let mut bob = env.clinical(&icu, "bob.billing").await;
    let err =
        bob.break_glass(&env.client, &med.mrn, BreakGlassReason::EmergencyCare, detail, wall_now()).await;
    assert_eq!(err.unwrap_err().code(), "access.forbidden");
    bob.lock();

    // The auditor: a wrong password is refused and recorded by the server; the right one gives an
    // oversight session, which holds its tokens without printing them.
    let wrong = icu.login(&env.client, "sam.audit", &password("nobody"), wall_now()).await.unwrap_err();
    assert_eq!(wrong.code(), "server.refused");
    assert!(env
        .server_events()
        .iter()
        .any(|e| e.action == "login_failed" && e.username.as_deref() == Some("sam.audit")));
    let Login::Oversight(mut sam) =
        icu.login(&env.client, "sam.audit", &password("sam.audit"), wall_now()).await.unwrap()
    else {
        panic!("an auditor opens no station data")
    };
    assert_eq!((sam.username(), sam.role()), ("sam.audit", Role::Auditor));
    let shown = format!("{sam:?}");
    assert!(shown.contains("***") && !shown.contains("cra"), "{shown}");
    assert!(env
        .server_events()
        .iter()
        .any(|e| e.action == "login" && e.username.as_deref() == Some("sam.audit")));

    // Search by user: only kim's entries, newest first, and the limit holds.
    let by_kim = AuditQuery { user: Some("KIM.RN".into()), ..AuditQuery::default() };
    let found = sam.audit_search(&env.client, &by_kim, wall_now()).await.unwrap();
    assert!(found.len() > 3, "{found:?}");
    assert!(found.iter().all(|e| e.username.as_deref() == Some("kim.rn")));
    assert!(found.windows(2).all(|w| w[0].seq > w[1].seq), "newest first");
    assert!(found.iter().any(|e| e.action == "login"));
    let one =
        sam.audit_search(&env.client, &AuditQuery { limit: Some(1), ..by_kim.clone() }, wall_now()).await;
    assert_eq!(one.unwrap(), found[..1].to_vec());
    // By MRN: the break-glass (the server's grant and the station's own entry, uploaded) and the
    // read it allowed, flagged; every entry is about that patient.
    let by_mrn = AuditQuery { mrn: Some(med.mrn.clone()), ..AuditQuery::default() };
    let found = sam.audit_search(&env.client, &by_mrn, wall_now()).await.unwrap();
    let actions: Vec<&str> = found.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions.iter().filter(|a| **a == "break_glass").count(), 2, "{actions:?}");
    assert!(found.iter().any(|e| e.action == "break_glass_view" && e.break_glass && e.patients == 1));
    assert!(found.iter().filter(|e| e.action != "break_glass_view").all(|e| !e.break_glass));
    assert!(found.iter().all(|e| e.patients >= 1));
    let stations: Vec<&str> = found.iter().map(|e| e.device_id.as_str()).collect();
    assert!(stations.iter().all(|d| *d == icu.device_id().to_string()), "{stations:?}");
    // By action and time.
    let views = AuditQuery {
        action: Some("break_glass_view".into()),
        since: Some(chartroom_domain::Timestamp(wall_now().0 - 3_600_000)),
        ..AuditQuery::default()
    };
    let found = sam.audit_search(&env.client, &views, wall_now()).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].break_glass);
    let future = AuditQuery { since: Some(chartroom_domain::Timestamp(wall_now().0 + 3_600_000)), ..views };
    assert!(sam.audit_search(&env.client, &future, wall_now()).await.unwrap().is_empty());
    let nobody = AuditQuery { mrn: Some("NO-SUCH-MRN".into()), ..AuditQuery::default() };
    let err = sam.audit_search(&env.client, &nobody, wall_now()).await.unwrap_err();
    assert_eq!(err.code(), "patient.not_found");
    // Each search is itself in the trail (with the patient searched for, never the MRN).
    let searches: Vec<chartroom_audit::Event> = env
        .server_events()
        .into_iter()
        .filter(|e| e.action == "audit_search" && e.username.as_deref() == Some("sam.audit"))
        .collect();
    assert_eq!(searches.len(), 5, "{searches:?}");
    assert!(searches.iter().any(|e| e.patient_ids == [med.id]));
    let export = serde_json::to_string(&env.server_events()).unwrap();
    assert!(!export.contains(&med.mrn) && !export.contains(detail));

    // Verification, break-glass review and incidents.
    let verified = sam.audit_verify(&env.client, wall_now()).await.unwrap();
    assert!(verified.ok && verified.problem.is_none(), "{verified:?}");
    assert!(verified.entries > 10);
    let uses = sam.break_glass_uses(&env.client, true, wall_now()).await.unwrap();
    assert_eq!(uses.len(), 1);
    assert_eq!(
        (uses[0].username.as_str(), uses[0].patient_id.as_str()),
        ("kim.rn", med.id.to_string().as_str())
    );
    assert_eq!((uses[0].reason.as_str(), uses[0].detail.as_str()), ("emergency_care", detail));
    assert_eq!(
        (uses[0].mrn.as_str(), uses[0].patient_name.clone()),
        (med.mrn.as_str(), med.name.to_string())
    );
    sam.review_break_glass(&env.client, &uses[0].id, wall_now()).await.unwrap();
    assert!(sam.break_glass_uses(&env.client, true, wall_now()).await.unwrap().is_empty());
    assert_eq!(sam.break_glass_uses(&env.client, false, wall_now()).await.unwrap().len(), 1);
    assert!(sam.incidents(&env.client, wall_now()).await.unwrap().is_empty());
    let _locked = sam.lock();

    // An administrator gets an oversight session too, but the trail is the auditors': refused.
    let Login::Oversight(mut root) =
        icu.login(&env.client, "root.admin", &password("root.admin"), wall_now()).await.unwrap()
    else {
        panic!("an administrator opens no station data")
    };
    let err = root.audit_search(&env.client, &AuditQuery::default(), wall_now()).await.unwrap_err();
    assert_eq!(err.code(), "access.forbidden");
    assert_eq!(root.audit_verify(&env.client, wall_now()).await.unwrap_err().code(), "access.forbidden");

    // A clinician calling the auditors' endpoints directly: 403, and the refusal is recorded.
    let dev = env.raw_device("raw-1").await;
    let t = env.client.login(&dev, "kim.rn", &secret("kim.rn")).await.unwrap().access_token;
    let err = env.client.audit_entries(&dev, &t, &AuditQuery::default()).await.unwrap_err();
    assert_eq!(err.code(), Some("access.forbidden"));
    assert!(matches!(err, chartroom_client::ClientError::Api { status: 403, .. }));
    let err = env.client.audit_verify(&dev, &t).await.unwrap_err();
    assert!(matches!(err, chartroom_client::ClientError::Api { status: 403, .. }));
    assert!(env.server_events().iter().any(|e| e.action == "denied"
        && e.resource_type == "audit"
        && e.username.as_deref() == Some("kim.rn")));
    // Patient lookup is for roles that may break the glass; it names no one.
    let found = env.client.lookup_patient(&dev, &t, &med.mrn).await.unwrap();
    assert_eq!(found.patient_id, med.id.to_string());
    let bob_t = env.client.login(&dev, "bob.billing", &secret("bob.billing")).await.unwrap().access_token;
    let err = env.client.lookup_patient(&dev, &bob_t, &med.mrn).await.unwrap_err();
    assert_eq!(err.code(), Some("access.forbidden"));
    env.finish().await;
}

// hipaa (a)(2)(ii): break-glass works on a shared ward station and offline, and reaches the auditor's queue
//   after sync
#[tokio::test]
async fn break_glass_on_a_shared_ward_station_and_offline() {
    let mut env = Env::new().await;
    // A ward station that holds both units; kim works the ICU only.
    let ward = env.station("ward-1", &["ICU", "MED"]).await;
    let icu = env.station("icu-2", &["ICU"]).await;
    let med: Vec<_> = env.on("MED").iter().map(|c| c.patient.clone()).collect();
    assert!(med.len() >= 3);
    let detail = "Covering MED while their nurse is at lunch";

    let mut kim = env.clinical(&ward, "kim.rn").await;
    kim.sync(&env.client, wall_now()).await.unwrap();
    assert_eq!(kim.chart_by_mrn(&med[0].mrn, 50, wall_now()).unwrap_err().code(), "access.out_of_scope");
    // Online: the server grants, then the station's own copy is shown, the read flagged.
    let chart = kim
        .break_glass(&env.client, &med[0].mrn, BreakGlassReason::CoveringColleague, detail, wall_now())
        .await
        .unwrap();
    assert_eq!(chart.patient.id, med[0].id);
    assert!(!chart.notes.is_empty() || !chart.observations.is_empty());
    let entries = trail(&mut kim);
    let bg: Vec<_> = entries.iter().filter(|e| e.event.action == "break_glass").collect();
    assert_eq!(bg.len(), 1);
    let grants = env.storage.break_glass_list(false).unwrap();
    assert_eq!(bg[0].event.resource_id, Some(grants[0].id.to_string()), "the server's grant");
    assert!(bg[0].event.after.is_some(), "the reason is kept, sealed");
    assert!(entries
        .iter()
        .any(|e| e.event.action == "break_glass_view" && e.event.patient_ids == [med[0].id]));
    no_text_in(&entries, detail);
    assert_eq!(env.storage.break_glass_list(false).unwrap().len(), 1, "the server recorded the grant");
    // Break-glass does not widen ordinary reads.
    assert_eq!(kim.chart_by_mrn(&med[0].mrn, 50, wall_now()).unwrap_err().code(), "access.out_of_scope");
    kim.lock();

    // Offline: a patient this station holds can still be opened, flagged as an offline break-glass.
    let mut kim = ward.unlock("kim.rn", &password("kim.rn"), wall_now()).unwrap();
    assert!(!kim.is_online());
    let chart = kim
        .break_glass(&env.client, &med[1].mrn, BreakGlassReason::EmergencyCare, detail, wall_now())
        .await
        .unwrap();
    assert_eq!(chart.patient.id, med[1].id);
    let entries = trail(&mut kim);
    let offline = entries
        .iter()
        .find(|e| e.event.action == "break_glass" && e.event.patient_ids == [med[1].id])
        .unwrap();
    let offline_id: Uuid = offline.event.resource_id.as_deref().unwrap().parse().unwrap();
    assert!(env.storage.break_glass_list(false).unwrap().iter().all(|g| g.id != offline_id));
    assert!(entries
        .iter()
        .any(|e| e.event.action == "break_glass_view" && e.event.patient_ids == [med[1].id]));
    no_text_in(&entries, detail);
    kim.lock();

    // Offline on a station that does not hold the patient: refused, with a clear code, recorded.
    let mut ana = env.clinical(&icu, "ana.rn").await;
    ana.sync(&env.client, wall_now()).await.unwrap();
    ana.lock();
    let mut ana = icu.unlock("ana.rn", &password("ana.rn"), wall_now()).unwrap();
    let err = ana
        .break_glass(&env.client, &med[2].mrn, BreakGlassReason::EmergencyCare, detail, wall_now())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "break_glass.offline");
    let entries = trail(&mut ana);
    assert!(entries.iter().any(|e| e.event.action == "denied" && e.event.outcome == "break_glass.offline"));
    no_text_in(&entries, &med[2].mrn);
    ana.lock();

    // The offline break-glass reaches the server with the next audit upload, flagged.
    let mut kim = env.clinical(&ward, "kim.rn").await;
    kim.sync(&env.client, wall_now()).await.unwrap();
    kim.lock();
    let Login::Oversight(mut sam) =
        ward.login(&env.client, "sam.audit", &password("sam.audit"), wall_now()).await.unwrap()
    else {
        panic!("auditor")
    };
    let q = AuditQuery { mrn: Some(med[1].mrn.clone()), ..AuditQuery::default() };
    let found = sam.audit_search(&env.client, &q, wall_now()).await.unwrap();
    assert!(found.iter().any(|e| e.action == "break_glass" && e.device_id == ward.device_id().to_string()));
    assert!(found.iter().any(|e| e.action == "break_glass_view" && e.break_glass));
    // It is in the review queue, with its reason, as an offline use that granted nothing here.
    let uses = sam.break_glass_uses(&env.client, true, wall_now()).await.unwrap();
    assert_eq!(uses.len(), 2, "{uses:?}");
    let queued = uses.iter().find(|u| u.id == offline_id.to_string()).unwrap();
    assert!(queued.offline && queued.expires_at == queued.granted_at);
    assert_eq!(
        (queued.username.as_str(), queued.patient_id.as_str()),
        ("kim.rn", med[1].id.to_string().as_str())
    );
    assert_eq!((queued.reason.as_str(), queued.detail.as_str()), ("emergency_care", detail));
    assert!(uses.iter().any(|u| !u.offline && u.patient_id == med[0].id.to_string()));
    // Uploading again queues nothing twice; and it opens nothing on the server.
    let mut kim = env.clinical(&ward, "kim.rn").await;
    kim.sync(&env.client, wall_now()).await.unwrap();
    kim.lock();
    assert_eq!(sam.break_glass_uses(&env.client, false, wall_now()).await.unwrap().len(), 2);
    let stored: Vec<_> = env.storage.audit_page(0, 1_000_000).unwrap().into_iter().map(|s| s.entry).collect();
    let again =
        chartroom_server::oversight::queue_offline_break_glass(&*env.storage, &env.keys, &stored, wall_now());
    assert_eq!(again.unwrap(), 0, "an upload retried queues nothing twice");
    let user = env.storage.user_for_login("kim.rn").unwrap().unwrap().record.id;
    assert!(!env.storage.has_break_glass(user, med[1].id, wall_now()).unwrap());
    env.finish().await;
}

#[tokio::test]
async fn notes_lifecycle_drafts_addenda_and_entered_in_error() {
    let mut env = Env::new().await;
    let icu = env.station("icu-3", &["ICU"]).await;
    let a = env.on("ICU")[0].patient.clone();
    let reason = "Charted on the wrong patient";

    let mut kim = env.clinical(&icu, "kim.rn").await;
    kim.sync(&env.client, wall_now()).await.unwrap();
    let draft = kim.write_note(&a.mrn, "Half-written thoughts", false, wall_now()).unwrap();
    let signed = kim.write_note(&a.mrn, "Ambulated twice; tolerating diet.", true, wall_now()).unwrap();
    // Her drafts, with what a list shows (audited as a read).
    let drafts = kim.my_drafts(wall_now()).unwrap();
    assert_eq!(drafts.len(), 1);
    assert_eq!((drafts[0].note_id, drafts[0].patient_id), (draft.id, a.id));
    assert_eq!((drafts[0].mrn.as_str(), drafts[0].bed.as_str()), (a.mrn.as_str(), a.bed.as_str()));
    assert_eq!(drafts[0].text_len, "Half-written thoughts".len());
    assert!(!format!("{drafts:?}").contains(&a.mrn));
    assert!(trail(&mut kim).iter().any(|e| e.event.action == "view" && e.event.resource_type == "drafts"));
    assert!(kim.chart_by_mrn(&a.mrn, 10, wall_now()).unwrap().notes.iter().any(|n| n.id == draft.id));
    kim.sync(&env.client, wall_now()).await.unwrap();
    kim.lock();

    // Another user on the same station sees the signed note, never kim's draft.
    let mut ana = env.clinical(&icu, "ana.rn").await;
    ana.sync(&env.client, wall_now()).await.unwrap();
    let notes = ana.chart_by_mrn(&a.mrn, 10, wall_now()).unwrap().notes;
    assert!(notes.iter().any(|n| n.id == signed.id));
    assert!(notes.iter().all(|n| n.id != draft.id), "another user's draft is hidden");
    assert!(ana.my_drafts(wall_now()).unwrap().is_empty());
    // Only the author marks a note entered-in-error.
    assert_eq!(ana.enter_in_error(signed.id, reason, wall_now()).unwrap_err().code(), "note.not_author");
    ana.lock();

    // A physician amends the signed note; a draft cannot be amended.
    let mut lee = env.clinical(&icu, "lee.md").await;
    lee.sync(&env.client, wall_now()).await.unwrap();
    let addendum = lee.write_addendum(signed.id, "Agree; plan unchanged.", true, wall_now()).unwrap();
    assert_eq!(addendum.addendum_to, Some(signed.id));
    assert_eq!(addendum.patient_id, a.id);
    assert!(matches!(addendum.status, NoteStatus::Signed { .. }));
    assert_eq!(
        lee.write_addendum(draft.id, "No.", false, wall_now()).unwrap_err().code(),
        "note.bad_addendum"
    );
    let r = lee.sync(&env.client, wall_now()).await.unwrap();
    assert_eq!((r.push.applied, r.push.rejected), (1, 0), "{r:?}");
    lee.lock();

    // The author: not a draft, not without a reason; then the signed note is marked.
    let mut kim = env.clinical(&icu, "kim.rn").await;
    kim.sync(&env.client, wall_now()).await.unwrap();
    assert_eq!(kim.enter_in_error(draft.id, reason, wall_now()).unwrap_err().code(), "note.not_signed");
    assert_eq!(kim.enter_in_error(signed.id, "  ", wall_now()).unwrap_err().code(), "note.reason_required");
    let marked = kim.enter_in_error(signed.id, reason, wall_now()).unwrap();
    assert!(matches!(&marked.status, NoteStatus::EnteredInError { reason: r, .. } if r == reason));
    assert_eq!(marked.text, signed.text);
    assert_eq!(kim.enter_in_error(signed.id, reason, wall_now()).unwrap_err().code(), "note.signed");
    let r = kim.sync(&env.client, wall_now()).await.unwrap();
    assert_eq!((r.push.applied, r.push.rejected, r.push.conflicts), (1, 0, 0), "{r:?}");
    no_text_in(&trail(&mut kim), reason);
    kim.lock();
    let on_server = env.server_chart(a.id);
    let note = on_server.notes.iter().find(|n| n.id == signed.id).unwrap();
    assert!(matches!(&note.status, NoteStatus::EnteredInError { reason: r, .. } if r == reason));
    assert_eq!(note.text, signed.text);
    assert!(on_server.notes.iter().any(|n| n.addendum_to == Some(signed.id)));
    let trail_json = serde_json::to_string(&env.server_events()).unwrap();
    assert!(!trail_json.contains(reason), "the reason stays sealed");
    env.finish().await;
}

#[tokio::test]
async fn my_patients_per_user_local_and_shredded_with_the_patient() {
    let mut env = Env::new().await;
    let icu = env.station("icu-4", &["ICU"]).await;
    let icu_patients: Vec<_> = env.on("ICU").iter().map(|c| c.patient.clone()).collect();
    let (a, b) = (&icu_patients[0], &icu_patients[1]);
    let med = env.on("MED")[0].patient.clone();

    let mut lee = env.clinical(&icu, "lee.md").await;
    lee.sync(&env.client, wall_now()).await.unwrap();
    lee.set_mine(&a.mrn, true, wall_now()).unwrap();
    lee.set_mine(&b.mrn, true, wall_now()).unwrap();
    lee.set_mine(&b.mrn, true, wall_now()).unwrap();
    assert_eq!(lee.mine().unwrap(), [a.id, b.id].into_iter().collect());
    lee.set_mine(&a.mrn, false, wall_now()).unwrap();
    assert_eq!(lee.mine().unwrap(), [b.id].into_iter().collect());
    // A patient not on this station cannot be added.
    assert_eq!(lee.set_mine(&med.mrn, true, wall_now()).unwrap_err().code(), "store.patient_not_found");
    let entries = trail(&mut lee);
    assert_eq!(entries.iter().filter(|e| e.event.resource_type == "my_patients").count(), 4);
    lee.lock();

    // Per user: kim's list is her own.
    let mut kim = env.clinical(&icu, "kim.rn").await;
    assert!(kim.mine().unwrap().is_empty());
    kim.set_mine(&a.mrn, true, wall_now()).unwrap();
    kim.lock();
    // Kept across logins, locally.
    let lee = icu.unlock("lee.md", &password("lee.md"), wall_now()).unwrap();
    assert_eq!(lee.mine().unwrap(), [b.id].into_iter().collect());
    lee.lock();

    // B is transferred to MED: when it leaves this station, it leaves the list too.
    let mut lee = env.clinical(&icu, "lee.md").await;
    lee.move_patient(&b.mrn, Some("MED"), None, wall_now()).unwrap();
    let r = lee.sync(&env.client, wall_now()).await.unwrap();
    assert_eq!(r.pull.shredded, 1, "{r:?}");
    assert!(lee.mine().unwrap().is_empty());
    lee.lock();
    let kim = icu.unlock("kim.rn", &password("kim.rn"), wall_now()).unwrap();
    assert_eq!(kim.mine().unwrap(), [a.id].into_iter().collect());
    kim.lock();
    env.finish().await;
}

/// An auditor's access token lasts minutes: an expired one is renewed with the refresh token and
/// the call made again; a refresh token that no longer works ends what the session can do.
#[tokio::test]
async fn an_oversight_session_renews_its_access_token() {
    let clock = Arc::new(chartroom_domain::clock::ManualClock::at(wall_now()));
    let mut env = Env::with_clock(Some(clock.clone()), None).await;
    let icu = env.station("icu-5", &["ICU"]).await;
    let Login::Oversight(mut sam) =
        icu.login(&env.client, "sam.audit", &password("sam.audit"), wall_now()).await.unwrap()
    else {
        panic!("auditor")
    };
    assert!(sam.audit_verify(&env.client, wall_now()).await.unwrap().ok);
    // Eleven minutes later (the station's clock agrees with the server's).
    clock.advance(Duration::from_secs(11 * 60));
    let client = env.client.clone().with_clock_skew_ms(11 * 60 * 1000);
    let refreshes = |env: &Env| {
        env.server_events()
            .iter()
            .filter(|e| e.action == "token_refresh" && e.username.as_deref() == Some("sam.audit"))
            .count()
    };
    assert_eq!(refreshes(&env), 0);
    assert!(sam.audit_verify(&client, wall_now()).await.unwrap().ok);
    assert_eq!(refreshes(&env), 1, "the expired token was renewed once");
    assert!(sam.incidents(&client, wall_now()).await.unwrap().is_empty());
    assert_eq!(refreshes(&env), 1, "and the new one is used");
    // The account is disabled: its sessions end and renewal is refused.
    env.storage.set_disabled("sam.audit", true).unwrap();
    let err = sam.incidents(&client, wall_now()).await.unwrap_err();
    assert_eq!(err.code(), "server.refused", "{err}");
    env.finish().await;
}
