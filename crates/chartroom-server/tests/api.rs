//! The HTTP API end to end over real TLS with the real client (`chartroom-client`, pinned
//! certificate): enrollment, login, device-bound tokens, throttling, records with access control
//! (the role × scope × action matrix), PHI at rest, and bad input.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use chartroom_client::{DeviceIdentity, Method, ServerClient, StatusCode};
use chartroom_crypto::Password;
use chartroom_domain::clock::ManualClock;
use chartroom_domain::{Chart, DeviceProfile, Role};
use chartroom_protocol::{CensusPage, ChartResponse, TokenResponse, UserInfo};
use chartroom_server::storage::Storage;
use chartroom_server::{init, start_with_clock, wall_now, DataDir, InitOptions, RunningServer};

const PASSWORD: &str = "correct-horse-staple-42";

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: DataDir,
    server: RunningServer,
    client: ServerClient,
    /// A second connection to the server's database, as the admin CLI would open it.
    storage: std::sync::Arc<dyn Storage>,
    clock: Arc<ManualClock>,
}

impl Fixture {
    async fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path().join("server"));
        let report = init(&dir, &InitOptions::default()).unwrap();
        let clock = Arc::new(ManualClock::at(wall_now()));
        let server = start_with_clock(&dir, "127.0.0.1:0".parse().unwrap(), clock.clone()).await.unwrap();
        let client =
            ServerClient::new(&format!("https://localhost:{}", server.addr.port()), &report.fingerprint)
                .unwrap();
        let storage = dir.open_storage().unwrap();
        Fixture { _tmp: tmp, dir, server, client, storage, clock }
    }

    fn add_user(&self, username: &str, role: Role, units: &[&str]) {
        let units = units.iter().map(|u| u.to_string()).collect();
        chartroom_server::users::add_user(
            &*self.storage,
            username,
            role,
            units,
            &Password::new(PASSWORD.into()),
            wall_now(),
        )
        .unwrap();
    }

    async fn device(&self, name: &str, units: &[&str]) -> DeviceIdentity {
        let units = units.iter().map(|u| u.to_string()).collect();
        let token = chartroom_server::devices::issue_token(
            &*self.storage,
            name,
            DeviceProfile::Station,
            units,
            Duration::from_secs(3600),
            self.clock.now(),
        )
        .unwrap();
        let mut seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
        let probe = DeviceIdentity::new(String::new(), &seed);
        let enrolled = self.client.enroll(&token, &probe.public_key_hex()).await.unwrap();
        DeviceIdentity::new(enrolled.device_id, &seed)
    }

    async fn login(&self, device: &DeviceIdentity, username: &str) -> TokenResponse {
        self.client.login(device, username, PASSWORD).await.unwrap()
    }

    /// Loads `n` synthetic patients spread over ICU and MED; returns them.
    fn seed(&self, n: u64) -> Vec<Chart> {
        let config = chartroom_synth::SynthConfig::new(11, wall_now());
        let charts: Vec<Chart> = (0..n).map(|i| chartroom_synth::patient(&config, i)).collect();
        let keys = self.dir.record_keys().unwrap();
        let report = chartroom_server::records::load_charts(&*self.storage, &keys, &charts).unwrap();
        assert_eq!(report.imported, charts.len());
        charts
    }

    /// Every event in the server's audit trail, oldest first.
    fn events(&self) -> Vec<chartroom_audit::Event> {
        self.storage.audit_page(0, 100_000).unwrap().into_iter().map(|s| s.entry.event).collect()
    }

    async fn status(&self, device: &DeviceIdentity, token: &str, path: &str) -> (StatusCode, String) {
        let (status, body) = self.client.send_signed(device, token, Method::GET, path).await.unwrap();
        (status, String::from_utf8(body).unwrap())
    }
}

use chartroom_domain::Clock;

// hipaa (d) (a)(2)(i): a token works only from the device it was issued to
#[tokio::test]
async fn tokens_work_only_from_the_device_they_were_issued_to() {
    let f = Fixture::new().await;
    f.add_user("nurse.a", Role::Nurse, &["ICU"]);
    let a = f.device("station-a", &["ICU"]).await;
    let b = f.device("station-b", &["ICU"]).await;
    let tokens = f.login(&a, "NURSE.A").await;
    assert_eq!(tokens.user.username, "nurse.a");
    assert!(tokens.access_expires_in_s <= 600);

    let me: UserInfo = f.client.get(&a, &tokens.access_token, "/v1/me").await.unwrap();
    assert_eq!(me.role, Role::Nurse);
    // The same access token, signed by another enrolled device: refused.
    let (status, body) = f.status(&b, &tokens.access_token, "/v1/me").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("auth.bad_proof"), "{body}");
    // No proof at all, or a made-up token: refused.
    let r = f.client.raw(Method::GET, "/v1/me").bearer_auth(&tokens.access_token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (status, body) = f.status(&a, "cra1_forged", "/v1/me").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("auth.invalid_token"), "{body}");

    // A refresh token from device A presented by device B: refused; by A: rotated.
    let stolen = f.client.refresh(&b, &tokens.refresh_token).await.unwrap_err();
    assert_eq!(stolen.code(), Some("auth.invalid_refresh"));
    let fresh = f.client.refresh(&a, &tokens.refresh_token).await.unwrap();
    assert_ne!(fresh.access_token, tokens.access_token);
    let _: UserInfo = f.client.get(&a, &fresh.access_token, "/v1/me").await.unwrap();
    // The old access token died with the rotation; replaying the exchanged refresh token ends the
    // session, so even the new tokens stop working.
    assert_eq!(f.status(&a, &tokens.access_token, "/v1/me").await.0, StatusCode::UNAUTHORIZED);
    let replay = f.client.refresh(&a, &tokens.refresh_token).await.unwrap_err();
    assert_eq!(replay.code(), Some("auth.invalid_refresh"));
    assert_eq!(f.status(&a, &fresh.access_token, "/v1/me").await.0, StatusCode::UNAUTHORIZED);

    // Access tokens expire after ten minutes.
    let t = f.login(&a, "nurse.a").await;
    f.clock.advance(Duration::from_secs(601));
    // (The request proof carries real time; the server's clock moved: allow for that skew by
    // checking the token error, which is decided first.)
    let (status, body) = f.status(&a, &t.access_token, "/v1/me").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("auth.invalid_token"), "{body}");

    // Logout ends the session.
    let f2 = Fixture::new().await;
    f2.add_user("nurse.a", Role::Nurse, &["ICU"]);
    let c = f2.device("station-c", &[]).await;
    let t = f2.login(&c, "nurse.a").await;
    let (status, _) =
        f2.client.send_signed(&c, &t.access_token, Method::POST, "/v1/auth/logout").await.unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(f2.status(&c, &t.access_token, "/v1/me").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        f2.client.refresh(&c, &t.refresh_token).await.unwrap_err().code(),
        Some("auth.invalid_refresh")
    );
    f.server.shutdown(Duration::from_secs(2)).await.unwrap();
}

