//! The server over real TLS: `init` on a temp dir, `start` on port 0, and a rustls client that pins
//! the certificate fingerprint the way stations will. Plus the binary's CLI contract.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

mod conformance;

use chartroom_client::PinnedCertificate;
use chartroom_server::{init, start, DataDir, InitOptions, ServerError};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn client(
    fingerprint: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCertificate::new(fingerprint).unwrap()))
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn get(
    connector: &tokio_rustls::TlsConnector,
    addr: std::net::SocketAddr,
    path: &str,
) -> std::io::Result<String> {
    request(connector, addr, &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"))
        .await
}

async fn post_json(
    connector: &tokio_rustls::TlsConnector,
    addr: std::net::SocketAddr,
    path: &str,
    body: &str,
) -> std::io::Result<String> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    request(connector, addr, &(head + body)).await
}

async fn request(
    connector: &tokio_rustls::TlsConnector,
    addr: std::net::SocketAddr,
    raw: &str,
) -> std::io::Result<String> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut tls = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await?;
    tls.write_all(raw.as_bytes()).await?;
    let mut response = String::new();
    tls.read_to_string(&mut response).await?;
    Ok(response)
}

// hipaa (e)(1) (e)(2)(ii): the server speaks TLS 1.3 only; TLS 1.2 and another certificate than the pinned
//   one are refused
#[tokio::test]
async fn health_over_pinned_tls13_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path().join("server"));
    let report = init(&dir, &InitOptions::default()).unwrap();
    assert!(report.fingerprint.starts_with("sha256:") && report.fingerprint.len() == 7 + 64);
    assert_eq!(dir.fingerprint().unwrap(), report.fingerprint);

    let server = start(&dir, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let ok =
        get(&client(&report.fingerprint, &[&rustls::version::TLS13]), server.addr, "/health").await.unwrap();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let body = ok.split("\r\n\r\n").nth(1).unwrap();
    let health: chartroom_protocol::Health = serde_json::from_str(body).unwrap();
    assert_eq!(health.api_version, chartroom_protocol::API_VERSION);

    // Another certificate (a different pin) is refused even though the server is reachable.
    let other = "sha256:".to_string() + &"0".repeat(64);
    assert!(get(&client(&other, &[&rustls::version::TLS13]), server.addr, "/health").await.is_err());
    // TLS 1.2 is refused by default.
    assert!(get(&client(&report.fingerprint, &[&rustls::version::TLS12]), server.addr, "/health")
        .await
        .is_err());
    // Unknown paths are 404, not a crash.
    let missing =
        get(&client(&report.fingerprint, &[&rustls::version::TLS13]), server.addr, "/nope").await.unwrap();
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");

    server.shutdown(Duration::from_secs(2)).await.unwrap();
}

/// What an independent TLS implementation (the `openssl` command) can negotiate with the server:
/// TLS 1.3 with its three AEAD suites and nothing else — not TLS 1.0, 1.1 or 1.2 with any cipher
/// (even at OpenSSL's most permissive security level), nor the CCM suites.
// hipaa (e)(1) (e)(2)(ii): probed by OpenSSL, the server accepts only TLS 1.3 with AES-GCM or
//   ChaCha20-Poly1305; TLS 1.0–1.2 and weaker suites are refused
#[tokio::test]
async fn an_independent_tls_client_negotiates_only_tls13_aead_suites() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path().join("server"));
    init(&dir, &InitOptions::default()).unwrap();
    let server = start(&dir, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let port = server.addr.port();
    let probe = move |args: Vec<&'static str>| {
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new("openssl")
                .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-servername", "localhost"])
                .args(args)
                .stdin(std::process::Stdio::null())
                .output()
                .expect("the openssl command (scripts/setup-debian installs it)");
            let text =
                String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
            // "New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384" on success; a refusal is the server's
            // alert ("alert handshake failure", "alert protocol version"), not a local failure to offer.
            let negotiated = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("New, "))
                .filter(|l| !l.contains("(NONE)"))
                .map(str::to_string);
            assert!(negotiated.is_some() || text.contains(" alert "), "no server alert: {text}");
            negotiated
        })
    };
    let weak = "DEFAULT:@SECLEVEL=0";
    for version in ["-tls1", "-tls1_1", "-tls1_2"] {
        let got = probe(vec![version, "-cipher", weak]).await.unwrap();
        assert_eq!(got, None, "{version} was accepted");
    }
    for (suite, accepted) in [
        ("TLS_AES_256_GCM_SHA384", true),
        ("TLS_AES_128_GCM_SHA256", true),
        ("TLS_CHACHA20_POLY1305_SHA256", true),
        ("TLS_AES_128_CCM_SHA256", false),
        ("TLS_AES_128_CCM_8_SHA256", false),
    ] {
        let got = probe(vec!["-tls1_3", "-ciphersuites", suite]).await.unwrap();
        match accepted {
            true => assert_eq!(got.as_deref(), Some(format!("TLSv1.3, Cipher is {suite}").as_str())),
            false => assert_eq!(got, None, "{suite} was accepted"),
        }
    }
    server.shutdown(Duration::from_secs(2)).await.unwrap();
}

