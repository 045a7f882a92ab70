//! Chartroom's end-to-end test package. The tests live in `tests/`; this library holds what they
//! share.

#![forbid(unsafe_code)]

use std::sync::Arc;

use chartroom_station::{DeviceSecretStore, MemoryKeystore, OsKeyring};

/// The OS keyring (Secret Service). Without one, an in-memory keystore — unless
/// `CHARTROOM_REQUIRE_KEYRING` is set (as in CI), so that these tests can never silently run
/// without the real keyring there.
pub fn keystore() -> Arc<dyn DeviceSecretStore> {
    match OsKeyring::connect() {
        Ok(k) => Arc::new(k),
        Err(_) if std::env::var_os("CHARTROOM_REQUIRE_KEYRING").is_none() => {
            Arc::new(MemoryKeystore::default())
        }
        Err(e) => panic!("CHARTROOM_REQUIRE_KEYRING is set but the OS keyring is unavailable: {e}"),
    }
}

/// A new, empty PostgreSQL database on the test cluster named by `CHARTROOM_TEST_DATABASE_URL`
/// (`scripts/test` starts one with `scripts/pg-test-cluster`), as a URL for `--database-url`.
/// Without that variable: `None`, and the caller skips — unless `CHARTROOM_REQUIRE_POSTGRES` is set
/// (as in CI), so that the PostgreSQL tests can never silently not run there.
pub fn fresh_postgres() -> Option<String> {
    let Ok(admin) = std::env::var("CHARTROOM_TEST_DATABASE_URL") else {
        assert!(
            std::env::var_os("CHARTROOM_REQUIRE_POSTGRES").is_none(),
            "CHARTROOM_REQUIRE_POSTGRES is set but CHARTROOM_TEST_DATABASE_URL is not"
        );
        eprintln!("skipped: no PostgreSQL test cluster (CHARTROOM_TEST_DATABASE_URL)");
        return None;
    };
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    Some(chartroom_server::storage::PgStorage::create_database(&admin, &name).expect("a test database"))
}

