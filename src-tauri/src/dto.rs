//! What the webview receives and sends: view types built from the station core's records, holding
//! only what the signed-in user may see, with times as RFC 3339 text. Their TypeScript twins in
//! `ui/src/lib/bindings/index.ts` are generated from these definitions (see [`typescript`]).

use chartroom_station::domain::{
    Allergy, Chart, Condition, MedicationRequest, Note, NoteStatus, Observation, Role, Timestamp, VitalSign,
};
use chartroom_station::protocol::BreakGlassReason;
use serde::{Deserialize, Serialize};
use ts_rs::TS;
use uuid::Uuid;

pub use crate::error::AppError;

/// Why the session is locked (the lock screen says so).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum LockReason {
    Startup,
    Idle,
    AbsoluteLimit,
    Manual,
    ScreenLocked,
    Suspend,
    SignedOut,
    /// The server said this device was revoked; its profile has been wiped.
    Revoked,
}

/// Suggested enrollment values from the machine policy file, if IT installed one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct EnrollmentDefaults {
    pub server_url: Option<String>,
    pub fingerprint: Option<String>,
    pub station_name: Option<String>,
    pub device_profile: Option<String>,
}

/// What the lock screen may show: nothing about patients or users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
pub struct StationStatus {
    pub app_version: String,
    pub enrolled: bool,
    /// The name the administrator gave this device (or the host name before enrollment).
    pub station_name: String,
    pub device_profile: Option<String>,
    pub server_url: Option<String>,
    /// Whether the server answered the last check (`None`: not enrolled or not checked yet).
    pub online: Option<bool>,
    pub enrollment_defaults: Option<EnrollmentDefaults>,
    /// This run of the app wiped the station because IT revoked it (the enrollment screen says so).
    pub revoked: bool,
}

/// The in-app updater's answer (the lock screen shows it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum UpdateView {
    /// The machine policy switched the updater off (updates come through the package manager).
    Off,
    /// Not enrolled, or the server publishes no release.
    None,
    UpToDate {
        installed: String,
    },
    /// A newer release whose signature verified against the built-in release key.
    Available {
        version: String,
        notes: String,
        file: String,
    },
}

/// The enrollment screen's form. The station's name, profile and units come with the token (IT
/// set them when it issued it).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, TS)]
pub struct EnrollRequest {
    pub server_url: String,
    pub fingerprint: String,
    pub token: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "lowercase")]
pub enum SessionMode {
    /// A clinician with the station's data key open.
    Clinical,
    /// An auditor: server-side oversight only, no patient data on the station.
    Oversight,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
pub struct UserView {
    pub username: String,
    #[ts(type = "\"nurse\" | \"physician\" | \"billing\" | \"auditor\" | \"admin\"")]
    pub role: Role,
    pub units: Vec<String>,
    pub mode: SessionMode,
    pub online: bool,
}

/// The session as the UI shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SessionView {
    Locked {
        reason: LockReason,
        /// Who is signed in (their session is locked; unlocking with their password resumes it).
        signed_in: Option<String>,
        /// For an idle lock: the idle timeout in minutes.
        idle_minutes: Option<u32>,
    },
    Active {
        user: UserView,
        /// Set while the idle warning counts down.
        warning_seconds_left: Option<u32>,
        idle_timeout_s: u32,
        warning_s: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, TS)]
pub struct CensusRow {
    pub patient_id: Uuid,
    pub mrn: String,
    pub name: String,
    pub age: String,
    pub sex: String,
    pub unit: String,
    pub bed: String,
    pub allergy_count: u32,
    pub last_vitals_at: Option<String>,
    pub mine: bool,
}

/// The census as loaded (its rows stay in the shell; the UI asks for them with `census_search`).
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
pub struct CensusInfo {
    pub patients: u32,
    /// The first sync has not completed: the list may be incomplete.
    pub partial: bool,
    pub units: Vec<String>,
}

/// The rows of the census that match a search, best first, at most the asked limit.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
pub struct CensusPage {
    pub rows: Vec<CensusRow>,
    /// Every match, drawn or not.
    pub total: u32,
}

