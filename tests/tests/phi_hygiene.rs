//! PHI hygiene end to end: a canary patient (a unique name, MRN, birth date and note text) runs
//! through every workflow of the real binaries at `CHARTROOM_LOG=debug` — enrollment, an online
//! login and sync, opening the chart, vitals (a refused value and a good one), a signed note, a
//! wrong password, an unknown MRN, audit verification and export, FHIR export, the server's whole
//! request log. No name, MRN, birth date or note text may appear in any log line, error message or
//! status output, in the name of any file either side writes (temporary files included: `TMPDIR`
//! points at a directory the test then reads whole), or in any temporary file's content.
//!
//! What a command exists to show (a chart on the screen, the FHIR export the administrator asked
//! for) is left out of the search by name; everything else a process prints is searched.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use chartroom_domain::Chart;
use chartroom_tests::{
    admin, charts_with_canary, os_keyring_or_skip, run_with_stdin, station_command, Serving,
};

const NURSE: (&str, &str) = ("canary.rn", "ward-canary-passphrase-7");
const NOTE: &str =
    "Canarynote: Zephyrine walked the corridor twice, settled, asked for her daughter Quillonette";

/// The canary's identifying values, each unique to it.
fn secrets(canary: &Chart) -> Vec<String> {
    vec![
        canary.patient.name.family.clone(),
        canary.patient.name.given.clone(),
        canary.patient.mrn.clone(),
        canary.patient.birth_date.to_string(),
        "Canarynote".into(),
        "Quillonette".into(),
    ]
}

/// The first secret `text` shows, in any letter case (screens print family names in capitals).
fn leak<'a>(text: &str, secrets: &'a [String]) -> Option<&'a String> {
    let lower = text.to_lowercase();
    secrets.iter().find(|s| lower.contains(&s.to_lowercase()))
}

fn assert_clean(text: &str, secrets: &[String], place: &str) {
    if let Some(s) = leak(text, secrets) {
        panic!("{s:?} appears in {place}:\n{text}");
    }
}

/// Every file under `dir`: its path and its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.push((p, bytes));
        }
    }
    out
}