#[test]
fn init_refuses_an_initialised_directory_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path().join("server"));
    init(&dir, &InitOptions::default()).unwrap();
    let snapshot = || {
        let mut files = Vec::new();
        for sub in ["", "tls", "keys"] {
            for e in std::fs::read_dir(dir.path().join(sub)).unwrap() {
                let p = e.unwrap().path();
                if p.is_file() {
                    files.push((p.clone(), std::fs::read(&p).unwrap()));
                }
            }
        }
        files.sort();
        files
    };
    let before = snapshot();
    assert!(matches!(init(&dir, &InitOptions::default()), Err(ServerError::AlreadyInitialised)));
    assert!(snapshot() == before, "a second init changed files");
    // Secrets are private to the server's user.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["keys/master.key", "keys/signing.key", "keys/recovery.key", "tls/key.pem", "server.db"] {
            let mode = std::fs::metadata(dir.path().join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
    }
    // A data directory made before recovery existed gets a recovery key at first need, once.
    let recovery = dir.recovery_keys().unwrap().public();
    std::fs::remove_file(dir.path().join("keys/recovery.key")).unwrap();
    let fresh = dir.recovery_keys().unwrap().public();
    assert_ne!(fresh, recovery);
    assert_eq!(dir.recovery_keys().unwrap().public(), fresh, "made once, then read");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("keys/recovery.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The database file does not open without the key derived from the master key.
    let conn = rusqlite::Connection::open(dir.database_path()).unwrap();
    assert!(conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)).is_err());
}