/// The vital signs, by the names the records use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum VitalCode {
    HeartRate,
    SystolicBp,
    DiastolicBp,
    Temperature,
    RespiratoryRate,
    Spo2,
    Weight,
}

impl From<VitalCode> for VitalSign {
    fn from(v: VitalCode) -> Self {
        match v {
            VitalCode::HeartRate => VitalSign::HeartRate,
            VitalCode::SystolicBp => VitalSign::SystolicBp,
            VitalCode::DiastolicBp => VitalSign::DiastolicBp,
            VitalCode::Temperature => VitalSign::Temperature,
            VitalCode::RespiratoryRate => VitalSign::RespiratoryRate,
            VitalCode::Spo2 => VitalSign::Spo2,
            VitalCode::Weight => VitalSign::Weight,
        }
    }
}

impl From<VitalSign> for VitalCode {
    fn from(v: VitalSign) -> Self {
        match v {
            VitalSign::HeartRate => VitalCode::HeartRate,
            VitalSign::SystolicBp => VitalCode::SystolicBp,
            VitalSign::DiastolicBp => VitalCode::DiastolicBp,
            VitalSign::Temperature => VitalCode::Temperature,
            VitalSign::RespiratoryRate => VitalCode::RespiratoryRate,
            VitalSign::Spo2 => VitalCode::Spo2,
            VitalSign::Weight => VitalCode::Weight,
        }
    }
}

/// A vital's entry limits (values outside are refused) and adult normal range (for flags and plots).
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
pub struct VitalRange {
    pub vital: VitalCode,
    pub label: String,
    pub unit: String,
    pub normal_low: f64,
    pub normal_high: f64,
    pub min: f64,
    pub max: f64,
    pub step: f64,
}

impl VitalRange {
    pub fn all() -> Vec<VitalRange> {
        VitalSign::ALL
            .into_iter()
            .map(|v| {
                let (min, max) = v.plausible_range();
                let (normal_low, normal_high) = v.normal_range();
                let step = match v {
                    VitalSign::Temperature | VitalSign::Weight => 0.1,
                    _ => 1.0,
                };
                VitalRange {
                    vital: v.into(),
                    label: v.label().to_owned(),
                    unit: display_unit(v).to_owned(),
                    normal_low,
                    normal_high,
                    min,
                    max,
                    step,
                }
            })
            .collect()
    }
}

/// The unit as a clinician writes it (the records keep UCUM).
fn display_unit(v: VitalSign) -> &'static str {
    match v.unit() {
        "Cel" => "°C",
        "mm[Hg]" => "mmHg",
        other => other,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, TS)]
pub struct VitalInput {
    pub vital: VitalCode,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, TS)]
