//! FHIR on the server: `import-fhir` (R4 Bundles such as Synthea writes, each file all or nothing)
//! and `export-fhir` (Bulk Data NDJSON, one file per resource type, readable by the server's user
//! only — an export is PHI).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use chartroom_domain::{Chart, Timestamp};
use uuid::Uuid;

use crate::auth::Origin;
use crate::phi::RecordKeys;
use crate::records::{load_charts, LoadReport};
use crate::storage::{RecordKind, Storage};
use crate::ServerError;

/// Who imported records are attributed to (the import itself, not a clinician).
pub const IMPORTER_ID: Uuid = Uuid::from_u128(0x0196_0000_0000_7000_8000_1000_0000_0001);

/// Largest bundle file accepted (Synthea's biggest patients are a few tens of MiB).
pub const MAX_BUNDLE_BYTES: u64 = 256 * 1024 * 1024;

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Records imported per FHIR resource type.
    pub imported: BTreeMap<String, u64>,
    /// (resource type, count, reason) of what was skipped.
    pub skipped: Vec<(String, u64, String)>,
    pub patients: LoadReport,
}

/// Imports bundle files: all parsed first, then stored in one transaction, so a malformed file
/// (named with its offending entry) imports nothing at all.
pub fn import_files(
    storage: &dyn Storage,
    keys: &RecordKeys,
    files: &[&Path],
    default_unit: &str,
    now: Timestamp,
) -> Result<ImportSummary, ServerError> {
    let mut options = chartroom_fhir::ImportOptions::new(IMPORTER_ID);
    options.default_unit = default_unit.to_owned();
    let mut charts: Vec<Chart> = Vec::new();
    let mut summary = ImportSummary::default();
    for (i, path) in files.iter().enumerate() {
        // Files are named by position only: Synthea names its files after the patient.
        let name = format!("file {}", i + 1);
        let size =
            fs::metadata(path).map_err(|e| ServerError::Import(format!("{name}: {}", e.kind())))?.len();
        if size > MAX_BUNDLE_BYTES {
            return Err(ServerError::Import(format!("{name}: larger than {} MiB", MAX_BUNDLE_BYTES >> 20)));
        }
        let bytes = fs::read(path).map_err(|e| ServerError::Import(format!("{name}: {}", e.kind())))?;
        // Beds are numbered per file; keep them distinct across files.
        options.bed_prefix = format!("I{}-", i + 1);
        let import = chartroom_fhir::import_bundle(&bytes, &options)
            .map_err(|e| ServerError::Import(format!("{name}: {e} [{}]", e.code())))?;
        for (t, n) in import.imported {
            *summary.imported.entry(t).or_default() += n;
        }
        for s in import.skipped {
            summary.skipped.push((s.resource_type, s.count, s.reason));
        }
        charts.extend(import.charts);
    }
    summary.patients = load_charts(storage, keys, &charts)?;
    let mut event = crate::audit::event(now, "import", "fhir", "ok", &Origin::default());
    event.resource_id = Some(format!("{} patients", summary.patients.imported));
    storage.append_events(&[event])?;
    Ok(summary)
}

/// Writes every patient as FHIR Bulk Data NDJSON into `out` (created 0700, files 0600; refused if it
/// already holds an export). Returns resources written per type.
pub fn export_all(
    storage: &dyn Storage,
    keys: &RecordKeys,
    out: &Path,
    now: Timestamp,
) -> Result<BTreeMap<&'static str, u64>, ServerError> {
    fs::create_dir_all(out)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(out, fs::Permissions::from_mode(0o700))?;
    }
    if fs::read_dir(out)?.flatten().any(|e| e.path().extension().is_some_and(|x| x == "ndjson")) {
        return Err(ServerError::Io("the output directory already holds an export".into()));
    }
    let mut files: BTreeMap<&'static str, fs::File> = BTreeMap::new();
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut after = None;
    loop {
        let ids = storage.patient_ids(after, 500)?;
        let Some(last) = ids.last() else { break };
        after = Some(*last);
        let mut charts = Vec::with_capacity(ids.len());
        for id in ids {
            let patient =
                storage.patient(id)?.ok_or(ServerError::Internal("patient vanished during export"))?;
            let records = storage.records(id, &RecordKind::ALL, usize::MAX)?;
            charts.push(keys.open_chart(&patient, &records)?);
        }
        for (resource_type, lines) in chartroom_fhir::export_ndjson(&charts) {
            let file = match files.entry(resource_type) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(private_file(&out.join(format!("{resource_type}.ndjson")))?)
                }
            };
            file.write_all(lines.as_bytes())?;
            *counts.entry(resource_type).or_default() += lines.lines().count() as u64;
        }
    }
    for file in files.values() {
        file.sync_all()?;
    }
    let mut event = crate::audit::event(now, "export", "fhir", "ok", &Origin::default());
    event.resource_id = Some(format!("{} patients", counts.get("Patient").copied().unwrap_or(0)));
    storage.append_events(&[event])?;
    Ok(counts)
}

fn private_file(path: &Path) -> Result<fs::File, ServerError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    Ok(options.open(path)?)
}
