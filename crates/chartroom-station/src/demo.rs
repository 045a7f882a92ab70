//! The first-run demo: a vault with synthetic patients is created, locked, refused with a wrong
//! password, unlocked, and a chart summary is printed.

use std::io::Write;
use std::sync::Arc;

use chartroom_crypto::{KdfParams, Password};
use chartroom_domain::{Chart, DeviceProfile, Timestamp, VitalSign};
use chartroom_store::StoreOptions;
use chartroom_synth::{patient, SynthConfig};
use uuid::Uuid;

use crate::profile::Profile;
use crate::vault::{LockedVault, NewVault};
use crate::DeviceSecretStore;

/// Demo credentials: a synthetic nurse account that exists only in demo profiles.
pub const DEMO_USERNAME: &str = "nurse.demo";
pub const DEMO_PASSWORD: &str = "demo-station-passphrase";

/// Runs the demo in `profile`, writing a human-readable account to `out`.
pub fn run(
    profile: Profile,
    keystore: Arc<dyn DeviceSecretStore>,
    patients: u64,
    now: Timestamp,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let password = Password::from(DEMO_PASSWORD);
    writeln!(out, "Creating an encrypted station vault in {}", profile.dir().display())?;
    writeln!(out, "  device secret -> system keyring ({})", keystore.backend())?;
    let mut vault = LockedVault::create(
        profile.clone(),
        keystore.clone(),
        NewVault {
            role: chartroom_domain::Role::Nurse,
            profile: DeviceProfile::Station,
            user_id: Uuid::new_v4(),
            username: DEMO_USERNAME,
            password: &password,
            kdf: KdfParams::DEFAULT,
            recovery: None,
            now,
            store: StoreOptions::default(),
        },
    )?;
    let config = SynthConfig::new(2026, now);
    let bundles: Vec<_> = (0..patients).map(|i| patient(&config, i)).collect();
    let rows: usize = bundles.iter().map(|b| b.row_count()).sum();
    vault.store().import(&bundles)?;
    writeln!(out, "  imported {patients} synthetic patients ({rows} records, PHI sealed per patient)")?;

    let census = vault.census(Some("ICU"), now)?;
    writeln!(out, "\nICU census ({} patients):", census.len())?;
    for row in census.iter().take(5) {
        let allergy = if row.allergy_count > 0 { "ALLERGY" } else { "" };
        writeln!(
            out,
            "  bed {:<4} {:<24} {:<10} {} {:<7}",
            row.bed,
            row.name,
            row.mrn,
            row.sex.letter(),
            allergy
        )?;
    }
    let first = census.first().map(|r| r.mrn.clone());

    let locked = vault.lock();
    writeln!(out, "\nLocked: database closed, data key and patient keys wiped from memory.")?;
    match locked.unlock(DEMO_USERNAME, &Password::from("not the password"), now) {
        Err(e) => writeln!(out, "Unlock with a wrong password: refused ({e}).")?,
        Ok(_) => anyhow::bail!("a wrong password unlocked the vault"),
    }
    let started = std::time::Instant::now();
    let mut vault = locked.unlock(DEMO_USERNAME, &password, now)?;
    writeln!(
        out,
        "Unlocked as {DEMO_USERNAME} in {} ms (Argon2id m=64 MiB t=3 + keyring + SQLCipher open).",
        started.elapsed().as_millis()
    )?;

    if let Some(mrn) = first {
        let chart = vault.chart_by_mrn(&mrn, 100, now)?;
        writeln!(out)?;
        write_chart_summary(&chart, now, out)?;
    }
    match vault.verify_audit()? {
        Ok(n) => writeln!(out, "\nAudit trail: {n} hash-chained entries on this station, intact.")?,
        Err(b) => writeln!(out, "\nAudit trail: {b}")?,
    }
    vault.lock();
    writeln!(out, "\nLocked again. Profile files: device.json, keyslots.json, cache.db (SQLCipher).")?;
    writeln!(out, "Log in with username `{DEMO_USERNAME}` and password `{DEMO_PASSWORD}`.")?;
    Ok(())
}

/// Prints the banner and the main sections of a chart.
pub fn write_chart_summary(chart: &Chart, now: Timestamp, out: &mut dyn Write) -> std::io::Result<()> {
    let p = &chart.patient;
    writeln!(
        out,
        "{}  MRN {}  DOB {} ({} y)  {}  {} bed {}",
        p.name,
        p.mrn,
        p.birth_date,
        p.birth_date.years_until(now),
        p.sex.letter(),
        p.unit,
        p.bed
    )?;
    if chart.allergies.is_empty() {
        writeln!(out, "Allergies: no known allergies")?;
    } else {
        let list: Vec<String> =
            chart.allergies.iter().map(|a| format!("{} ({})", a.substance, a.reaction)).collect();
        writeln!(out, "Allergies: {}", list.join(", "))?;
    }
    writeln!(out, "Problems:")?;
    for c in &chart.conditions {
        writeln!(out, "  - {} [SNOMED {}] {:?}", c.display, c.code, c.status)?;
    }
    writeln!(out, "Medications:")?;
    for m in &chart.medications {
        writeln!(out, "  - {} {} {} {}", m.medication, m.dose, m.route, m.frequency)?;
    }
    writeln!(out, "Latest vitals:")?;
    for v in VitalSign::ALL {
        if let Some(o) = chart.observations.iter().find(|o| o.vital == v) {
            let (lo, hi) = v.normal_range();
            let flag = if o.value < lo || o.value > hi { "  (!)" } else { "" };
            writeln!(out, "  {:<17} {:>6} {:<6} {}{}", v.label(), o.value, v.unit(), o.effective_at, flag)?;
        }
    }
    writeln!(out, "Notes: {}", chart.notes.len())?;
    if let Some(n) = chart.notes.first() {
        writeln!(out, "  [{:?}, {}] {}", n.kind, n.created_at, n.text)?;
    }
    Ok(())
}
