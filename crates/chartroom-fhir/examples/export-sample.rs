//! Writes a FHIR Bulk Data export of synthetic charts to a directory (`<Type>.ndjson`), for checking
//! the export with an independent validator (`scripts/fhir-validate`):
//! `cargo run -p chartroom-fhir --example export-sample -- OUTDIR [PATIENTS]`.
//!
//! The charts: `PATIENTS` (default 25) from `chartroom-synth`, one chart in every record state, and
//! the Synthea-like test fixture as imported.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::ExitCode;

use chartroom_fhir::{export_ndjson, import_bundle, ImportOptions};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(dir), patients) = (args.next().map(PathBuf::from), args.next()) else {
        eprintln!("usage: export-sample OUTDIR [PATIENTS]");
        return ExitCode::from(2);
    };
    let Ok(patients) = patients.as_deref().unwrap_or("25").parse::<u64>() else {
        eprintln!("PATIENTS must be a number");
        return ExitCode::from(2);
    };
    let author = common::synth_config().author;
    let mut charts = common::synth_charts(patients);
    charts.push(common::edge_chart(author));
    match import_bundle(common::FIXTURE.as_bytes(), &ImportOptions::new(author)) {
        Ok(import) => charts.extend(import.charts),
        Err(e) => {
            eprintln!("fixture import failed: {e}");
            return ExitCode::FAILURE;
        }
    }
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    for (resource_type, lines) in export_ndjson(&charts) {
        let path = dir.join(format!("{resource_type}.ndjson"));
        if let Err(e) = std::fs::write(&path, &lines) {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("{}: {} resources", path.display(), lines.lines().count());
    }
    ExitCode::SUCCESS
}