/// Runs SQL through `psql` on the database at `url` (as a DBA would), returning standard output.
pub fn psql(url: &str, sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", url, "-c", sql])
        .output()
        .expect("psql runs");
    assert!(out.status.success(), "psql failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A chart reduced to what must converge: every record's id, version and content, in id order.
pub fn canonical(c: &chartroom_domain::Chart) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut add = |id: uuid::Uuid, v: Result<serde_json::Value, serde_json::Error>| {
        out.insert(id.to_string(), v.map(|v| v.to_string()).unwrap_or_default());
    };
    add(c.patient.id, serde_json::to_value(&c.patient));
    c.allergies.iter().for_each(|r| add(r.id, serde_json::to_value(r)));
    c.conditions.iter().for_each(|r| add(r.id, serde_json::to_value(r)));
    c.medications.iter().for_each(|r| add(r.id, serde_json::to_value(r)));
    c.observations.iter().for_each(|r| add(r.id, serde_json::to_value(r)));
    c.notes.iter().for_each(|r| add(r.id, serde_json::to_value(r)));
    out
}

/// A binary of this workspace's build (built with the workspace's tests), as a command.
fn workspace_binary(name: &str) -> std::process::Command {
    let exe = std::env::current_exe().expect("the test's own path");
    let bin = exe.parent().and_then(std::path::Path::parent).map(|d| d.join(name));
    match bin {
        Some(bin) if bin.exists() => std::process::Command::new(bin),
        _ => panic!("build {name} first (cargo test --workspace builds it)"),
    }
}

/// A `chartroom-server` binary of this build, as a command.
pub fn server_command() -> std::process::Command {
    workspace_binary("chartroom-server")
}

/// A `chartroom-station` binary of this build, as a command.
pub fn station_command() -> std::process::Command {
    workspace_binary("chartroom-station")
}

/// Runs `command` with `stdin` written to it; its whole output.
pub fn run_with_stdin(mut command: std::process::Command, stdin: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child =
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawns");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("writes stdin");
    child.wait_with_output().expect("runs")
}

/// Runs `chartroom-server init` with `args` (at least `--data-dir`); the certificate fingerprint it
/// prints.
pub fn init_server(args: &[&str]) -> String {
    let out = admin(&[&["init"], args].concat(), None);
    out.lines().find_map(|l| l.strip_prefix("fingerprint: ")).expect("a fingerprint").trim().to_owned()
}

/// Runs a `chartroom-server` command that must succeed; its standard output.
pub fn admin(args: &[&str], stdin: Option<&str>) -> String {
    let mut command = server_command();
    command.args(args);
    let out = run_with_stdin(command, stdin.unwrap_or(""));
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Whether the real OS keyring is reachable for the binaries' tests. Without one they skip —
/// unless `CHARTROOM_REQUIRE_KEYRING` is set (as in CI), where that is a failure.
pub fn os_keyring_or_skip() -> bool {
    if OsKeyring::connect().is_ok() {
        return true;
    }
    assert!(std::env::var_os("CHARTROOM_REQUIRE_KEYRING").is_none(), "the OS keyring is required");
    eprintln!("skipped: no OS keyring");
    false
}

/// A server set up through its command line in `DIR/server` and serving: `users` (username, role,
/// password; unit ICU), `patients` synthetic patients on ICU, and a one-time token for a station
/// named `device` on ICU.
#[derive(Debug)]
pub struct CliServer {
    pub data: std::path::PathBuf,
    pub fingerprint: String,
    pub token: String,
    pub serving: Serving,
}

impl CliServer {
    pub fn start(
        dir: &std::path::Path,
        users: &[(&str, &str, &str)],
        patients: u64,
        device: &str,
    ) -> CliServer {
        let data = dir.join("server");
        let d = data.to_str().expect("a UTF-8 temp path");
        let fingerprint = init_server(&["--data-dir", d]);
        for (name, role, password) in users {
            let args = ["user", "add", "--data-dir", d, "--username", name, "--role", role, "--unit", "ICU"];
            admin(&[&args[..], &["--password-stdin"]].concat(), Some(&format!("{password}\n")));
        }
        if patients > 0 {
            admin(&["seed", "--data-dir", d, "--patients", &patients.to_string(), "--units", "ICU"], None);
        }
        let token = admin(
            &["device", "token", "--data-dir", d, "--name", device, "--profile", "station", "--unit", "ICU"],
            None,
        )
        .trim()
        .to_owned();
        let serving = Serving::start(&data);
        CliServer { data, fingerprint, token, serving }
    }

    /// The data directory, for `--data-dir`.
    pub fn dir(&self) -> &str {
        self.data.to_str().expect("a UTF-8 temp path")
    }
}

/// A `chartroom-server serve` process, stopped when dropped.
#[derive(Debug)]
pub struct Serving {
    child: std::process::Child,
    pub url: String,
}

impl Serving {
    pub fn start(dir: &std::path::Path) -> Serving {
        Serving::start_with_env(dir, &[])
    }

    /// [`Serving::start`] with extra environment variables (an HSM's configuration).
    pub fn start_with_env(dir: &std::path::Path, env: &[(&str, &std::ffi::OsStr)]) -> Serving {
        Serving::start_logged(dir, env, std::process::Stdio::null())
    }

    /// [`Serving::start_with_env`] with the server's standard error (its log) going to `stderr`.
    pub fn start_logged(
        dir: &std::path::Path,
        env: &[(&str, &std::ffi::OsStr)],
        stderr: std::process::Stdio,
    ) -> Serving {
        use std::io::BufRead;
        let mut child = server_command()
            .envs(env.iter().copied())
            .args(["serve", "--data-dir", &dir.display().to_string(), "--listen", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("serve starts");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("reads the first line");
        let addr =
            line.trim().strip_prefix("listening on https://").expect("the server announces its address");
        let port = addr.rsplit_once(':').expect("host:port").1;
        Serving { child, url: format!("https://localhost:{port}") }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` synthetic charts from generator seed `seed`; the first is a canary whose name and MRN occur
/// nowhere else.
pub fn charts_with_canary(seed: u64, n: u64) -> Vec<chartroom_domain::Chart> {
    let config = chartroom_synth::SynthConfig::new(seed, chartroom_server::wall_now());
    let mut charts: Vec<chartroom_domain::Chart> =
        (0..n).map(|i| chartroom_synth::patient(&config, i)).collect();
    if let Some(canary) = charts.first_mut() {
        canary.patient.name =
            chartroom_domain::HumanName { family: "Canaryfieldova".into(), given: "Zephyrine".into() };
        canary.patient.mrn = "MRN-CANARY-4242".into();
    }
    charts
}

/// Asserts that `text` (what a reader of `place` sees) shows no name or MRN of `charts`, neither as
/// text nor as hex. Only strings of six bytes or more: a shorter one (a given name like "Mia"), or
/// its hex, turns up by chance in megabytes of ciphertext and proves nothing.
pub fn assert_no_phi(text: &str, charts: &[chartroom_domain::Chart], place: &str) {
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    for c in charts {
        for phi in [&c.patient.name.family, &c.patient.name.given, &c.patient.mrn]
            .into_iter()
            .filter(|p| p.len() >= 6)
        {
            assert!(!text.contains(phi.as_str()), "a patient's {phi:?} is readable in {place}");
            assert!(!text.contains(&hex(phi)), "a patient's {phi:?} is readable as hex in {place}");
        }
    }
}

/// A tmpfs of a given size mounted on a fresh directory, unmounted on drop: a real small or
/// read-only file system for I/O fault tests. Mounting needs root (CI runs as root) or passwordless
/// sudo (the mount is then owned by the user); without either, [`Tmpfs::mount`] says the test was
/// skipped, unless `CHARTROOM_REQUIRE_MOUNT=1` makes that a failure.
#[derive(Debug)]
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

/// `mount`/`umount` as root: directly, or through `sudo -n` for another user.
fn as_root(program: &str) -> std::process::Command {
    if id("-u") == "0" {
        std::process::Command::new(program)
    } else {
        let mut c = std::process::Command::new("sudo");
        c.args(["-n", program]);
        c
    }
}

fn id(flag: &str) -> String {
    std::process::Command::new("id")
        .arg(flag)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

impl Tmpfs {
    pub fn mount(kib: u64) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let options = format!("size={kib}k,mode=0700,uid={},gid={}", id("-u"), id("-g"));
        let ok = as_root("mount")
            .args(["-t", "tmpfs", "-o", &options, "tmpfs"])
            .arg(dir.path())
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(Tmpfs { dir });
        }
        assert!(
            std::env::var("CHARTROOM_REQUIRE_MOUNT").as_deref() != Ok("1"),
            "mounting a tmpfs failed (I/O fault tests need root or passwordless sudo)"
        );
        eprintln!("SKIPPED: mounting a tmpfs needs root or passwordless sudo");
        None
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// `ro` or `rw`.
    pub fn remount(&self, mode: &str) {
        let out = as_root("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(self.path())
            .output()
            .expect("mount");
        assert!(out.status.success(), "remount {mode}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = as_root("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Fills the file system at `dir` to the last byte; returns the filler file (remove it to free
/// the space).
pub fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("a filler file");
    let block = vec![0u8; 4096];
    loop {
        match f.write_all(&block).and_then(|()| f.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
    while f.write_all(&[0]).is_ok() {}
    path
}