/// A request proof signs one request (method, path and query, time, token): captured, it opens
/// nothing else, and it goes stale after two minutes. A token edited by one character is no token.
// hipaa (d) (e)(2)(i): a request signature is good for its own method, path, token and two minutes
//   only; forged and expired tokens are refused
#[tokio::test]
async fn request_proofs_cannot_be_replayed_elsewhere_or_later() {
    let f = Fixture::new().await;
    f.seed(4);
    f.add_user("nurse.p", Role::Nurse, &["ICU"]);
    f.add_user("nurse.q", Role::Nurse, &["ICU"]);
    let a = f.device("station-a", &[]).await;
    let token = f.login(&a, "nurse.p").await.access_token;
    let other = f.login(&a, "nurse.q").await.access_token;
    let now_ms = f.clock.now().0;
    let proof = |method: &str, path: &str, at: i64, token: &str| {
        let sig = a.sign_hex(&chartroom_protocol::request_proof_message(method, path, at, token));
        format!("t={at},sig={sig}")
    };
    let send = |method: Method, path: &'static str, token: String, proof: String| {
        let request =
            f.client.raw(method, path).bearer_auth(token).header(chartroom_protocol::PROOF_HEADER, proof);
        async move {
            let r = request.send().await.unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    let census = "/v1/units/ICU/census";
    // The genuine request works.
    let (status, body) = send(Method::GET, census, token.clone(), proof("GET", census, now_ms, &token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let refused = |(status, body): (StatusCode, String), code: &str, case: &str| {
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}: {body}");
        assert!(body.contains(code), "{case}: {body}");
    };
    let captured = proof("GET", census, now_ms, &token);
    refused(
        send(Method::GET, "/v1/units/MED/census", token.clone(), captured.clone()).await,
        "auth.bad_proof",
        "another path",
    );
    refused(
        send(Method::GET, "/v1/units/ICU/census?limit=1", token.clone(), captured.clone()).await,
        "auth.bad_proof",
        "another query",
    );
    refused(
        send(Method::POST, "/v1/auth/logout", token.clone(), captured.clone()).await,
        "auth.bad_proof",
        "another method and path",
    );
    refused(
        send(Method::GET, census, other.clone(), captured.clone()).await,
        "auth.bad_proof",
        "another user's token",
    );
    let late = now_ms - 121_000;
    refused(
        send(Method::GET, census, token.clone(), proof("GET", census, late, &token)).await,
        "auth.bad_proof",
        "two minutes old",
    );
    let early = now_ms + 121_000;
    refused(
        send(Method::GET, census, token.clone(), proof("GET", census, early, &token)).await,
        "auth.bad_proof",
        "two minutes ahead",
    );
    let garbled = captured.replace("sig=", "sig=00");
    refused(send(Method::GET, census, token.clone(), garbled).await, "auth.bad_proof", "a garbled signature");
    // A token with one character changed, properly signed, is not a token.
    let mut forged = token.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'a' { b'b' } else { b'a' };
    let forged = String::from_utf8(forged).unwrap();
    refused(
        send(Method::GET, census, forged.clone(), proof("GET", census, now_ms, &forged)).await,
        "auth.invalid_token",
        "forged token",
    );
    // After all that, the genuine session still works (refusals are not a lockout of the real user).
    let (status, _) = send(Method::GET, census, token.clone(), proof("GET", census, now_ms, &token)).await;
    assert_eq!(status, StatusCode::OK);
}

// hipaa (d) (e)(2)(i): a login challenge works once and the device signature is checked
#[tokio::test]
async fn a_login_nonce_works_once_and_signatures_are_checked() {
    let f = Fixture::new().await;
    f.add_user("nurse.b", Role::Nurse, &["ICU"]);
    let a = f.device("station-a", &[]).await;
    let nonce = f.client.challenge(&a).await.unwrap().nonce;
    let body = |sig: &str| {
        serde_json::json!({
            "device_id": a.device_id, "nonce": nonce, "signature": sig,
            "username": "nurse.b", "password": PASSWORD,
        })
    };
    let good = a.sign_hex(&chartroom_protocol::login_proof_message(&a.device_id, &nonce, "nurse.b"));
    let wrong = a.sign_hex(&chartroom_protocol::login_proof_message(&a.device_id, &nonce, "someone.else"));
    let r = f.client.raw(Method::POST, "/v1/auth/login").json(&body(&wrong)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.unwrap().contains("auth.bad_proof"));
    let r = f.client.raw(Method::POST, "/v1/auth/login").json(&body(&good)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The nonce was used: replaying the very same request is refused.
    let r = f.client.raw(Method::POST, "/v1/auth/login").json(&body(&good)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.unwrap().contains("auth.bad_proof"));
    // A device that never enrolled cannot even get a nonce.
    let ghost = DeviceIdentity::new(uuid::Uuid::now_v7().to_string(), &[7u8; 32]);
    assert_eq!(f.client.challenge(&ghost).await.unwrap_err().code(), Some("device.unknown"));
}

// hipaa (d) (b): server logins are throttled then locked out; each failure is audited; an admin can unlock
#[tokio::test]
async fn failed_logins_are_throttled_locked_out_audited_and_unlockable() {
    let f = Fixture::new().await;
    f.add_user("nurse.c", Role::Nurse, &["ICU"]);
    let a = f.device("station-a", &[]).await;
    let b = f.device("station-b", &[]).await;
    let wrong = |dev| f.client.login(dev, "nurse.c", "not-the-password-at-all");

    // Two free failures, then growing delays (429 with Retry-After) between attempts.
    for _ in 0..3 {
        assert_eq!(wrong(&a).await.unwrap_err().code(), Some("auth.invalid_credentials"));
    }
    let throttled = wrong(&a).await.unwrap_err();
    assert_eq!(throttled.code(), Some("auth.throttled"), "{throttled}");
    // The client hands the server's Retry-After on (the app's "try again in N s").
    assert!(
        matches!(throttled, chartroom_client::ClientError::Api { retry_after_s: Some(1..=60), .. }),
        "{throttled:?}"
    );
    // The throttle follows the username to another device too.
    assert_eq!(wrong(&b).await.unwrap_err().code(), Some("auth.throttled"));
    // Waiting out each delay, the 10th failure within 15 minutes locks the account.
    for _ in 3..10 {
        f.clock.advance(Duration::from_secs(61));
        assert_eq!(wrong(&b).await.unwrap_err().code(), Some("auth.invalid_credentials"));
    }
    f.clock.advance(Duration::from_secs(61));
    let locked = f.client.login(&a, "nurse.c", PASSWORD).await.unwrap_err();
    assert_eq!(locked.code(), Some("auth.locked_out"), "even the right password waits: {locked}");

    // Every failure is in the server's event log, without the password.
    let events = f.events();
    let failures: Vec<_> = events.iter().filter(|e| e.action == "login_failed").collect();
    assert!(failures.len() >= 12, "{}", failures.len());
    assert!(failures.iter().all(|e| e.username.as_deref() == Some("nurse.c") && e.host == "127.0.0.1"));
    let dump = format!("{events:?}");
    assert!(!dump.contains("not-the-password") && !dump.contains(PASSWORD));

    // An admin unlocks (`user enable`), or the lockout times out.
    chartroom_server::auth::unlock_user(&*f.storage, "nurse.c").unwrap();
    f.clock.advance(Duration::from_secs(61));
    f.login(&a, "nurse.c").await;
}

#[tokio::test]
async fn guessing_from_one_device_locks_that_device() {
    let f = Fixture::new().await;
    f.add_user("nurse.d", Role::Nurse, &["ICU"]);
    let a = f.device("station-a", &[]).await;
    let b = f.device("station-b", &[]).await;
    // Ten different made-up usernames from one device (each username alone stays unlocked).
    for i in 0..10 {
        f.clock.advance(Duration::from_secs(61));
        let e = f.client.login(&a, &format!("guess.{i}"), "whatever-password").await.unwrap_err();
        assert!(matches!(e.code(), Some("auth.invalid_credentials")), "{e}");
    }
    f.clock.advance(Duration::from_secs(61));
    assert_eq!(f.client.login(&a, "nurse.d", PASSWORD).await.unwrap_err().code(), Some("auth.locked_out"));
    // The other device is unaffected.
    f.login(&b, "nurse.d").await;
}

// hipaa (a)(1) (d): a disabled user or revoked device is refused at the next request
#[tokio::test]
async fn disabled_users_and_revoked_devices_lose_access_at_once() {
    let f = Fixture::new().await;
    f.add_user("nurse.e", Role::Nurse, &["ICU"]);
    f.add_user("nurse.f", Role::Nurse, &["ICU"]);
    let a = f.device("station-a", &[]).await;
    let t = f.login(&a, "nurse.e").await;
    f.storage.set_disabled("nurse.e", true).unwrap();
    assert_eq!(f.status(&a, &t.access_token, "/v1/me").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        f.client.refresh(&a, &t.refresh_token).await.unwrap_err().code(),
        Some("auth.invalid_refresh")
    );
    assert_eq!(f.client.login(&a, "nurse.e", PASSWORD).await.unwrap_err().code(), Some("auth.user_disabled"));
    f.storage.set_disabled("nurse.e", false).unwrap();
    f.login(&a, "nurse.e").await;

    let t = f.login(&a, "nurse.f").await;
    f.storage.revoke_device("station-a", f.clock.now()).unwrap();
    assert_eq!(f.status(&a, &t.access_token, "/v1/me").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(f.client.login(&a, "nurse.f", PASSWORD).await.unwrap_err().code(), Some("device.unknown"));
}

/// Roles, each with the units it works on (`*`: all).
const USERS: &[(&str, Role, &[&str])] = &[
    ("nurse.icu", Role::Nurse, &["ICU"]),
    ("doc.icu", Role::Physician, &["ICU"]),
    ("billing.icu", Role::Billing, &["ICU"]),
    ("auditor.all", Role::Auditor, &["*"]),
    ("admin.it", Role::Admin, &[]),
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Scope {
    In,
    Out,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Act {
    Census,
    /// A chart, by patient id (the IDOR vector: ids of other units' patients).
    Chart,
    /// Push a heart rate for the patient.
    WriteVitals,
    /// Push a signed nursing note, or a signed progress note.
    SignNursingNote,
    SignProgressNote,
    /// Search the audit trail for the patient's MRN.
    ReadAudit,
    /// The anomaly incidents (not about a patient: both scopes ask the same).
    Incidents,
}

const ACTS: [Act; 7] = [
    Act::Census,
    Act::Chart,
    Act::WriteVitals,
    Act::SignNursingNote,
    Act::SignProgressNote,
    Act::ReadAudit,
    Act::Incidents,
];

/// The expected outcome: the sections visible, a census, a write applied, a list, or the error code.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    Sections(&'static [&'static str]),
    Census,
    Applied,
    Listed,
    Denied(&'static str),
}

const ALL: &[&str] = &["demographics", "allergies", "problems", "medications", "vitals", "notes"];
const OUT: Expect = Expect::Denied("access.out_of_scope");
const NO: Expect = Expect::Denied("access.forbidden");

/// The matrix: every role × in/out of scope × action, and what must happen.
const MATRIX: &[(&str, Scope, Act, Expect)] = &[
    ("nurse.icu", Scope::In, Act::Census, Expect::Census),
    ("nurse.icu", Scope::Out, Act::Census, OUT),
    ("nurse.icu", Scope::In, Act::Chart, Expect::Sections(ALL)),
    ("nurse.icu", Scope::Out, Act::Chart, OUT),
    ("nurse.icu", Scope::In, Act::WriteVitals, Expect::Applied),
    ("nurse.icu", Scope::Out, Act::WriteVitals, OUT),
    ("nurse.icu", Scope::In, Act::SignNursingNote, Expect::Applied),
    ("nurse.icu", Scope::Out, Act::SignNursingNote, OUT),
    ("nurse.icu", Scope::In, Act::SignProgressNote, NO),
    ("nurse.icu", Scope::Out, Act::SignProgressNote, NO),
    ("nurse.icu", Scope::In, Act::ReadAudit, NO),
    ("nurse.icu", Scope::Out, Act::ReadAudit, NO),
    ("nurse.icu", Scope::In, Act::Incidents, NO),
    ("nurse.icu", Scope::Out, Act::Incidents, NO),
    ("doc.icu", Scope::In, Act::Census, Expect::Census),
    ("doc.icu", Scope::Out, Act::Census, OUT),
    ("doc.icu", Scope::In, Act::Chart, Expect::Sections(ALL)),
    ("doc.icu", Scope::Out, Act::Chart, OUT),
    ("doc.icu", Scope::In, Act::WriteVitals, Expect::Applied),
    ("doc.icu", Scope::Out, Act::WriteVitals, OUT),
    ("doc.icu", Scope::In, Act::SignNursingNote, Expect::Applied),
    ("doc.icu", Scope::Out, Act::SignNursingNote, OUT),
    ("doc.icu", Scope::In, Act::SignProgressNote, Expect::Applied),
    ("doc.icu", Scope::Out, Act::SignProgressNote, OUT),
    ("doc.icu", Scope::In, Act::ReadAudit, NO),
    ("doc.icu", Scope::Out, Act::ReadAudit, NO),
    ("doc.icu", Scope::In, Act::Incidents, NO),
    ("doc.icu", Scope::Out, Act::Incidents, NO),
    ("billing.icu", Scope::In, Act::Census, Expect::Census),
    ("billing.icu", Scope::Out, Act::Census, OUT),
    ("billing.icu", Scope::In, Act::Chart, Expect::Sections(&["demographics", "problems"])),
    ("billing.icu", Scope::Out, Act::Chart, OUT),
    ("billing.icu", Scope::In, Act::WriteVitals, NO),
    ("billing.icu", Scope::Out, Act::WriteVitals, NO),
    ("billing.icu", Scope::In, Act::SignNursingNote, NO),
    ("billing.icu", Scope::Out, Act::SignNursingNote, NO),
    ("billing.icu", Scope::In, Act::SignProgressNote, NO),
    ("billing.icu", Scope::Out, Act::SignProgressNote, NO),
    ("billing.icu", Scope::In, Act::ReadAudit, NO),
    ("billing.icu", Scope::Out, Act::ReadAudit, NO),
    ("billing.icu", Scope::In, Act::Incidents, NO),
    ("billing.icu", Scope::Out, Act::Incidents, NO),
    ("auditor.all", Scope::In, Act::Census, NO),
    ("auditor.all", Scope::Out, Act::Census, NO),
    ("auditor.all", Scope::In, Act::Chart, Expect::Sections(&["demographics"])),
    ("auditor.all", Scope::Out, Act::Chart, Expect::Sections(&["demographics"])),
    ("auditor.all", Scope::In, Act::WriteVitals, NO),
    ("auditor.all", Scope::Out, Act::WriteVitals, NO),
    ("auditor.all", Scope::In, Act::SignNursingNote, NO),
    ("auditor.all", Scope::Out, Act::SignNursingNote, NO),
    ("auditor.all", Scope::In, Act::SignProgressNote, NO),
    ("auditor.all", Scope::Out, Act::SignProgressNote, NO),
    ("auditor.all", Scope::In, Act::ReadAudit, Expect::Listed),
    ("auditor.all", Scope::Out, Act::ReadAudit, Expect::Listed),
    ("auditor.all", Scope::In, Act::Incidents, Expect::Listed),
    ("auditor.all", Scope::Out, Act::Incidents, Expect::Listed),
    ("admin.it", Scope::In, Act::Census, NO),
    ("admin.it", Scope::Out, Act::Census, NO),
    ("admin.it", Scope::In, Act::Chart, NO),
    ("admin.it", Scope::Out, Act::Chart, NO),
    ("admin.it", Scope::In, Act::WriteVitals, NO),
    ("admin.it", Scope::Out, Act::WriteVitals, NO),
    ("admin.it", Scope::In, Act::SignNursingNote, NO),
    ("admin.it", Scope::Out, Act::SignNursingNote, NO),
    ("admin.it", Scope::In, Act::SignProgressNote, NO),
    ("admin.it", Scope::Out, Act::SignProgressNote, NO),
    ("admin.it", Scope::In, Act::ReadAudit, NO),
    ("admin.it", Scope::Out, Act::ReadAudit, NO),
    ("admin.it", Scope::In, Act::Incidents, NO),
    ("admin.it", Scope::Out, Act::Incidents, NO),
];

/// Account and device management are not on the HTTP API at all (they are `chartroom-server user …`
/// and `device …` on the server host); every role gets the same 404 for where they might be.
const NO_ADMIN_OVER_HTTP: &[(&str, &str)] = &[
    ("POST", "/v1/users"),
    ("POST", "/v1/devices/revoke"),
    ("POST", "/v1/users/disable"),
    ("GET", "/v1/devices"),
];

// hipaa (a)(1) (b): every role × in/out of unit × action (census, chart, write vitals, sign nursing and
//   progress notes, read audit, incidents) over HTTPS gives its expected outcome; refusals carry no PHI
//   and each is one audit entry; no account or device management is reachable over HTTP
#[tokio::test]
async fn access_matrix_role_by_scope_by_action() {
    use chartroom_domain::{Note, NoteKind, NoteStatus, Observation, Timestamp, VitalSign};
    use chartroom_protocol::{Change, ChangeOutcome, ChangeRecord, IncidentInfo};
    let f = Fixture::new().await;
    let charts = f.seed(12);
    let on = |unit: &'static str| charts.iter().filter(move |c| c.patient.unit == unit);
    // Reads look at one patient per unit, writes go to another, so reads compare with the seed.
    let (icu, icu_writes) = (on("ICU").next().unwrap(), on("ICU").nth(1).unwrap());
    let (med, med_writes) = (on("MED").next().unwrap(), on("MED").nth(1).unwrap());
    let device = f.device("roaming-laptop", &[]).await;
    let mut tokens = std::collections::HashMap::new();
    for (name, role, units) in USERS {
        f.add_user(name, *role, units);
        let t = f.login(&device, name).await;
        tokens.insert(*name, (t.access_token, t.user.id.parse::<uuid::Uuid>().unwrap()));
    }
    // Every (role, scope, action) cell is in the table exactly once.
    for (name, ..) in USERS {
        for scope in [Scope::In, Scope::Out] {
            for act in ACTS {
                let n = MATRIX.iter().filter(|(u, s, a, _)| u == name && *s == scope && *a == act).count();
                assert_eq!(n, 1, "{name} {scope:?} {act:?}");
            }
        }
    }
    let denials = || f.events().iter().filter(|e| e.action == "denied").count();
    for (user, scope, act, expect) in MATRIX {
        let (target, write_target) = match scope {
            Scope::In => (icu, icu_writes),
            Scope::Out => (med, med_writes),
        };
        let (token, me) = &tokens[user];
        let cell = format!("{user} {scope:?} {act:?}");
        let denials_before = denials();
        let now = Timestamp(f.clock.now().0);
        let note = |kind: NoteKind| Note {
            id: uuid::Uuid::now_v7(),
            patient_id: write_target.patient.id,
            author_id: *me,
            kind,
            text: "Settled, observations stable".into(),
            created_at: now,
            status: NoteStatus::Signed { signed_at: now },
            addendum_to: None,
            version: 0,
        };
        let write = match act {
            Act::WriteVitals => Some(ChangeRecord::Observation(Observation {
                id: uuid::Uuid::now_v7(),
                patient_id: write_target.patient.id,
                vital: VitalSign::HeartRate,
                value: 84.0,
                effective_at: now,
                recorded_by: *me,
                version: 0,
            })),
            Act::SignNursingNote => Some(ChangeRecord::Note(note(NoteKind::Nursing))),
            Act::SignProgressNote => Some(ChangeRecord::Note(note(NoteKind::Progress))),
            _ => None,
        };
        if let Some(record) = write {
            let change =
                Change { change_id: uuid::Uuid::now_v7().to_string(), base_version: 0, change: record };
            let outcome = push(&f.client, &device, token, vec![change]).await.remove(0);
            match (expect, &outcome) {
                (Expect::Applied, ChangeOutcome::Applied { version: 1 }) => {}
                (Expect::Denied(code), ChangeOutcome::Rejected { code: got, message }) => {
                    assert_eq!(got, code, "{cell}");
                    assert!(!message.contains(&write_target.patient.name.family), "{cell}");
                }
                _ => panic!("{cell}: expected {expect:?}, got {outcome:?}"),
            }
        } else {
            let path = match act {
                Act::Census => format!("/v1/units/{}/census", target.patient.unit),
                Act::Chart => format!("/v1/patients/{}/chart", target.patient.id),
                Act::ReadAudit => format!("/v1/audit/entries?mrn={}", target.patient.mrn),
                _ => "/v1/incidents".to_string(),
            };
            let (status, body) = f.status(&device, token, &path).await;
            match expect {
                Expect::Denied(code) => {
                    assert_eq!(status, StatusCode::FORBIDDEN, "{cell}: {body}");
                    assert!(body.contains(code), "{cell}: {body}");
                    assert!(!body.contains(&target.patient.name.family), "{cell}");
                    assert!(!body.contains(&target.patient.mrn), "{cell}");
                }
                Expect::Census => {
                    assert_eq!(status, StatusCode::OK, "{cell}: {body}");
                    let page: CensusPage = serde_json::from_str(&body).unwrap();
                    assert!(!page.patients.is_empty(), "{cell}");
                    assert!(page.patients.iter().all(|p| p.unit == target.patient.unit), "{cell}");
                }
                Expect::Listed if *act == Act::Incidents => {
                    assert_eq!(status, StatusCode::OK, "{cell}: {body}");
                    let _: Vec<IncidentInfo> = serde_json::from_str(&body).unwrap();
                }
                Expect::Listed => {
                    assert_eq!(status, StatusCode::OK, "{cell}: {body}");
                    let entries: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
                    // The patient's chart was read above: the search finds those reads.
                    assert!(!entries.is_empty(), "{cell}");
                    assert!(!body.contains(&target.patient.name.family), "{cell}: names in a search");
                }
                Expect::Sections(sections) => {
                    assert_eq!(status, StatusCode::OK, "{cell}: {body}");
                    let chart: ChartResponse = serde_json::from_str(&body).unwrap();
                    let got: Vec<&str> = chart.sections.iter().map(|s| s.as_str()).collect();
                    assert_eq!(&got, sections, "{cell}");
                    let c = &chart.chart;
                    assert_eq!(c.patient.mrn, target.patient.mrn, "{cell}");
                    // Sections not granted carry nothing; granted ones carry what was stored.
                    let has = |s: &str| sections.contains(&s);
                    assert_eq!(c.notes.len(), if has("notes") { target.notes.len() } else { 0 }, "{cell}");
                    assert_eq!(
                        c.conditions.len(),
                        if has("problems") { target.conditions.len() } else { 0 },
                        "{cell}"
                    );
                    assert_eq!(
                        c.medications.is_empty(),
                        !has("medications") || target.medications.is_empty(),
                        "{cell}"
                    );
                    assert_eq!(
                        c.observations.is_empty(),
                        !has("vitals") || target.observations.is_empty(),
                        "{cell}"
                    );
                    assert_eq!(
                        c.allergies.len(),
                        if has("allergies") { target.allergies.len() } else { 0 },
                        "{cell}"
                    );
                }
                Expect::Applied => unreachable!("{cell}: reads are not applied"),
            }
        }
        // Every refusal is one audit entry; nothing else is.
        let recorded = denials() - denials_before;
        assert_eq!(recorded, usize::from(matches!(expect, Expect::Denied(_))), "{cell}: denials recorded");
    }
    // What reached the patients is exactly what the matrix allowed: the applied writes in scope, and
    // nothing out of scope.
    f.add_user("nurse.both", Role::Nurse, &["ICU", "MED"]);
    let both = f.login(&device, "nurse.both").await.access_token;
    for (scope, patient) in [(Scope::In, icu_writes), (Scope::Out, med_writes)] {
        let allowed = |act: Act| {
            MATRIX.iter().filter(|(_, s, a, e)| *s == scope && *a == act && *e == Expect::Applied).count()
        };
        let (_, body) = f.status(&device, &both, &format!("/v1/patients/{}/chart", patient.patient.id)).await;
        let chart: ChartResponse = serde_json::from_str(&body).unwrap();
        let notes = allowed(Act::SignNursingNote) + allowed(Act::SignProgressNote);
        assert_eq!(chart.chart.notes.len(), patient.notes.len() + notes, "{scope:?} notes");
        assert_eq!(
            chart.chart.observations.len(),
            patient.observations.len() + allowed(Act::WriteVitals),
            "{scope:?} vitals"
        );
    }
    // The API's own list of operations has no account or device management (devices only enroll
    // and recover themselves), and guessed paths for it answer 404 or 405 to every role.
    let doc: serde_json::Value = serde_json::from_str(&chartroom_server::openapi_json()).unwrap();
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    assert!(paths.len() >= 20, "{paths:?}");
    for p in &paths {
        let admin = p.contains("/users")
            || (p.contains("/devices") && !p.ends_with("/enroll") && !p.ends_with("/recover"));
        assert!(!admin, "an administration endpoint over HTTP: {p}");
    }
    for (user, ..) in USERS {
        for (method, path) in NO_ADMIN_OVER_HTTP {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let (status, _) = f.client.send_signed(&device, &tokens[user].0, method, path).await.unwrap();
            assert!(matches!(status.as_u16(), 404 | 405), "{user} {path}: {status}");
        }
    }
}

#[tokio::test]
async fn a_station_restricted_to_its_ward_serves_only_that_ward() {
    let f = Fixture::new().await;
    let charts = f.seed(6);
    let med = charts.iter().find(|c| c.patient.unit == "MED").unwrap();
    f.add_user("float.nurse", Role::Nurse, &["ICU", "MED"]);
    let icu_station = f.device("icu-station-1", &["ICU"]).await;
    let t = f.login(&icu_station, "float.nurse").await;
    let (status, body) =
        f.status(&icu_station, &t.access_token, &format!("/v1/patients/{}/chart", med.patient.id)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("access.out_of_scope"));
    let (status, _) = f.status(&icu_station, &t.access_token, "/v1/units/ICU/census").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn census_pages_through_a_unit_by_bed_without_gaps() {
    let f = Fixture::new().await;
    let charts = f.seed(30);
    f.add_user("nurse.g", Role::Nurse, &["ICU"]);
    let dev = f.device("station-a", &[]).await;
    let t = f.login(&dev, "nurse.g").await;
    let mut seen = Vec::new();
    let mut path = "/v1/units/ICU/census?limit=4".to_string();
    loop {
        let page: CensusPage = f.client.get(&dev, &t.access_token, &path).await.unwrap();
        assert!(page.patients.len() <= 4);
        seen.extend(
            page.patients.iter().map(|p| (p.bed.clone(), p.patient_id.clone(), p.name.family.clone())),
        );
        match page.next_cursor {
            Some(c) => path = format!("/v1/units/ICU/census?limit=4&after={c}"),
            None => break,
        }
    }
    let mut expected: Vec<_> = charts
        .iter()
        .filter(|c| c.patient.unit == "ICU")
        .map(|c| (c.patient.bed.clone(), c.patient.id.to_string(), c.patient.name.family.clone()))
        .collect();
    expected.sort();
    let mut sorted_seen = seen.clone();
    sorted_seen.sort();
    assert_eq!(sorted_seen, expected);
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "ordered by bed");
    // A bad cursor is a 400, not a crash.
    let (status, body) = f.status(&dev, &t.access_token, "/v1/units/ICU/census?after=nonsense").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = f.status(&dev, &t.access_token, "/v1/units/ICU/census?limit=3&surprise=1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

// hipaa (a)(2)(iv): the server database without the master key holds no PHI
#[tokio::test]
async fn the_database_without_the_master_key_holds_no_phi() {
    let f = Fixture::new().await;
    let charts = f.seed(20);
    let canaries: Vec<String> = charts
        .iter()
        .flat_map(|c| {
            let mut v =
                vec![c.patient.mrn.clone(), c.patient.name.family.clone(), c.patient.birth_date.to_string()];
            v.extend(c.notes.iter().map(|n| n.text.chars().take(24).collect::<String>()));
            v
        })
        .filter(|s| s.len() >= 6)
        .collect();
    f.server.shutdown(Duration::from_secs(2)).await.unwrap();
    // Even a DBA holding the database key (which the master key derives) reads only ciphertext in
    // the patient tables: every PHI field is sealed per patient.
    let master: [u8; 32] = std::fs::read(f.dir.path().join("keys/master.key")).unwrap().try_into().unwrap();
    let conn = rusqlite::Connection::open(f.dir.database_path()).unwrap();
    let key = chartroom_crypto::DataKey::derive(b"chartroom/server-db/v1", &master, b"database");
    conn.execute_batch(&key.sqlcipher_key_statement()).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
    let mut dump = Vec::new();
    for table in ["patients", "records", "events"] {
        let mut stmt = conn.prepare(&format!("SELECT * FROM {table}")).unwrap();
        let n = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..n {
                match row.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                        dump.extend_from_slice(t)
                    }
                    _ => {}
                }
            }
        }
    }
    assert!(dump.len() > 10_000, "the tables hold the patients: {} bytes", dump.len());
    for canary in &canaries {
        assert!(!contains(&dump, canary.as_bytes()), "PHI in plaintext columns");
    }
    // And the file itself, without any key, is noise.
    let raw = std::fs::read(f.dir.database_path()).unwrap();
    for canary in &canaries {
        assert!(!contains(&raw, canary.as_bytes()));
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn bad_requests_get_stable_codes_and_the_server_stays_up() {
    let f = Fixture::new().await;
    f.add_user("nurse.h", Role::Nurse, &["ICU"]);
    let dev = f.device("station-a", &[]).await;
    let post = |path: &'static str| f.client.raw(Method::POST, path);
    let code = |r: chartroom_client::reqwest::Response| async move {
        let status = r.status();
        let body: chartroom_protocol::ApiError = r.json().await.unwrap();
        (status.as_u16(), body.code)
    };
    let cases: Vec<(chartroom_client::reqwest::RequestBuilder, u16, &str)> = vec![
        (
            post("/v1/auth/login").body("{\"device_id\":").header("content-type", "application/json"),
            400,
            "request.malformed",
        ),
        (post("/v1/auth/login").body("{}").header("content-type", "text/plain"), 415, "request.content_type"),
        (
            post("/v1/auth/login").json(&serde_json::json!({
                "device_id": dev.device_id, "nonce": "x", "signature": "y", "username": "nurse.h",
                "password": PASSWORD, "admin": true
            })),
            400,
            "request.malformed",
        ),
        (
            post("/v1/devices/enroll")
                .body(vec![b' '; 2 * 1024 * 1024])
                .header("content-type", "application/json"),
            413,
            "request.too_large",
        ),
        (f.client.raw(Method::GET, "/v1/nowhere"), 404, "request.not_found"),
        (f.client.raw(Method::GET, "/v1/units/ICU/census"), 401, "auth.invalid_token"),
        (f.client.raw(Method::GET, "/v1/patients/not-a-uuid/chart"), 401, "auth.invalid_token"),
    ];
    for (request, status, expected) in cases {
        let (s, c) = code(request.send().await.unwrap()).await;
        assert_eq!((s, c.as_str()), (status, expected));
    }
    let t = f.login(&dev, "nurse.h").await;
    let (status, body) = f.status(&dev, &t.access_token, "/v1/patients/not-a-uuid/chart").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) =
        f.status(&dev, &t.access_token, &format!("/v1/patients/{}/chart", uuid::Uuid::now_v7())).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(f.client.health().await.unwrap().api_version, chartroom_protocol::API_VERSION);
}

/// The OpenAPI document served and the one checked in (`docs/openapi.json`) are the generated one.
#[tokio::test]
async fn openapi_document_is_served_and_checked_in() {
    let f = Fixture::new().await;
    let served = f.client.raw(Method::GET, "/openapi.json").send().await.unwrap().text().await.unwrap();
    let generated = chartroom_server::openapi_json();
    assert_eq!(served, generated);
    let doc: serde_json::Value = serde_json::from_str(&generated).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in ["/v1/auth/login", "/v1/patients/{id}/chart", "/v1/units/{unit}/census", "/v1/devices/enroll"]
    {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    let checked_in = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    if std::env::var_os("CHARTROOM_BLESS").is_some() {
        std::fs::write(&checked_in, &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(&checked_in).unwrap_or_default();
    assert!(
        on_disk == generated,
        "docs/openapi.json is stale: run `CHARTROOM_BLESS=1 cargo test -p chartroom-server --test api openapi`"
    );
}

// hipaa (a)(2)(ii) (b): break-glass needs a reason, opens one out-of-scope patient for one hour, is audited
//   and reviewed by an auditor
#[tokio::test]
async fn break_glass_opens_one_patient_for_an_hour_and_auditors_review_it() {
    use chartroom_protocol::{BreakGlassGrant, BreakGlassUse};
    let mut f = Fixture::new().await;
    let charts = f.seed(8);
    let med: Vec<&Chart> = charts.iter().filter(|c| c.patient.unit == "MED").collect();
    f.add_user("nurse.bg", Role::Nurse, &["ICU"]);
    f.add_user("billing.bg", Role::Billing, &["ICU"]);
    f.add_user("auditor.bg", Role::Auditor, &["*"]);
    let dev = f.device("station-bg", &[]).await;
    let nurse = f.login(&dev, "nurse.bg").await.access_token;
    let chart_path = |c: &Chart| format!("/v1/patients/{}/chart", c.patient.id);
    let body =
        serde_json::json!({ "reason": "emergency_care", "detail": "Rapid response call on MED, covering" });

    assert_eq!(f.status(&dev, &nurse, &chart_path(med[0])).await.0, StatusCode::FORBIDDEN);
    let path = format!("/v1/patients/{}/break-glass", med[0].patient.id);
    let grant: BreakGlassGrant = f.client.post_signed(&dev, &nurse, &path, &body).await.unwrap();
    assert_eq!(grant.expires_at.0 - f.clock.now().0, 3_600_000);
    let (status, text) = f.status(&dev, &nurse, &chart_path(med[0])).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let chart: ChartResponse = serde_json::from_str(&text).unwrap();
    assert_eq!(chart.sections.len(), 6);
    // The read is flagged in the trail; the grant covers this patient only.
    assert!(f
        .events()
        .iter()
        .any(|e| e.action == "break_glass_view" && e.patient_ids == [med[0].patient.id]));
    assert_eq!(f.status(&dev, &nurse, &chart_path(med[1])).await.0, StatusCode::FORBIDDEN);
    // Break-glass lets her act on the patient, never move the patient onto her units (which would
    // make the access permanent); the bed within MED is fine.
    let push = |patient: chartroom_domain::Patient| chartroom_protocol::PushBatch {
        changes: vec![chartroom_protocol::Change {
            change_id: uuid::Uuid::now_v7().to_string(),
            base_version: med[0].patient.version,
            change: chartroom_protocol::ChangeRecord::Patient(patient),
        }],
    };
    let onto_icu = chartroom_domain::Patient { unit: "ICU".into(), ..med[0].patient.clone() };
    let r: chartroom_protocol::PushResponse =
        f.client.post_signed(&dev, &nurse, "/v1/sync/push", &push(onto_icu)).await.unwrap();
    assert!(
        matches!(&r.results[0].outcome, chartroom_protocol::ChangeOutcome::Rejected { code, .. } if code == "access.forbidden"),
        "{r:?}"
    );
    let new_bed = chartroom_domain::Patient { bed: "99".into(), ..med[0].patient.clone() };
    let r: chartroom_protocol::PushResponse =
        f.client.post_signed(&dev, &nurse, "/v1/sync/push", &push(new_bed)).await.unwrap();
    assert!(matches!(r.results[0].outcome, chartroom_protocol::ChangeOutcome::Applied { .. }), "{r:?}");
    // A reason from the list and real text are required; billing has no break-glass at all.
    let bad = serde_json::json!({ "reason": "curiosity", "detail": "just looking" });
    let err = f.client.post_signed::<_, BreakGlassGrant>(&dev, &nurse, &path, &bad).await.unwrap_err();
    assert_eq!(err.code(), Some("request.malformed"));
    let short = serde_json::json!({ "reason": "emergency_care", "detail": "x" });
    let err = f.client.post_signed::<_, BreakGlassGrant>(&dev, &nurse, &path, &short).await.unwrap_err();
    assert_eq!(err.code(), Some("request.invalid"));
    let billing = f.login(&dev, "billing.bg").await.access_token;
    let err = f.client.post_signed::<_, BreakGlassGrant>(&dev, &billing, &path, &body).await.unwrap_err();
    assert_eq!(err.code(), Some("access.forbidden"));

    // Auditors list unreviewed uses with the reason, and mark them reviewed; nurses cannot.
    let auditor = f.login(&dev, "auditor.bg").await.access_token;
    let uses: Vec<BreakGlassUse> =
        f.client.get(&dev, &auditor, "/v1/break-glass?unreviewed=true").await.unwrap();
    assert_eq!(uses.len(), 1);
    assert_eq!((uses[0].username.as_str(), uses[0].reason.as_str()), ("nurse.bg", "emergency_care"));
    assert_eq!(uses[0].detail, "Rapid response call on MED, covering");
    assert_eq!(f.status(&dev, &nurse, "/v1/break-glass").await.0, StatusCode::FORBIDDEN);
    let review = format!("/v1/break-glass/{}/review", uses[0].id);
    let (status, _) = f.client.send_signed(&dev, &auditor, Method::POST, &review).await.unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT);
    let left: Vec<BreakGlassUse> =
        f.client.get(&dev, &auditor, "/v1/break-glass?unreviewed=true").await.unwrap();
    assert!(left.is_empty());
    assert!(f
        .events()
        .iter()
        .any(|e| e.action == "break_glass_review" && e.username.as_deref() == Some("auditor.bg")));

    // An auditor sees demographics only, until break-glass for an investigation opens the chart.
    let (_, text) = f.status(&dev, &auditor, &chart_path(med[1])).await;
    assert_eq!(serde_json::from_str::<ChartResponse>(&text).unwrap().sections.len(), 1);
    let investigate =
        serde_json::json!({ "reason": "audit_investigation", "detail": "Complaint 2026-114, access review" });
    let path1 = format!("/v1/patients/{}/break-glass", med[1].patient.id);
    f.client.post_signed::<_, BreakGlassGrant>(&dev, &auditor, &path1, &investigate).await.unwrap();
    let (_, text) = f.status(&dev, &auditor, &chart_path(med[1])).await;
    assert_eq!(serde_json::from_str::<ChartResponse>(&text).unwrap().sections.len(), 6);
    assert!(f
        .events()
        .iter()
        .any(|e| e.action == "break_glass_view" && e.username.as_deref() == Some("auditor.bg")));

    // An hour later the grant has expired (the client's clock moves with the server's).
    f.clock.advance(Duration::from_secs(3601));
    f.client = f.client.clone().with_clock_skew_ms(3_601_000);
    let nurse = f.login(&dev, "nurse.bg").await.access_token;
    assert_eq!(f.status(&dev, &nurse, &chart_path(med[0])).await.0, StatusCode::FORBIDDEN);
}

// hipaa (b): a burst of reads disables the account and raises an incident
#[tokio::test]
async fn a_burst_of_reads_disables_the_account_and_raises_an_incident() {
    use chartroom_protocol::IncidentInfo;
    let f = Fixture::new().await;
    let charts = f.seed(4);
    let icu = charts.iter().find(|c| c.patient.unit == "ICU").unwrap();
    f.add_user("nurse.fast", Role::Nurse, &["ICU"]);
    f.add_user("auditor.inc", Role::Auditor, &["*"]);
    let dev = f.device("station-x", &[]).await;
    let t = f.login(&dev, "nurse.fast").await.access_token;
    let path = format!("/v1/patients/{}/chart", icu.patient.id);
    // A new user's first hour: the floor (60) protects normal work.
    for i in 0..60 {
        let (status, _) = f.status(&dev, &t, &path).await;
        assert_eq!(status, StatusCode::OK, "read {i}");
    }
    let (status, body) = f.status(&dev, &t, &path).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("auth.user_disabled"), "{body}");
    // The session is gone and the account disabled.
    assert_eq!(f.status(&dev, &t, "/v1/me").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        f.client.login(&dev, "nurse.fast", PASSWORD).await.unwrap_err().code(),
        Some("auth.user_disabled")
    );
    let auditor = f.login(&dev, "auditor.inc").await.access_token;
    let incidents: Vec<IncidentInfo> = f.client.get(&dev, &auditor, "/v1/incidents").await.unwrap();
    assert_eq!(incidents.len(), 1);
    assert_eq!((incidents[0].username.as_str(), incidents[0].last_hour), ("nurse.fast", 61));
    assert!(f.events().iter().any(|e| e.action == "incident" && e.outcome == "account_disabled"));
}

/// A canary patient's name, MRN, birth date and note text appear in no audit export, no command
/// output and no error message — only in the encrypted stores.
#[tokio::test]
async fn a_canary_patient_leaves_no_phi_in_exports_or_output() {
    let f = Fixture::new().await;
    let mut chart = chartroom_synth::patient(&chartroom_synth::SynthConfig::new(99, wall_now()), 0);
    chart.patient.name.family = "Canaryfamily".into();
    chart.patient.name.given = "Canarygiven".into();
    chart.patient.mrn = "CANARY77".into();
    chart.patient.unit = "ICU".into();
    for n in &mut chart.notes {
        n.text = "canary note text about the patient".into();
    }
    let keys = f.dir.record_keys().unwrap();
    chartroom_server::records::load_charts(&*f.storage, &keys, std::slice::from_ref(&chart)).unwrap();
    f.add_user("nurse.canary", Role::Nurse, &["ICU"]);
    f.add_user("billing.canary", Role::Billing, &["MED"]);
    let dev = f.device("station-canary", &[]).await;
    let t = f.login(&dev, "nurse.canary").await.access_token;
    let b = f.login(&dev, "billing.canary").await.access_token;
    let path = format!("/v1/patients/{}/chart", chart.patient.id);
    assert_eq!(f.status(&dev, &t, &path).await.0, StatusCode::OK);
    assert_eq!(f.status(&dev, &t, "/v1/units/ICU/census").await.0, StatusCode::OK);
    let (status, denial) = f.status(&dev, &b, &path).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let bg =
        serde_json::json!({ "reason": "emergency_care", "detail": "Canaryfamily collapsed in corridor" });
    let bg_path = format!("/v1/patients/{}/break-glass", chart.patient.id);
    f.client.post_signed::<_, serde_json::Value>(&dev, &t, &bg_path, &bg).await.unwrap();

    let data = f.dir.path().to_str().unwrap();
    let bin = env!("CARGO_BIN_EXE_chartroom-server");
    let mut seen = denial;
    for args in [
        vec!["audit", "export", "--data-dir", data, "--format", "jsonl"],
        vec!["audit", "export", "--data-dir", data, "--format", "csv"],
        vec!["audit", "export", "--data-dir", data, "--format", "csv", "--patient", "CANARY77"],
        vec!["audit", "export", "--data-dir", data, "--format", "jsonl", "--patient", "NO-SUCH-MRN"],
        vec!["audit", "verify", "--data-dir", data],
        vec!["incidents", "list", "--data-dir", data],
        vec!["user", "list", "--data-dir", data],
    ] {
        let out = std::process::Command::new(bin).args(&args).output().unwrap();
        seen.push_str(&String::from_utf8_lossy(&out.stdout));
        seen.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    assert!(seen.contains(&chart.patient.id.to_string()), "the exports do name the patient by id");
    let birth = chart.patient.birth_date.to_string();
    for canary in ["Canaryfamily", "Canarygiven", "CANARY77", birth.as_str(), "canary note text"] {
        assert!(!seen.contains(canary), "`{canary}` leaked into command output");
    }
}

/// SQL injection and path traversal, where the API takes text: unit names, MRNs, audit filters,
/// release file names, record ids and cursors. Each probe is refused or finds nothing; no probe
/// returns a patient, a file of the host, or a 5xx; the database is intact afterwards.
// hipaa (a)(1) (c)(1): SQL-injection and path-traversal probes in every text the API takes are
//   refused or find nothing, and the data is intact afterwards
#[tokio::test]
async fn injection_and_traversal_probes_find_nothing() {
    let f = Fixture::new().await;
    let charts = f.seed(6);
    f.add_user("nurse.inj", Role::Nurse, &["ICU"]);
    f.add_user("auditor.inj", Role::Auditor, &["*"]);
    let dev = f.device("station-inj", &[]).await;
    let nurse = f.login(&dev, "nurse.inj").await.access_token;
    let auditor = f.login(&dev, "auditor.inj").await.access_token;
    let icu_before = f.status(&dev, &nurse, "/v1/units/ICU/census").await.1;
    let sql = [
        "' OR '1'='1",
        "ICU' OR '1'='1' --",
        "ICU'; DROP TABLE patients; --",
        "%",
        "_",
        "*",
        "\0",
        "1) UNION SELECT * FROM users --",
    ];
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect()
    };
    let names: Vec<&str> = charts.iter().map(|c| c.patient.name.family.as_str()).collect();
    let clean = |body: &str, case: &str| {
        for n in &names {
            assert!(!body.contains(n), "{case}: a patient in the answer: {body}");
        }
    };
    for probe in sql {
        // A unit is matched exactly against the user's units: a probe is another unit.
        let (status, body) = f.status(&dev, &nurse, &format!("/v1/units/{}/census", enc(probe))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "unit {probe:?}: {body}");
        clean(&body, probe);
        // Audit filters are exact: nothing matches.
        for field in ["user", "action"] {
            let (status, body) =
                f.status(&dev, &auditor, &format!("/v1/audit/entries?{field}={}", enc(probe))).await;
            assert_eq!(status, StatusCode::OK, "{field} {probe:?}: {body}");
            assert_eq!(body, "[]", "{field} {probe:?} matched entries");
        }
        let (status, body) = f.status(&dev, &auditor, &format!("/v1/audit/entries?mrn={}", enc(probe))).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "mrn {probe:?}: {body}");
        // An MRN lookup finds no patient.
        let lookup = chartroom_protocol::PatientLookupRequest { mrn: probe.into() };
        let r = f.client.raw(Method::POST, "/v1/patients/lookup").json(&lookup).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "an unsigned lookup");
        let (status, body) = {
            let r: Result<chartroom_protocol::PatientLookup, _> =
                f.client.post_signed(&dev, &nurse, "/v1/patients/lookup", &lookup).await;
            match r {
                Ok(found) => panic!("lookup {probe:?} found {found:?}"),
                Err(e) => (e.code().map(str::to_owned), format!("{e}")),
            }
        };
        assert!(
            matches!(status.as_deref(), Some("patient.not_found" | "request.invalid")),
            "{probe:?}: {body}"
        );
        // Record ids and cursors are typed: a probe is a bad request.
        let (status, _) = f.status(&dev, &nurse, &format!("/v1/patients/{}/chart", enc(probe))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "chart id {probe:?}");
        let (status, _) = f.status(&dev, &nurse, &format!("/v1/sync/pull?after={}", enc(probe))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "cursor {probe:?}");
    }
    // Release file names are names, never paths. A published file is served (the control); encoded
    // traversals toward files that exist (the server's config and master key, the host's passwd) reach
    // the handler and are refused as unknown release files. (A bare `..` or `%2E%2E` segment never
    // leaves a URL library: clients resolve it away before sending.)
    let updates = f.dir.path().join("updates");
    std::fs::create_dir_all(&updates).unwrap();
    std::fs::write(updates.join("manifest.json"), b"{\"release\":\"control\"}").unwrap();
    let r = f.client.raw(Method::GET, "/v1/updates/manifest.json").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "{\"release\":\"control\"}");
    assert!(f.dir.path().join("config.json").exists() && f.dir.path().join("keys/master.key").exists());
    for probe in [
        "..%2Fconfig.json",
        "%2E%2E%2Fconfig.json",
        "..%2Fkeys%2Fmaster.key",
        "..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "%2Fetc%2Fpasswd",
        "..%5Cconfig.json",
        "manifest.json%00.deb",
        ".manifest.json",
    ] {
        let r = f.client.raw(Method::GET, &format!("/v1/updates/{probe}")).send().await.unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND, "updates/{probe}: {body}");
        assert!(body.contains("update.not_found"), "updates/{probe} did not reach the handler: {body}");
        assert!(!body.contains("root:") && !body.contains("master_key"), "updates/{probe}: {body}");
    }
    // Everything is as it was.
    assert_eq!(f.status(&dev, &nurse, "/v1/units/ICU/census").await.1, icu_before);
    assert_eq!(
        f.storage.census("ICU", None, 1000).unwrap().len(),
        charts.iter().filter(|c| c.patient.unit == "ICU").count()
    );
}

/// Pushed changes: applied once (a retry is a duplicate), checked against role, authorship and
/// version; a stale edit is a conflict; observations and signed notes are never rewritten.
// hipaa (c)(1): a change applies once and only on its base version; otherwise it is a conflict, never a
//   silent overwrite
#[tokio::test]
async fn pushed_changes_apply_once_with_versions_and_conflicts() {
    use chartroom_domain::{Note, NoteKind, NoteStatus, Observation, Timestamp, VitalSign};
    use chartroom_protocol::{Change, ChangeOutcome, ChangeRecord};
    let f = Fixture::new().await;
    let charts = f.seed(4);
    let icu = charts.iter().find(|c| c.patient.unit == "ICU").unwrap();
    f.add_user("nurse.sync", Role::Nurse, &["ICU"]);
    f.add_user("billing.sync", Role::Billing, &["ICU"]);
    let a = f.device("station-a", &[]).await;
    let b = f.device("station-b", &[]).await;
    let tokens = f.login(&a, "nurse.sync").await;
    let me: uuid::Uuid = tokens.user.id.parse().unwrap();
    let now = Timestamp(f.clock.now().0);
    let obs = |value: f64| Observation {
        id: uuid::Uuid::now_v7(),
        patient_id: icu.patient.id,
        vital: VitalSign::HeartRate,
        value,
        effective_at: now,
        recorded_by: me,
        version: 0,
    };
    let note = Note {
        id: uuid::Uuid::now_v7(),
        patient_id: icu.patient.id,
        author_id: me,
        kind: NoteKind::Nursing,
        text: "Draft: settled overnight".into(),
        created_at: now,
        status: NoteStatus::Draft,
        addendum_to: None,
        version: 0,
    };
    let change = |base: i64, record: ChangeRecord| Change {
        change_id: uuid::Uuid::now_v7().to_string(),
        base_version: base,
        change: record,
    };
    let first =
        vec![change(0, ChangeRecord::Observation(obs(88.0))), change(0, ChangeRecord::Note(note.clone()))];
    let t = tokens.access_token.clone();
    assert_eq!(
        push(&f.client, &a, &t, first.clone()).await,
        [ChangeOutcome::Applied { version: 1 }, ChangeOutcome::Applied { version: 1 }]
    );
    // The same batch again (a lost response, retried): nothing applied twice.
    assert_eq!(
        push(&f.client, &a, &t, first.clone()).await,
        [ChangeOutcome::Duplicate { version: 1 }, ChangeOutcome::Duplicate { version: 1 }]
    );
    // The same change ids from another device are not its to retry.
    let tb = f.login(&b, "nurse.sync").await.access_token;
    assert!(
        matches!(&push(&f.client, &b, &tb, first.clone()).await[0], ChangeOutcome::Rejected { code, .. } if code == "sync.foreign_change")
    );

    // The draft note edited on version 1 applies as version 2; another edit still based on 1 is a conflict.
    let edited = Note { text: "Settled overnight, no complaints".into(), ..note.clone() };
    assert_eq!(
        push(&f.client, &a, &t, vec![change(1, ChangeRecord::Note(edited.clone()))]).await,
        [ChangeOutcome::Applied { version: 2 }]
    );
    assert_eq!(
        push(&f.client, &a, &t, vec![change(1, ChangeRecord::Note(edited.clone()))]).await,
        [ChangeOutcome::Conflict { current_version: 2 }]
    );
    // Signed at version 3, then never edited again; observations are never rewritten.
    let signed = Note { status: NoteStatus::Signed { signed_at: now }, ..edited.clone() };
    assert_eq!(
        push(&f.client, &a, &t, vec![change(2, ChangeRecord::Note(signed.clone()))]).await,
        [ChangeOutcome::Applied { version: 3 }]
    );
    let rewrite = Note { text: "changed after signing".into(), ..signed };
    let refused = push(&f.client, &a, &t, vec![change(3, ChangeRecord::Note(rewrite))]).await;
    assert!(
        matches!(&refused[0], ChangeOutcome::Rejected { code, .. } if code == "note.signed"),
        "{refused:?}"
    );
    let ChangeRecord::Observation(o) = &first[0].change else { unreachable!() };
    let again = push(
        &f.client,
        &a,
        &t,
        vec![change(1, ChangeRecord::Observation(Observation { value: 90.0, ..o.clone() }))],
    )
    .await;
    assert!(
        matches!(&again[0], ChangeOutcome::Rejected { code, .. } if code == "sync.append_only"),
        "{again:?}"
    );

    // Refusals: another author, an impossible value, a role without the permission.
    let forged = Observation { recorded_by: uuid::Uuid::now_v7(), ..obs(80.0) };
    let bad = push(
        &f.client,
        &a,
        &t,
        vec![change(0, ChangeRecord::Observation(forged)), change(0, ChangeRecord::Observation(obs(900.0)))],
    )
    .await;
    assert!(matches!(&bad[0], ChangeOutcome::Rejected { code, .. } if code == "sync.not_author"), "{bad:?}");
    assert!(matches!(&bad[1], ChangeOutcome::Rejected { code, .. } if code == "request.invalid"), "{bad:?}");
    let billing = f.login(&a, "billing.sync").await;
    let as_billing = Observation { recorded_by: billing.user.id.parse().unwrap(), ..obs(70.0) };
    let denied =
        push(&f.client, &a, &billing.access_token, vec![change(0, ChangeRecord::Observation(as_billing))])
            .await;
    assert!(
        matches!(&denied[0], ChangeOutcome::Rejected { code, .. } if code == "access.forbidden"),
        "{denied:?}"
    );

    // What was applied is what the chart shows, and every applied change is in the trail.
    let chart: ChartResponse =
        f.client.get(&a, &t, &format!("/v1/patients/{}/chart", icu.patient.id)).await.unwrap();
    assert!(chart.chart.observations.iter().any(|x| x.id == o.id && x.value == 88.0 && x.version == 1));
    let n = chart.chart.notes.iter().find(|x| x.id == note.id).unwrap();
    assert_eq!((n.version, n.text.as_str()), (3, "Settled overnight, no complaints"));
    let creates = f
        .events()
        .iter()
        .filter(|e| {
            (e.action == "create" || e.action == "update") && e.username.as_deref() == Some("nurse.sync")
        })
        .count();
    assert_eq!(creates, 4, "two creates and two updates");
}

/// A signed note takes one change only: its author marking it entered-in-error, everything else
/// as it was. A draft is not marked; another user cannot; the text cannot change on the way.
// hipaa (c)(1): a signed note is never edited; only its author marks it entered-in-error
#[tokio::test]
async fn a_signed_note_is_only_marked_entered_in_error_by_its_author() {
    use chartroom_domain::{Note, NoteKind, NoteStatus, Timestamp};
    use chartroom_protocol::{Change, ChangeOutcome, ChangeRecord};
    let f = Fixture::new().await;
    let charts = f.seed(4);
    let icu = charts.iter().find(|c| c.patient.unit == "ICU").unwrap();
    f.add_user("nurse.eie", Role::Nurse, &["ICU"]);
    f.add_user("nurse.other", Role::Nurse, &["ICU"]);
    let dev = f.device("station-eie", &[]).await;
    let tokens = f.login(&dev, "nurse.eie").await;
    let me: uuid::Uuid = tokens.user.id.parse().unwrap();
    let t = tokens.access_token.clone();
    let now = Timestamp(f.clock.now().0);
    let note = |status: NoteStatus| Note {
        id: uuid::Uuid::now_v7(),
        patient_id: icu.patient.id,
        author_id: me,
        kind: NoteKind::Nursing,
        text: "Ambulated twice".into(),
        created_at: now,
        status,
        addendum_to: None,
        version: 0,
    };
    let change = |base: i64, n: &Note| Change {
        change_id: uuid::Uuid::now_v7().to_string(),
        base_version: base,
        change: ChangeRecord::Note(n.clone()),
    };
    let rejected = |o: &ChangeOutcome| match o {
        ChangeOutcome::Rejected { code, .. } => code.clone(),
        other => format!("{other:?}"),
    };
    let signed = note(NoteStatus::Signed { signed_at: now });
    let draft = note(NoteStatus::Draft);
    let r = push(&f.client, &dev, &t, vec![change(0, &signed), change(0, &draft)]).await;
    assert_eq!(r, [ChangeOutcome::Applied { version: 1 }, ChangeOutcome::Applied { version: 1 }]);
    let in_error = NoteStatus::EnteredInError { reason: "Wrong patient".into(), at: now };
    // The text cannot change with it, nor the kind.
    let rewritten = Note { text: "Something else".into(), status: in_error.clone(), ..signed.clone() };
    assert_eq!(rejected(&push(&f.client, &dev, &t, vec![change(1, &rewritten)]).await[0]), "note.signed");
    let rekinded = Note { kind: NoteKind::Progress, status: in_error.clone(), ..signed.clone() };
    assert_ne!(
        push(&f.client, &dev, &t, vec![change(1, &rekinded)]).await[0],
        ChangeOutcome::Applied { version: 2 }
    );
    // A draft is edited, not marked.
    let draft_marked = Note { status: in_error.clone(), ..draft.clone() };
    assert_eq!(
        rejected(&push(&f.client, &dev, &t, vec![change(1, &draft_marked)]).await[0]),
        "note.not_signed"
    );
    // Another user cannot mark it (as themselves or in the author's name).
    let other_tokens = f.login(&dev, "nurse.other").await;
    let (other, other_id) = (other_tokens.access_token.clone(), other_tokens.user.id.parse().unwrap());
    let theirs = Note { author_id: other_id, status: in_error.clone(), ..signed.clone() };
    assert_eq!(
        rejected(&push(&f.client, &dev, &other, vec![change(1, &theirs)]).await[0]),
        "sync.not_author"
    );
    let in_my_name = Note { status: in_error.clone(), ..signed.clone() };
    assert_eq!(
        rejected(&push(&f.client, &dev, &other, vec![change(1, &in_my_name)]).await[0]),
        "sync.not_author"
    );
    // The author, with everything else unchanged: applied; after that the note takes no change.
    let marked = Note { status: in_error.clone(), ..signed.clone() };
    assert_eq!(
        push(&f.client, &dev, &t, vec![change(1, &marked)]).await,
        [ChangeOutcome::Applied { version: 2 }]
    );
    let back = Note { status: NoteStatus::Signed { signed_at: now }, ..signed.clone() };
    assert_eq!(rejected(&push(&f.client, &dev, &t, vec![change(2, &back)]).await[0]), "note.signed");
    // The reason is sealed: not in the trail's export.
    let mut out = Vec::new();
    chartroom_server::audit::export(
        &*f.storage,
        &chartroom_server::audit::ExportFilter::default(),
        chartroom_server::audit::ExportFormat::Jsonl,
        &mut out,
        wall_now(),
    )
    .unwrap();
    assert!(!contains(&out, b"Wrong patient"));
}

async fn push(
    client: &ServerClient,
    dev: &DeviceIdentity,
    token: &str,
    changes: Vec<chartroom_protocol::Change>,
) -> Vec<chartroom_protocol::ChangeOutcome> {
    let batch = chartroom_protocol::PushBatch { changes };
    let r: chartroom_protocol::PushResponse =
        client.post_signed(dev, token, "/v1/sync/push", &batch).await.unwrap();
    r.results.into_iter().map(|r| r.outcome).collect()
}