#[test]
fn cli_init_then_serve_then_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("srv");
    let bin = env!("CARGO_BIN_EXE_chartroom-server");
    let out = Command::new(bin).args(["init", "--data-dir", data.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(line.starts_with("fingerprint: sha256:") && line.trim_end().len() == 20 + 64, "{line}");

    let again = Command::new(bin).args(["init", "--data-dir", data.to_str().unwrap()]).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    let err = String::from_utf8(again.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");

    let mut child = Command::new(bin)
        .args(["serve", "--data-dir", data.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.starts_with("listening on https://127.0.0.1:"), "{first}");
    let port: u16 = first.trim_end().rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(port, 0);

    // The admin CLI works against the same database while the server runs.
    let data_arg = data.to_str().unwrap();
    let run = |args: &[&str], stdin: &str| {
        let mut c = Command::new(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let password = "night-shift-kettle-77";
    run(
        &[
            "user",
            "add",
            "--data-dir",
            data_arg,
            "--username",
            "kim.rn",
            "--role",
            "nurse",
            "--unit",
            "ICU",
            "--password-stdin",
        ],
        &format!("{password}\n"),
    );
    let token =
        run(&["device", "token", "--data-dir", data_arg, "--name", "icu-1", "--profile", "station"], "");
    let seeded = run(&["seed", "--data-dir", data_arg, "--patients", "12"], "");
    assert_eq!(seeded.trim(), "seeded 12 patients (0 already present)");
    let again = run(&["seed", "--data-dir", data_arg, "--patients", "12"], "");
    assert_eq!(again.trim(), "seeded 0 patients (12 already present)");

    let fingerprint = line.trim_end().strip_prefix("fingerprint: ").unwrap().to_string();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let census: chartroom_protocol::CensusPage = runtime.block_on(async {
        let client =
            chartroom_client::ServerClient::new(&format!("https://localhost:{port}"), &fingerprint).unwrap();
        let probe = chartroom_client::DeviceIdentity::new(String::new(), &[9u8; 32]);
        let enrolled = client.enroll(token.trim(), &probe.public_key_hex()).await.unwrap();
        let device = chartroom_client::DeviceIdentity::new(enrolled.device_id, &[9u8; 32]);
        let tokens = client.login(&device, "kim.rn", password).await.unwrap();
        client.get(&device, &tokens.access_token, "/v1/units/ICU/census").await.unwrap()
    });
    assert_eq!(census.patients.len(), 6, "half of the 12 seeded patients are on ICU");

    let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(term.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful shutdown exits 0, got {status:?}");

    // The admin actions, the serve's key access and the station's login are all in the trail.
    let storage = DataDir::new(&data).open_storage().unwrap();
    let actions: Vec<String> =
        storage.audit_page(0, 1000).unwrap().into_iter().map(|s| s.entry.event.action).collect();
    for expected in ["user_add", "device_token", "key_access", "enroll", "login", "view"] {
        assert!(actions.iter().any(|a| a == expected), "no `{expected}` in {actions:?}");
    }
}

// hipaa (a)(2)(i): usernames are unique (a second account with the same name is refused) and passwords are
//   policy-checked
#[test]
fn accounts_are_unique_and_policed() {
    use chartroom_crypto::Password;
    use chartroom_domain::{Role, Timestamp};
    use chartroom_server::users::add_user;

    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path().join("server"));
    init(&dir, &InitOptions::default()).unwrap();
    let storage = dir.open_storage().unwrap();
    let now = Timestamp(1_795_764_183_000);
    let pw = Password::from("violet trains at dawn");
    let ana = add_user(&*storage, "Ana.Nurse", Role::Nurse, vec!["ICU".into()], &pw, now).unwrap();
    assert_eq!(ana.role, Role::Nurse);

    // Case-insensitively unique.
    assert!(matches!(
        add_user(&*storage, "ana.nurse", Role::Physician, vec![], &pw, now),
        Err(ServerError::UserExists)
    ));
    // Password policy: each rule gives a clear error naming the field, never the password.
    for (name, bad) in [("bo.doc", "short"), ("bo.doc", "bo.doc-is-my-password"), ("bo.doc", "password1234")]
    {
        let err = add_user(&*storage, name, Role::Physician, vec![], &Password::from(bad), now).unwrap_err();
        assert!(matches!(err, ServerError::Invalid(ref v) if v.field == "password"), "{err:?}");
        assert!(!err.to_string().contains(bad));
    }
    assert!(matches!(
        add_user(&*storage, "bad name;", Role::Admin, vec![], &pw, now),
        Err(ServerError::Invalid(ref v)) if v.field == "username"
    ));

    storage.set_disabled("ANA.NURSE", true).unwrap();
    let users = storage.list_users().unwrap();
    assert_eq!(users.len(), 1);
    assert!(users[0].disabled);
    assert_eq!(users[0].units, vec!["ICU".to_string()]);
    storage.set_disabled("ana.nurse", false).unwrap();
    assert!(!storage.list_users().unwrap()[0].disabled);
    assert!(matches!(storage.set_disabled("nobody", true), Err(ServerError::UnknownUser)));

    // The listing (CLI, JSON) never shows the password or its hash.
    drop(storage);
    let listing = Command::new(env!("CARGO_BIN_EXE_chartroom-server"))
        .args(["user", "list", "--data-dir", dir.path().to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(listing.status.success());
    let text = String::from_utf8(listing.stdout).unwrap();
    assert!(text.contains("Ana.Nurse") && !text.contains("argon2") && !text.contains("violet"));
}

#[test]
fn cli_user_add_reads_the_password_from_stdin() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("srv");
    let bin = env!("CARGO_BIN_EXE_chartroom-server");
    assert!(Command::new(bin)
        .args(["init", "--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap()
        .status
        .success());
    let add = |user: &str, pw: &str| {
        let mut child = Command::new(bin)
            .args([
                "user",
                "add",
                "--data-dir",
                data.to_str().unwrap(),
                "--username",
                user,
                "--role",
                "nurse",
            ])
            .args(["--unit", "ICU", "--unit", "MED", "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(format!("{pw}\n").as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let ok = add("cara", "a sufficiently long passphrase");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let dup = add("CARA", "a sufficiently long passphrase");
    assert_eq!(dup.status.code(), Some(1));
    let err = String::from_utf8(dup.stderr).unwrap();
    assert_eq!(err.lines().count(), 1);
    assert!(err.contains("already exists"), "{err}");
    let weak = add("dan", "tooshort");
    assert_eq!(weak.status.code(), Some(1));
    assert!(String::from_utf8(weak.stderr).unwrap().contains("at least 12 characters"));
}

#[test]
fn device_tokens_are_one_line_hashed_and_revocable() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("srv");
    let bin = env!("CARGO_BIN_EXE_chartroom-server");
    let d = data.to_str().unwrap();
    assert!(Command::new(bin).args(["init", "--data-dir", d]).output().unwrap().status.success());
    let token = |name: &str| {
        Command::new(bin)
            .args([
                "device",
                "token",
                "--data-dir",
                d,
                "--name",
                name,
                "--profile",
                "station",
                "--unit",
                "ICU",
            ])
            .output()
            .unwrap()
    };
    let first = token("icu-station-1");
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let t1 = String::from_utf8(first.stdout).unwrap();
    assert_eq!(t1.lines().count(), 1);
    let t1 = t1.trim();
    assert!(t1.starts_with("crt1_") && t1.len() == 5 + 64, "{t1}");
    // Re-issuing before enrollment gives a different token.
    let t2 = String::from_utf8(token("icu-station-1").stdout).unwrap();
    assert_ne!(t1, t2.trim());

    let list = Command::new(bin).args(["device", "list", "--data-dir", d, "--json"]).output().unwrap();
    let text = String::from_utf8(list.stdout).unwrap();
    assert!(text.contains("icu-station-1") && !text.contains(t1) && !text.contains(t2.trim()), "{text}");
    let devices: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(devices[0]["profile"], "station");
    assert!(devices[0]["revoked_at"].is_null());

    // Recovery is for enrolled devices only: one clear line otherwise.
    let recover = Command::new(bin)
        .args(["device", "recover", "--data-dir", d, "--name", "icu-station-1"])
        .output()
        .unwrap();
    assert_eq!(recover.status.code(), Some(1));
    let err = String::from_utf8(recover.stderr).unwrap();
    assert!(err.contains("not enrolled") && err.lines().count() == 1, "{err}");
    // Once enrolled, it can be: a one-time token, printed once, only its hash kept, audited.
    {
        let storage = DataDir::new(d).open_storage().unwrap();
        let hash = chartroom_server::auth::sha256(t2.trim());
        storage.enroll_device(&hash, &[9; 32], chartroom_server::wall_now()).unwrap();
    }
    let recover = Command::new(bin)
        .args(["device", "recover", "--data-dir", d, "--name", "icu-station-1"])
        .output()
        .unwrap();
    assert!(recover.status.success(), "{}", String::from_utf8_lossy(&recover.stderr));
    let t3 = String::from_utf8(recover.stdout).unwrap();
    assert!(t3.trim().starts_with("crv1_") && t3.lines().count() == 1, "{t3}");
    let export =
        Command::new(bin).args(["audit", "export", "--data-dir", d, "--format", "jsonl"]).output().unwrap();
    let trail = String::from_utf8(export.stdout).unwrap();
    assert!(trail.contains("device_recover_approve") && !trail.contains(t3.trim()), "{trail}");

    let revoke = Command::new(bin)
        .args(["device", "revoke", "--data-dir", d, "--name", "ICU-STATION-1"])
        .output()
        .unwrap();
    assert!(revoke.status.success());
    let text = String::from_utf8(
        Command::new(bin).args(["device", "list", "--data-dir", d, "--json"]).output().unwrap().stdout,
    )
    .unwrap();
    let devices: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(devices[0]["revoked_at"].is_number());
    // A revoked device gets no new token, and unknown devices are a clear error.
    let again = token("icu-station-1");
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8(again.stderr).unwrap().contains("already enrolled or revoked"));
    let unknown =
        Command::new(bin).args(["device", "revoke", "--data-dir", d, "--name", "nope"]).output().unwrap();
    assert_eq!(unknown.status.code(), Some(1));
    let bad_profile = Command::new(bin)
        .args(["device", "token", "--data-dir", d, "--name", "x", "--profile", "kiosk"])
        .output()
        .unwrap();
    assert!(!bad_profile.status.success());
}

// hipaa (d): device enrollment tokens work once and expire
#[tokio::test]
async fn enrollment_tokens_are_single_use_and_expire() {
    use chartroom_domain::{DeviceProfile, Timestamp};
    use chartroom_server::devices::issue_token;

    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path().join("server"));
    let report = init(&dir, &InitOptions::default()).unwrap();
    let storage = dir.open_storage().unwrap();
    let now = Timestamp(
        i64::try_from(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis(),
        )
        .unwrap(),
    );
    let day = Duration::from_secs(24 * 3600);
    let token =
        issue_token(&*storage, "icu-1", DeviceProfile::Station, vec!["ICU".into()], day, now).unwrap();
    let expired = issue_token(
        &*storage,
        "old-1",
        DeviceProfile::Laptop,
        vec![],
        Duration::from_secs(3600),
        Timestamp(now.0 - 2 * 86_400_000),
    )
    .unwrap();
    let revoked = issue_token(&*storage, "gone-1", DeviceProfile::Laptop, vec![], day, now).unwrap();
    storage.revoke_device("gone-1", now).unwrap();

    let server = start(&dir, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let c = client(&report.fingerprint, &[&rustls::version::TLS13]);
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let key_hex: String = key.verifying_key().as_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let body = |t: &str| format!(r#"{{"token":"{t}","device_public_key":"{key_hex}"}}"#);

    let ok = post_json(&c, server.addr, "/v1/devices/enroll", &body(&token)).await.unwrap();
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let resp: chartroom_protocol::EnrollResponse =
        serde_json::from_str(ok.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(
        (resp.name.as_str(), resp.profile.as_str(), resp.units.clone()),
        ("icu-1", "station", vec!["ICU".to_string()])
    );

    // The same token again, an expired one, a revoked device's, and a made-up one: all 401, same code.
    for t in [token.as_str(), expired.as_str(), revoked.as_str(), "crt1_nonsense"] {
        let r = post_json(&c, server.addr, "/v1/devices/enroll", &body(t)).await.unwrap();
        assert!(r.starts_with("HTTP/1.1 401"), "{r}");
        assert!(r.contains("device.invalid_token"));
    }
    // Malformed bodies and keys are 400 with a code, not a crash.
    let r = post_json(&c, server.addr, "/v1/devices/enroll", "{not json").await.unwrap();
    assert!(r.starts_with("HTTP/1.1 400") && r.contains("request.malformed"), "{r}");
    let r = post_json(&c, server.addr, "/v1/devices/enroll", r#"{"token":"x","device_public_key":"zz"}"#)
        .await
        .unwrap();
    assert!(r.starts_with("HTTP/1.1 400") && r.contains("request.invalid"), "{r}");

    let devices = storage.list_devices().unwrap();
    let icu = devices.iter().find(|d| d.name == "icu-1").unwrap();
    assert!(icu.enrolled_at.is_some());
    server.shutdown(Duration::from_secs(2)).await.unwrap();
}

/// `import-fhir` counts and skips; a malformed bundle imports nothing and names its entry;
/// `export-fhir` → `import-fhir` on a fresh server → `export-fhir` gives the same files.
#[test]
fn fhir_import_and_export_round_trip_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_chartroom-server");
    let cli = |args: &[&str]| Command::new(bin).args(args).output().unwrap();
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/../chartroom-fhir/tests/fixtures/synthea-like.json");
    let [a, b] = ["a", "b"].map(|n| tmp.path().join(n).to_str().unwrap().to_string());
    for d in [&a, &b] {
        assert!(cli(&["init", "--data-dir", d]).status.success());
    }

    // A bundle whose heart-rate value is missing: refused whole, entry named, no value quoted.
    let mut bundle: serde_json::Value = serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    let entries = bundle["entry"].as_array_mut().unwrap();
    let (index, hr) = entries
        .iter_mut()
        .enumerate()
        .find(|(_, e)| e["resource"]["code"]["coding"][0]["code"] == "8867-4")
        .unwrap();
    hr["resource"]["valueQuantity"].as_object_mut().unwrap().remove("value");
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, serde_json::to_vec(&bundle).unwrap()).unwrap();
    let out = cli(&["import-fhir", "--data-dir", &a, bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("entry {index} (Observation")) && err.contains("valueQuantity.value"),
        "{err}"
    );
    let storage = DataDir::new(&a).open_storage().unwrap();
    assert!(storage.patient_ids(None, 10).unwrap().is_empty(), "a refused bundle imported something");
    drop(storage);

    let out = cli(&["import-fhir", "--data-dir", &a, fixture]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = String::from_utf8(out.stdout).unwrap();
    for line in [
        "imported 3 Patient",
        "skipped 4 Encounter: resource type is not imported",
        "patients: 3 new, 0 already present",
    ] {
        assert!(report.lines().any(|l| l == line), "missing `{line}` in:\n{report}");
    }
    // Importing the same bundle again changes nothing.
    let again = String::from_utf8(cli(&["import-fhir", "--data-dir", &a, fixture]).stdout).unwrap();
    assert!(again.contains("patients: 0 new, 3 already present"), "{again}");

    let (out_a, out_b) = (tmp.path().join("export-a"), tmp.path().join("export-b"));
    assert!(cli(&["export-fhir", "--data-dir", &a, "--out", out_a.to_str().unwrap()]).status.success());
    let files: Vec<String> = std::fs::read_dir(&out_a)
        .unwrap()
        .map(|e| e.unwrap().path().to_str().unwrap().to_string())
        .filter(|p| p.ends_with(".ndjson"))
        .collect();
    assert_eq!(files.len(), 6, "{files:?}");
    let mut args = vec!["import-fhir", "--data-dir", &b];
    let patient_file = out_a.join("Patient.ndjson");
    // Bulk Data is one resource per line: wrap the lines into one collection bundle per export.
    let mut entries = Vec::new();
    for f in &files {
        for line in std::fs::read_to_string(f).unwrap().lines() {
            entries.push(
                serde_json::json!({ "resource": serde_json::from_str::<serde_json::Value>(line).unwrap() }),
            );
        }
    }
    assert!(patient_file.exists());
    let rebundled = tmp.path().join("rebundled.json");
    let bundle = serde_json::json!({ "resourceType": "Bundle", "type": "collection", "entry": entries });
    std::fs::write(&rebundled, serde_json::to_vec(&bundle).unwrap()).unwrap();
    args.push(rebundled.to_str().unwrap());
    let out = cli(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(cli(&["export-fhir", "--data-dir", &b, "--out", out_b.to_str().unwrap()]).status.success());
    for f in &files {
        let name = std::path::Path::new(f).file_name().unwrap();
        assert_eq!(std::fs::read(f).unwrap(), std::fs::read(out_b.join(name)).unwrap(), "{name:?} differs");
    }
    // The export is PHI: readable by the server's user only, and never silently overwritten.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&patient_file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert_eq!(
        cli(&["export-fhir", "--data-dir", &a, "--out", out_a.to_str().unwrap()]).status.code(),
        Some(1)
    );
}

/// The storage conformance suite against the embedded SQLCipher backend.
#[test]
fn sqlite_storage_conforms() {
    let tmp = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicUsize::new(0);
    conformance::run_all(|| {
        let path = tmp.path().join(format!("s{}.db", n.fetch_add(1, std::sync::atomic::Ordering::SeqCst)));
        Box::new(chartroom_server::storage::SqliteStorage::open(&path, &[4u8; 32]).unwrap())
    });
}

/// `init --tls-cert/--tls-key` uses the administrator's certificate; a key that does not belong to
/// it is refused and leaves the directory uninitialised.
#[tokio::test]
async fn init_with_a_given_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, names: Vec<String>| {
        let c = rcgen::generate_simple_self_signed(names).unwrap();
        let (cert, key) = (tmp.path().join(format!("{name}.crt")), tmp.path().join(format!("{name}.key")));
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        (cert, key, chartroom_client::fingerprint_of(c.cert.der()))
    };
    let (cert, key, fingerprint) = write("hospital", vec!["localhost".into()]);
    let (_, other_key, _) = write("other", vec!["localhost".into()]);

    let bad = DataDir::new(tmp.path().join("bad"));
    let options = InitOptions { tls: Some((cert.clone(), other_key)), ..InitOptions::default() };
    assert!(matches!(init(&bad, &options), Err(ServerError::Tls(_))));
    assert!(matches!(bad.read_config(), Err(ServerError::NotInitialised)));

    let dir = DataDir::new(tmp.path().join("good"));
    let report = init(&dir, &InitOptions { tls: Some((cert, key)), ..InitOptions::default() }).unwrap();
    assert_eq!(report.fingerprint, fingerprint);
    let server = start(&dir, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let client = chartroom_client::ServerClient::new(
        &format!("https://localhost:{}", server.addr.port()),
        &fingerprint,
    )
    .unwrap();
    client.health().await.unwrap();
    server.shutdown(Duration::from_secs(2)).await.unwrap();
}

/// `init --master-key keyring` keeps the master key in the OS keyring: no key file beside the
/// data, the server starts with it, and without the keyring entry nothing opens.
#[test]
fn master_key_in_the_os_keyring() {
    let keyring = match chartroom_keyring::OsKeyring::connect() {
        Ok(k) => k,
        Err(e) if std::env::var_os("CHARTROOM_REQUIRE_KEYRING").is_none() => {
            eprintln!("skipping: no OS keyring ({e}); set CHARTROOM_REQUIRE_KEYRING=1 to make this fatal");
            return;
        }
        Err(e) => panic!("CHARTROOM_REQUIRE_KEYRING is set but the OS keyring is unavailable: {e}"),
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataDir::new(tmp.path().join("server"));
    init(&dir, &InitOptions { master_key_in_keyring: true, ..InitOptions::default() }).unwrap();
    assert!(!dir.path().join("keys/master.key").exists());
    let chartroom_server::MasterKeyStore::Keyring { server_id } = dir.read_config().unwrap().master_key
    else {
        panic!("config does not name the keyring");
    };
    let storage = dir.open_storage().unwrap();
    assert!(storage.list_users().unwrap().is_empty());
    drop(storage);
    keyring.remove("chartroom-server", &format!("master-key:{server_id}")).unwrap();
    assert!(matches!(dir.open_storage(), Err(ServerError::Keyring(_))));
}