// hipaa (a)(2)(iv) (b): a canary patient through every workflow at debug log level leaves no name,
//   MRN, birth date or note text in any log, error, status output, file name or temporary file
#[test]
fn a_canary_patient_leaves_no_phi_in_logs_errors_or_file_names() {
    if !os_keyring_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("tmp");
    std::fs::create_dir(&scratch).unwrap();
    let data = tmp.path().join("server");
    let d = data.to_str().unwrap();
    let env = [("CHARTROOM_LOG", std::ffi::OsStr::new("debug")), ("TMPDIR", scratch.as_os_str())];

    // The server: set up through its CLI, the canary among 30 patients.
    let fingerprint = chartroom_tests::init_server(&["--data-dir", d]);
    let charts = charts_with_canary(77, 30);
    let canary = &charts[0];
    let secrets = secrets(canary);
    {
        let dir = chartroom_server::DataDir::new(&data);
        let storage = dir.open_storage().unwrap();
        chartroom_server::records::load_charts(&*storage, &dir.record_keys().unwrap(), &charts).unwrap();
    }
    let units = ["--unit", "ICU", "--unit", "MED"];
    let add = ["user", "add", "--data-dir", d, "--username", NURSE.0, "--role", "nurse", "--password-stdin"];
    admin(&[&add[..], &units[..]].concat(), Some(&format!("{}\n", NURSE.1)));
    let token = admin(
        &[&["device", "token", "--data-dir", d, "--name", "ward-7", "--profile", "station"][..], &units[..]]
            .concat(),
        None,
    );
    let server_log = tmp.path().join("server.log");
    let serving = Serving::start_logged(&data, &env, std::fs::File::create(&server_log).unwrap().into());

    // The station, through its CLI: (arguments, stdin, whether its standard output is meant to show
    // PHI, whether the step must succeed).
    let profile = tmp.path().join("station");
    let p = profile.to_str().unwrap();
    let mrn = canary.patient.mrn.as_str();
    let login = format!("{}\n", NURSE.1);
    let note_input = format!("{}\n{NOTE}\n", NURSE.1);
    let steps: Vec<(Vec<&str>, String, bool, bool)> = vec![
        (
            vec!["enroll", "--server", &serving.url, "--fingerprint", &fingerprint, "--token", token.trim()],
            String::new(),
            false,
            true,
        ),
        (vec!["sync"], login.clone(), false, true),
        (vec!["chart", "--mrn", mrn], login.clone(), true, true),
        (vec!["vitals", "--mrn", mrn, "--hr", "400"], login.clone(), false, false),
        (vec!["vitals", "--mrn", mrn, "--hr", "84", "--spo2", "97"], login.clone(), false, true),
        (vec!["note", "--mrn", mrn, "--text-stdin", "--sign"], note_input, false, true),
        (vec!["chart", "--mrn", "MRN-NOT-HERE-1"], login.clone(), false, false),
        (vec!["sync"], login.clone(), false, true),
        (vec!["status"], login.clone(), false, true),
        (vec!["outbox"], login.clone(), false, true),
        (vec!["audit", "verify"], login.clone(), false, true),
        (vec!["sync"], "not-the-password-at-all\n".into(), false, false),
    ];
    for (args, stdin, shows_phi, succeeds) in &steps {
        let mut c = station_command();
        c.envs(env).args(["--profile-dir", p, "--username", NURSE.0]);
        if !stdin.is_empty() && args[0] != "enroll" {
            c.arg("--password-stdin");
        }
        c.args(args);
        let out = run_with_stdin(c, stdin);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.success(), *succeeds, "{args:?}: {stderr}");
        assert_clean(&stderr, &secrets, &format!("the station's stderr for {args:?}"));
        if !shows_phi {
            assert_clean(&stdout, &secrets, &format!("the station's output for {args:?}"));
        }
        if args[0] == "chart" && args[2] == mrn {
            // The search would find the patient here: this output is meant to show them.
            assert!(leak(&stdout, &secrets).is_some(), "{stdout}");
        } else {
            println!("{args:?}: {}", stderr.trim());
        }
    }

    // Server-side administration of the same data.
    let export = tmp.path().join("export");
    for args in [
        vec!["audit", "verify", "--data-dir", d],
        vec!["export-fhir", "--data-dir", d, "--out", export.to_str().unwrap()],
        vec!["user", "list", "--data-dir", d],
        vec!["device", "list", "--data-dir", d],
    ] {
        let mut c = chartroom_tests::server_command();
        c.envs(env).args(&args);
        let out = run_with_stdin(c, "");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert_clean(
            &String::from_utf8_lossy(&out.stdout),
            &secrets,
            &format!("the server's output for {args:?}"),
        );
        assert_clean(
            &String::from_utf8_lossy(&out.stderr),
            &secrets,
            &format!("the server's stderr for {args:?}"),
        );
    }
    // The export is what the administrator asked for: it does hold the patient (the search works).
    let exported: Vec<u8> = files(&export).into_iter().flat_map(|(_, b)| b).collect();
    assert!(String::from_utf8_lossy(&exported).contains(mrn), "the FHIR export holds the canary");
    drop(serving);

    let log = std::fs::read_to_string(&server_log).unwrap();
    assert!(
        log.contains("DEBUG chartroom_server::http: POST /v1/sync/push 200"),
        "a debug log was written:\n{log}"
    );
    assert!(log.contains("GET /v1/sync/pull"), "{log}");
    assert_clean(&log, &secrets, "the server's debug log");

    // No file either side wrote is named after the patient; temporary files hold nothing of them.
    for (path, bytes) in files(tmp.path()) {
        let rel = path.strip_prefix(tmp.path()).unwrap().display().to_string();
        assert_clean(&rel, &secrets, "a file name");
        if path.starts_with(&scratch) {
            assert_clean(&String::from_utf8_lossy(&bytes), &secrets, &format!("the temporary file {rel}"));
        }
    }
}
