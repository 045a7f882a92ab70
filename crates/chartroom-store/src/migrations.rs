//! Append-only schema migrations. Never edit a migration that has shipped: add a new one.
//! `PRAGMA user_version` holds the number of migrations applied.

/// Each entry is one migration; its 1-based position is the schema version it produces.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: patients, their wrapped keys, and the clinical record tables.
    r#"
    CREATE TABLE patient_keys (
        patient_id BLOB PRIMARY KEY,
        wrapped    BLOB NOT NULL
    );
    CREATE TABLE shredded_patients (
        patient_id  BLOB PRIMARY KEY,
        shredded_at INTEGER NOT NULL
    );
    CREATE TABLE patients (
        id        BLOB PRIMARY KEY REFERENCES patient_keys(patient_id),
        mrn_index BLOB NOT NULL UNIQUE,
        unit      TEXT NOT NULL,
        bed       TEXT NOT NULL,
        version   INTEGER NOT NULL,
        body      BLOB NOT NULL
    );
    CREATE INDEX patients_by_unit ON patients(unit, bed);
    CREATE TABLE allergies (
        id BLOB PRIMARY KEY, patient_id BLOB NOT NULL REFERENCES patients(id) ON DELETE CASCADE,
        kind TEXT NOT NULL, sort_key INTEGER NOT NULL, version INTEGER NOT NULL, body BLOB NOT NULL
    );
    CREATE INDEX allergies_by_patient ON allergies(patient_id, sort_key DESC);
    CREATE TABLE conditions (
        id BLOB PRIMARY KEY, patient_id BLOB NOT NULL REFERENCES patients(id) ON DELETE CASCADE,
        kind TEXT NOT NULL, sort_key INTEGER NOT NULL, version INTEGER NOT NULL, body BLOB NOT NULL
    );
    CREATE INDEX conditions_by_patient ON conditions(patient_id, sort_key DESC);
    CREATE TABLE medication_requests (
        id BLOB PRIMARY KEY, patient_id BLOB NOT NULL REFERENCES patients(id) ON DELETE CASCADE,
        kind TEXT NOT NULL, sort_key INTEGER NOT NULL, version INTEGER NOT NULL, body BLOB NOT NULL
    );
    CREATE INDEX medication_requests_by_patient ON medication_requests(patient_id, sort_key DESC);
    CREATE TABLE observations (
        id BLOB PRIMARY KEY, patient_id BLOB NOT NULL REFERENCES patients(id) ON DELETE CASCADE,
        kind TEXT NOT NULL, sort_key INTEGER NOT NULL, version INTEGER NOT NULL, body BLOB NOT NULL
    );
    CREATE INDEX observations_by_patient ON observations(patient_id, sort_key DESC);
    CREATE TABLE notes (
        id BLOB PRIMARY KEY, patient_id BLOB NOT NULL REFERENCES patients(id) ON DELETE CASCADE,
        kind TEXT NOT NULL, sort_key INTEGER NOT NULL, version INTEGER NOT NULL, body BLOB NOT NULL
    );
    CREATE INDEX notes_by_patient ON notes(patient_id, sort_key DESC);
    "#,
    // 2: the station's hash-chained audit trail (chartroom-audit entries, one chain per device).
    r#"
    CREATE TABLE audit_log (
        seq   INTEGER PRIMARY KEY,
        id    BLOB NOT NULL UNIQUE,
        hash  BLOB NOT NULL,
        entry TEXT NOT NULL
    );
    "#,
    // 3: the outbox — local changes waiting for the server (sync).
    r#"
    CREATE TABLE outbox (
        seq          INTEGER PRIMARY KEY,
        change_id    BLOB NOT NULL UNIQUE,
        kind         TEXT NOT NULL,
        record_id    BLOB NOT NULL,
        patient_id   BLOB NOT NULL,
        base_version INTEGER NOT NULL,
        created_at   INTEGER NOT NULL,
        state        TEXT NOT NULL DEFAULT 'pending',
        reason       TEXT
    );
    "#,
    // 4: sync state (the pull cursor, whether the first sync completed).
    r#"
    CREATE TABLE sync_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    "#,
    // 5: who made each outbox change (pushed only in that user's session, so the server attributes
    // it to them), conflicts (the server's version of a record kept beside the local one, sealed like it) and
    // the quarantine of patients that left this station's units while changes to them were unsynced.
    r#"
    CREATE TABLE conflicts (
        record_id     BLOB PRIMARY KEY,
        kind          TEXT NOT NULL,
        patient_id    BLOB NOT NULL,
        their_version INTEGER NOT NULL,
        body          BLOB NOT NULL,
        seen_at       INTEGER NOT NULL
    );
    CREATE TABLE quarantine (patient_id BLOB PRIMARY KEY, since INTEGER NOT NULL);
    ALTER TABLE outbox ADD COLUMN user_id BLOB;
    CREATE INDEX outbox_by_record ON outbox(record_id);
    CREATE INDEX outbox_by_patient ON outbox(patient_id);
    "#,
    // 6: each user's own list of patients ("my patients"), local to this station and never synced.
    // Ids only (no PHI in the clear); rows go when the patient is shredded.
    r#"
    CREATE TABLE my_patients (
        user_id    BLOB NOT NULL,
        patient_id BLOB NOT NULL,
        added_at   INTEGER NOT NULL,
        PRIMARY KEY (user_id, patient_id)
    );
    CREATE INDEX my_patients_by_patient ON my_patients(patient_id);
    "#,
];