pub struct VitalPoint {
    pub id: Uuid,
    pub vital: VitalCode,
    pub value: f64,
    pub effective_at: String,
    /// `effective_at` in milliseconds since the epoch, for plotting.
    pub t_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
pub struct PatientBanner {
    pub id: Uuid,
    pub mrn: String,
    pub name: String,
    pub birth_date: String,
    pub age: String,
    pub sex: String,
    pub unit: String,
    pub bed: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
pub struct AllergyView {
    pub id: Uuid,
    pub substance: String,
    pub reaction: String,
    pub criticality: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
pub struct ProblemView {
    pub id: Uuid,
    pub display: String,
    pub status: String,
    pub onset: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
pub struct MedicationView {
    pub id: Uuid,
    pub medication: String,
    pub dose: String,
    pub route: String,
    pub frequency: String,
    pub status: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum NoteStatusView {
    Draft,
    Signed,
    EnteredInError,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
pub struct NoteView {
    pub id: Uuid,
    #[ts(type = "\"nursing\" | \"progress\"")]
    pub kind: chartroom_station::domain::NoteKind,
    pub text: String,
    pub status: NoteStatusView,
    /// "you" for the user's own notes; otherwise the author's username when this station knows it.
    pub author: String,
    pub mine: bool,
    pub created_at: String,
    pub signed_at: Option<String>,
    pub addendum_to: Option<Uuid>,
    pub error_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, TS)]
pub struct ChartView {
    pub patient: PatientBanner,
    pub allergies: Vec<AllergyView>,
    pub problems: Vec<ProblemView>,
    pub medications: Vec<MedicationView>,
    pub vitals: Vec<VitalPoint>,
    pub notes: Vec<NoteView>,
    /// Opened under emergency access (audited and reviewed).
    pub break_glass: bool,
    /// Nothing can be written here (a break-glass view of a patient this station does not hold).
    pub read_only: bool,
    pub can_write_vitals: bool,
    pub can_write_notes: bool,
    pub mine: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
pub struct DraftView {
    pub note_id: Uuid,
    pub mrn: String,
    pub patient_name: String,
    pub bed: String,
    pub updated_at: String,
    pub chars: u32,
}

/// The fixed break-glass reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
#[ts(rename = "BreakGlassReason")]
pub enum BreakGlassReasonView {
    EmergencyCare,
    CoveringColleague,
    PatientTransferred,
    ConsultRequested,
    AuditInvestigation,
}

impl From<BreakGlassReasonView> for BreakGlassReason {
    fn from(r: BreakGlassReasonView) -> Self {
        match r {
            BreakGlassReasonView::EmergencyCare => BreakGlassReason::EmergencyCare,
            BreakGlassReasonView::CoveringColleague => BreakGlassReason::CoveringColleague,
            BreakGlassReasonView::PatientTransferred => BreakGlassReason::PatientTransferred,
            BreakGlassReasonView::ConsultRequested => BreakGlassReason::ConsultRequested,
            BreakGlassReasonView::AuditInvestigation => BreakGlassReason::AuditInvestigation,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
pub struct SyncProgress {
    pub done: u32,
    pub total: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, TS)]
pub struct SyncView {
    pub online: bool,
    pub syncing: bool,
    pub last_sync_at: Option<String>,
    /// When a sync of this session last brought changes from the server (what the census shows
    /// may then be out of date; a sync that brought nothing leaves it alone).
    pub changed_at: Option<String>,
    pub pending: u32,
    pub conflicts: u32,
    pub rejected: u32,
    pub first_sync_complete: bool,
    pub progress: Option<SyncProgress>,
    pub last_error: Option<AppError>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
pub struct ConflictSummary {
    pub change_id: Uuid,
    pub kind: String,
    pub mrn: Option<String>,
    pub patient_name: Option<String>,
    /// `conflict` or `rejected`, with the server's reason code for a refusal.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
pub struct ConflictDetail {
    pub change_id: Uuid,
    pub kind: String,
    /// Pretty-printed JSON of this station's version.
    pub mine: String,
    /// Pretty-printed JSON of the server's version.
    pub theirs: String,
    pub mergeable_text: bool,
    pub mine_text: Option<String>,
    pub theirs_text: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, TS)]
#[serde(tag = "choice", rename_all = "snake_case")]
pub enum Resolution {
    KeepMine,
    TakeTheirs,
    Merge { text: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, TS)]
pub struct AuditFilter {
    pub user: Option<String>,
    pub mrn: Option<String>,
    pub action: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, TS)]
pub struct AuditEntryView {
    pub seq: f64,
    pub at: String,
    pub username: Option<String>,
    pub device_id: String,
    pub action: String,
    pub resource_type: String,
    pub outcome: String,
    pub patient_count: u32,
    pub break_glass: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, TS)]
pub struct AuditVerifyView {
    pub ok: bool,
    pub entries: f64,
    pub problem: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
pub struct BreakGlassUseView {
    pub id: String,
    pub at: String,
    pub username: String,
    pub patient_id: String,
    /// The patient's MRN and name as the server holds them (empty: the patient was removed).
    pub mrn: String,
    pub patient_name: String,
    /// A break-glass reason code (`emergency_care`, …).
    pub reason: String,
    pub detail: Option<String>,
    pub reviewed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, TS)]
pub struct IncidentView {
    pub id: String,
    pub at: String,
    pub username: String,
    pub kind: String,
    pub detail: String,
}

// --- conversions from the station core -------------------------------------------------------

/// Times as RFC 3339 UTC text.
pub fn time(t: Timestamp) -> String {
    t.to_string()
}

/// "46 y" (or months for infants).
pub fn age(birth: chartroom_station::domain::Date, now: Timestamp) -> String {
    let years = birth.years_until(now);
    if years >= 2 {
        format!("{years} y")
    } else {
        let days = now
            .since(Timestamp::from_civil_date(
                i64::from(birth.year),
                u32::from(birth.month),
                u32::from(birth.day),
            ))
            .as_secs()
            / 86_400;
        format!("{} mo", days / 30)
    }
}

pub fn sex(s: chartroom_station::domain::Sex) -> String {
    s.letter().to_string()
}

impl CensusRow {
    pub fn new(r: chartroom_station::store::CensusRow, mine: bool, now: Timestamp) -> Self {
        CensusRow {
            patient_id: r.patient_id,
            mrn: r.mrn,
            name: r.name,
            age: age(r.birth_date, now),
            sex: sex(r.sex),
            unit: r.unit,
            bed: r.bed,
            allergy_count: r.allergy_count,
            last_vitals_at: r.last_vitals_at.map(time),
            mine,
        }
    }
}

impl NoteView {
    pub fn new(n: &Note, me: Uuid) -> Self {
        let (status, signed_at, error_reason) = match &n.status {
            NoteStatus::Draft => (NoteStatusView::Draft, None, None),
            NoteStatus::Signed { signed_at } => (NoteStatusView::Signed, Some(time(*signed_at)), None),
            NoteStatus::EnteredInError { reason, .. } => {
                (NoteStatusView::EnteredInError, None, Some(reason.clone()))
            }
        };
        let mine = n.author_id == me;
        NoteView {
            id: n.id,
            kind: n.kind,
            text: n.text.clone(),
            status,
            author: if mine { "you".into() } else { "another clinician".into() },
            mine,
            created_at: time(n.created_at),
            signed_at,
            addendum_to: n.addendum_to,
            error_reason,
        }
    }
}

fn allergy(a: &Allergy) -> AllergyView {
    let criticality = serde_json::to_value(a.criticality)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    AllergyView { id: a.id, substance: a.substance.clone(), reaction: a.reaction.clone(), criticality }
}

fn problem(c: &Condition) -> ProblemView {
    let status = serde_json::to_value(c.status).ok().and_then(|v| v.as_str().map(str::to_owned));
    ProblemView {
        id: c.id,
        display: c.display.clone(),
        status: status.unwrap_or_default(),
        onset: c.onset.map(|d| d.to_string()),
    }
}

fn medication(m: &MedicationRequest) -> MedicationView {
    let status = serde_json::to_value(m.status).ok().and_then(|v| v.as_str().map(str::to_owned));
    MedicationView {
        id: m.id,
        medication: m.medication.clone(),
        dose: m.dose.clone(),
        route: m.route.clone(),
        frequency: m.frequency.clone(),
        status: status.unwrap_or_default(),
    }
}

fn vital(o: &Observation) -> VitalPoint {
    VitalPoint {
        id: o.id,
        vital: o.vital.into(),
        value: o.value,
        effective_at: time(o.effective_at),
        // Milliseconds since 1970 fit an f64 exactly for the next 280,000 years.
        #[allow(clippy::cast_precision_loss)]
        t_ms: o.effective_at.millis() as f64,
    }
}

/// What the writer may do on this chart.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChartAccess {
    pub break_glass: bool,
    pub read_only: bool,
    pub can_write_vitals: bool,
    pub can_write_notes: bool,
    pub mine: bool,
}

impl ChartView {
    pub fn new(chart: &Chart, me: Uuid, access: ChartAccess, now: Timestamp) -> Self {
        let p = &chart.patient;
        ChartView {
            patient: PatientBanner {
                id: p.id,
                mrn: p.mrn.clone(),
                name: p.name.to_string(),
                birth_date: p.birth_date.to_string(),
                age: age(p.birth_date, now),
                sex: sex(p.sex),
                unit: p.unit.clone(),
                bed: p.bed.clone(),
            },
            allergies: chart.allergies.iter().map(allergy).collect(),
            problems: chart.conditions.iter().map(problem).collect(),
            medications: chart.medications.iter().map(medication).collect(),
            vitals: chart.observations.iter().map(vital).collect(),
            // Another user's draft is theirs alone, whatever the store handed over.
            notes: chart
                .notes
                .iter()
                .filter(|n| n.author_id == me || !matches!(n.status, NoteStatus::Draft))
                .map(|n| NoteView::new(n, me))
                .collect(),
            break_glass: access.break_glass,
            read_only: access.read_only,
            can_write_vitals: access.can_write_vitals && !access.read_only,
            can_write_notes: access.can_write_notes && !access.read_only,
            mine: access.mine,
        }
    }
}

/// The TypeScript declarations of every type the webview sees, as one module.
pub fn typescript() -> String {
    let cfg = ts_rs::Config::new().with_large_int("number");
    let decls = [
        AppError::decl(&cfg),
        LockReason::decl(&cfg),
        EnrollmentDefaults::decl(&cfg),
        StationStatus::decl(&cfg),
        UpdateView::decl(&cfg),
        EnrollRequest::decl(&cfg),
        SessionMode::decl(&cfg),
        UserView::decl(&cfg),
        SessionView::decl(&cfg),
        CensusRow::decl(&cfg),
        CensusInfo::decl(&cfg),
        CensusPage::decl(&cfg),
        VitalCode::decl(&cfg),
        VitalRange::decl(&cfg),
        VitalInput::decl(&cfg),
        VitalPoint::decl(&cfg),
        PatientBanner::decl(&cfg),
        AllergyView::decl(&cfg),
        ProblemView::decl(&cfg),
        MedicationView::decl(&cfg),
        NoteStatusView::decl(&cfg),
        NoteView::decl(&cfg),
        ChartView::decl(&cfg),
        DraftView::decl(&cfg),
        BreakGlassReasonView::decl(&cfg),
        SyncProgress::decl(&cfg),
        SyncView::decl(&cfg),
        ConflictSummary::decl(&cfg),
        ConflictDetail::decl(&cfg),
        Resolution::decl(&cfg),
        AuditFilter::decl(&cfg),
        AuditEntryView::decl(&cfg),
        AuditVerifyView::decl(&cfg),
        BreakGlassUseView::decl(&cfg),
        IncidentView::decl(&cfg),
    ];
    let mut out = String::from(
        "// Generated from src-tauri/src/dto.rs by ts-rs. DO NOT EDIT.\n\
         // Regenerate: CHARTROOM_BLESS=1 cargo test -p chartroom-app typescript_bindings\n\n",
    );
    for d in decls {
        out.push_str("export ");
        out.push_str(&d);
        out.push_str("\n\n");
    }
    // Limits the core enforces, so that the UI can say so before sending anything.
    let max_note = chartroom_station::domain::validate::MAX_NOTE_CHARS;
    out.push_str(&format!("/** The longest note (or addendum) text, in characters. */\nexport const MAX_NOTE_CHARS = {max_note};\n"));
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Any JSON value: what a compromised or buggy webview could send as a command argument.
    fn any_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("JSON numbers are finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            "\\PC{0,24}".prop_map(serde_json::Value::from),
            prop_oneof![
                Just("heart_rate"),
                Just("spo2"),
                Just("keep_mine"),
                Just("merge"),
                Just("choice"),
                Just("emergency_care")
            ]
            .prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("vital".to_owned()),
                        Just("value".to_owned()),
                        Just("choice".to_owned()),
                        Just("text".to_owned()),
                        Just("limit".to_owned()),
                        Just("user".to_owned()),
                        Just("server_url".to_owned()),
                        Just("token".to_owned()),
                        "[a-z_]{1,10}".prop_map(|s| s),
                    ],
                    inner,
                    0..6,
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Tauri decodes each command argument from the IPC message's JSON with serde: any value
        /// decodes or is refused as an error (which Tauri answers the webview with), never a panic.
        #[test]
        fn command_arguments_decode_or_are_refused(v in any_json()) {
            let _ = serde_json::from_value::<EnrollRequest>(v.clone());
            let _ = serde_json::from_value::<Vec<VitalInput>>(v.clone());
            let _ = serde_json::from_value::<BreakGlassReasonView>(v.clone());
            let _ = serde_json::from_value::<Resolution>(v.clone());
            let _ = serde_json::from_value::<AuditFilter>(v.clone());
            let _ = serde_json::from_value::<Option<Uuid>>(v.clone());
            let _ = serde_json::from_value::<String>(v.clone());
            if let Ok(values) = serde_json::from_value::<Vec<VitalInput>>(v) {
                // What decodes goes on to the records' own validation: any value is plausible or refused.
                use chartroom_station::domain::{Observation, Timestamp, Validate};
                for input in values {
                    let o = Observation {
                        id: Uuid::nil(),
                        patient_id: Uuid::nil(),
                        vital: input.vital.into(),
                        value: input.value,
                        effective_at: Timestamp(0),
                        recorded_by: Uuid::nil(),
                        version: 0,
                    };
                    let _ = o.validate();
                }
            }
        }
    }

    /// The UI's copy of these types must be the generated one: a change here without regenerating
    /// fails this test (CI), so the webview never disagrees with the commands about a shape.
    #[test]
    fn typescript_bindings() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui/src/lib/bindings/index.ts");
        let generated = typescript();
        if std::env::var_os("CHARTROOM_BLESS").is_some() {
            std::fs::write(&path, &generated).expect("write bindings");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "ui/src/lib/bindings/index.ts is stale; regenerate with \
             CHARTROOM_BLESS=1 cargo test -p chartroom-app typescript_bindings"
        );
    }

    #[test]
    fn vital_codes_round_trip_through_the_records() {
        for v in VitalSign::ALL {
            let code = VitalCode::from(v);
            assert_eq!(VitalSign::from(code), v);
            // The same wire names as the records.
            assert_eq!(serde_json::to_value(code).unwrap(), serde_json::to_value(v).unwrap());
        }
    }

    #[test]
    fn ages_are_years_then_months() {
        let now = Timestamp::from_civil_date(2026, 11, 27);
        let adult = chartroom_station::domain::Date::new(1980, 7, 4).unwrap();
        assert_eq!(age(adult, now), "46 y");
        let infant = chartroom_station::domain::Date::new(2026, 5, 20).unwrap();
        assert_eq!(age(infant, now), "6 mo");
    }

    #[test]
    fn other_users_drafts_never_reach_the_view() {
        let me = Uuid::now_v7();
        let other = Uuid::now_v7();
        let note = |author, status| Note {
            id: Uuid::now_v7(),
            patient_id: Uuid::nil(),
            author_id: author,
            kind: chartroom_station::domain::NoteKind::Nursing,
            text: "t".into(),
            created_at: Timestamp(0),
            status,
            addendum_to: None,
            version: 1,
        };
        let mut chart = chartroom_synth::patient(&chartroom_synth::SynthConfig::new(7, Timestamp(0)), 0);
        chart.notes = vec![
            note(me, NoteStatus::Draft),
            note(other, NoteStatus::Draft),
            note(other, NoteStatus::Signed { signed_at: Timestamp(1) }),
        ];
        let view = ChartView::new(&chart, me, ChartAccess::default(), Timestamp(2));
        let kept: Vec<(bool, NoteStatusView)> = view.notes.iter().map(|n| (n.mine, n.status)).collect();
        assert_eq!(kept, vec![(true, NoteStatusView::Draft), (false, NoteStatusView::Signed)]);
    }
}
