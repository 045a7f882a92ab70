//! Role-based, minimum-necessary access control (DESIGN §5): permissions in star notation, the
//! grants of each role, and the one decision function that server and station both call.
//!
//! A permission is `verb:resource`, e.g. `ehr.read:patient.notes` or `ehr.sign:note.progress`. A
//! grant may end a part in `*` (`ehr.read:patient.*`, `audit.read:*`). Patient data is additionally
//! scoped by unit: the unit is always the one stored with the *patient*, never one the client names.

use serde::{Deserialize, Serialize};

use crate::{NoteKind, Role};

/// A part of a chart, read separately so that each role sees only what it needs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ChartSection {
    Demographics,
    Allergies,
    Problems,
    Medications,
    Vitals,
    Notes,
}

impl ChartSection {
    pub const ALL: [ChartSection; 6] = [
        ChartSection::Demographics,
        ChartSection::Allergies,
        ChartSection::Problems,
        ChartSection::Medications,
        ChartSection::Vitals,
        ChartSection::Notes,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChartSection::Demographics => "demographics",
            ChartSection::Allergies => "allergies",
            ChartSection::Problems => "problems",
            ChartSection::Medications => "medications",
            ChartSection::Vitals => "vitals",
            ChartSection::Notes => "notes",
        }
    }
}

/// Something a user asks to do.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Action {
    /// Read one section of a patient's chart.
    Read(ChartSection),
    /// List a unit's patients (names, MRNs, birth dates, beds) — a bulk read, for those who work
    /// the unit, not for looking people up.
    ReadCensus,
    /// Record a vitals set.
    WriteVitals,
    /// Write (draft) a note of this kind.
    WriteNote(NoteKind),
    /// Sign a note of this kind (after which it is immutable).
    SignNote(NoteKind),
    /// Record or change allergies (nurses take allergy histories too).
    WriteAllergies,
    /// Add or change problems or medications.
    WriteOrders,
    /// Change demographics or placement (bed, unit: a transfer).
    WriteDemographics,
    /// Read the audit trail.
    ReadAudit,
    /// Create, disable and enable accounts.
    ManageUsers,
    /// Issue enrollment tokens and revoke devices.
    ManageDevices,
}

impl Action {
    /// The permission this action needs.
    pub fn permission(self) -> String {
        let note = |k: NoteKind| match k {
            NoteKind::Nursing => "nursing",
            NoteKind::Progress => "progress",
        };
        match self {
            Action::Read(section) => format!("ehr.read:patient.{}", section.as_str()),
            Action::ReadCensus => "ehr.read:census".into(),
            Action::WriteVitals => "ehr.write:vitals".into(),
            Action::WriteNote(k) => format!("ehr.write:note.{}", note(k)),
            Action::SignNote(k) => format!("ehr.sign:note.{}", note(k)),
            Action::WriteAllergies => "ehr.write:allergies".into(),
            Action::WriteOrders => "ehr.write:orders".into(),
            Action::WriteDemographics => "ehr.write:demographics".into(),
            Action::ReadAudit => "audit.read:trail".into(),
            Action::ManageUsers => "admin.manage:users".into(),
            Action::ManageDevices => "admin.manage:devices".into(),
        }
    }

    /// Whether the action is about one patient (and so limited to the user's units).
    pub fn is_patient_scoped(self) -> bool {
        !matches!(self, Action::ReadAudit | Action::ManageUsers | Action::ManageDevices)
    }
}

/// What each role is granted. Minimum necessary: billing sees who the patient is and the problem
/// list (for coding) but no notes, vitals or medications; the auditor reads the trail and enough
/// demographics to name a patient in a report, but lists no census; the admin manages accounts and
/// devices and reads no patient data at all.
pub fn grants(role: Role) -> &'static [&'static str] {
    match role {
        Role::Nurse => &[
            "ehr.read:patient.*",
            "ehr.read:census",
            "ehr.write:vitals",
            "ehr.write:allergies",
            "ehr.write:demographics",
            "ehr.write:note.nursing",
            "ehr.sign:note.nursing",
        ],
        Role::Physician => &["ehr.read:patient.*", "ehr.read:census", "ehr.write:*", "ehr.sign:note.*"],
        Role::Billing => &["ehr.read:patient.demographics", "ehr.read:patient.problems", "ehr.read:census"],
        Role::Auditor => &["audit.read:*", "ehr.read:patient.demographics"],
        Role::Admin => &["admin.manage:*"],
    }
}

/// What break-glass adds for a role, on the one patient it was invoked for: the clinical roles may
/// act outside their units; the auditor may read the whole chart of a patient under review. Billing
/// and admin have no emergency reason to see a chart.
pub fn break_glass_grants(role: Role) -> &'static [&'static str] {
    match role {
        Role::Nurse | Role::Physician => grants(role),
        Role::Auditor => &["ehr.read:patient.*"],
        Role::Billing | Role::Admin => &[],
    }
}

/// Whether `grant` (which may use `*`) covers `wanted` (which may not).
pub fn grant_covers(grant: &str, wanted: &str) -> bool {
    let (Some((g_verb, g_res)), Some((w_verb, w_res))) = (grant.split_once(':'), wanted.split_once(':'))
    else {
        return false;
    };
    part_covers(g_verb, w_verb) && part_covers(g_res, w_res)
}

/// `a.b.*` covers `a.b` followed by one or more segments; `*` covers everything; otherwise equality.
fn part_covers(grant: &str, wanted: &str) -> bool {
    if grant == "*" {
        return !wanted.is_empty();
    }
    match grant.strip_suffix(".*") {
        Some(prefix) => {
            wanted.strip_prefix(prefix).is_some_and(|rest| rest.len() > 1 && rest.starts_with('.'))
        }
        None => grant == wanted,
    }
}

/// The person asking: their role and the units they work on (`*` for every unit).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Principal {
    pub role: Role,
    pub units: Vec<String>,
}

/// Where the action happens.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Target<'a> {
    /// Not about a patient (audit, administration).
    System,
    /// A patient on this unit (as stored with the patient).
    Patient { unit: &'a str, break_glass: bool },
}

/// Why an action was refused. The codes are stable: clients and auditors rely on them.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum Denied {
    #[error("your role does not allow this")]
    NotPermitted,
    #[error("this patient is not on one of your units")]
    OutOfScope,
}

impl Denied {
    pub fn code(self) -> &'static str {
        match self {
            Denied::NotPermitted => "access.forbidden",
            Denied::OutOfScope => "access.out_of_scope",
        }
    }
}

/// The one access decision. In scope, the role's grants apply; out of scope, only break-glass grants
/// (and only when break-glass was invoked for this patient).
pub fn decide(who: &Principal, action: Action, target: Target<'_>) -> Result<(), Denied> {
    let wanted = action.permission();
    let allowed_by = |grants: &[&str]| grants.iter().any(|g| grant_covers(g, &wanted));
    match target {
        Target::System => {
            if action.is_patient_scoped() || !allowed_by(grants(who.role)) {
                return Err(Denied::NotPermitted);
            }
            Ok(())
        }
        Target::Patient { unit, break_glass } => {
            if !action.is_patient_scoped() {
                return Err(Denied::NotPermitted);
            }
            let in_scope = who.units.iter().any(|u| u == "*" || u == unit);
            if in_scope && allowed_by(grants(who.role)) {
                return Ok(());
            }
            if break_glass && allowed_by(break_glass_grants(who.role)) {
                return Ok(());
            }
            if !allowed_by(grants(who.role)) && !allowed_by(break_glass_grants(who.role)) {
                return Err(Denied::NotPermitted);
            }
            Err(if in_scope { Denied::NotPermitted } else { Denied::OutOfScope })
        }
    }
}

/// The chart sections `who` may read for a patient on `unit`.
pub fn readable_sections(who: &Principal, unit: &str, break_glass: bool) -> Vec<ChartSection> {
    ChartSection::ALL
        .into_iter()
        .filter(|s| decide(who, Action::Read(*s), Target::Patient { unit, break_glass }).is_ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn who(role: Role, units: &[&str]) -> Principal {
        Principal { role, units: units.iter().map(|u| u.to_string()).collect() }
    }

    #[test]
    fn stars_cover_whole_segments_only() {
        assert!(grant_covers("ehr.read:patient.*", "ehr.read:patient.notes"));
        assert!(!grant_covers("ehr.read:patient.*", "ehr.read:patient"));
        assert!(!grant_covers("ehr.read:patient.*", "ehr.read:patients.notes"));
        assert!(!grant_covers("ehr.read:patient.*", "ehr.write:patient.notes"));
        assert!(grant_covers("ehr.write:*", "ehr.write:note.progress"));
        assert!(grant_covers("ehr.sign:note.*", "ehr.sign:note.nursing"));
        assert!(!grant_covers("ehr.sign:note.nursing", "ehr.sign:note.progress"));
        assert!(!grant_covers("malformed", "ehr.read:patient.notes"));
        assert!(!grant_covers("ehr.read:patient.notes", "malformed"));
    }

    // hipaa (a)(1): each role reads only the chart sections it needs (billing sees no notes, admin no PHI)
    #[test]
    fn minimum_necessary_reads() {
        let icu = |role| readable_sections(&who(role, &["ICU"]), "ICU", false);
        assert_eq!(icu(Role::Nurse), ChartSection::ALL.to_vec());
        assert_eq!(icu(Role::Physician), ChartSection::ALL.to_vec());
        assert_eq!(icu(Role::Billing), vec![ChartSection::Demographics, ChartSection::Problems]);
        assert_eq!(icu(Role::Auditor), vec![ChartSection::Demographics]);
        assert_eq!(icu(Role::Admin), vec![]);
        // The auditor reads notes only through break-glass.
        let auditor = who(Role::Auditor, &["*"]);
        assert_eq!(readable_sections(&auditor, "ICU", true), ChartSection::ALL.to_vec());
    }

    #[test]
    fn only_those_who_work_a_unit_list_its_census() {
        let icu = Target::Patient { unit: "ICU", break_glass: false };
        for (role, allowed) in [
            (Role::Nurse, true),
            (Role::Physician, true),
            (Role::Billing, true),
            (Role::Auditor, false),
            (Role::Admin, false),
        ] {
            assert_eq!(decide(&who(role, &["*"]), Action::ReadCensus, icu).is_ok(), allowed, "{role:?}");
        }
    }

    // hipaa (a)(1): patient actions are allowed only inside the user's units
    #[test]
    fn units_scope_patient_actions() {
        let nurse = who(Role::Nurse, &["ICU"]);
        let med = Target::Patient { unit: "MED", break_glass: false };
        let icu = Target::Patient { unit: "ICU", break_glass: false };
        assert_eq!(decide(&nurse, Action::WriteVitals, icu), Ok(()));
        assert_eq!(decide(&nurse, Action::WriteVitals, med), Err(Denied::OutOfScope));
        assert_eq!(decide(&nurse, Action::SignNote(NoteKind::Progress), icu), Err(Denied::NotPermitted));
        assert_eq!(decide(&nurse, Action::WriteAllergies, icu), Ok(()));
        assert_eq!(decide(&nurse, Action::WriteOrders, icu), Err(Denied::NotPermitted));
        assert_eq!(
            decide(&nurse, Action::WriteVitals, Target::Patient { unit: "MED", break_glass: true }),
            Ok(())
        );
        let billing = who(Role::Billing, &["MED"]);
        assert_eq!(
            decide(
                &billing,
                Action::Read(ChartSection::Notes),
                Target::Patient { unit: "MED", break_glass: true }
            ),
            Err(Denied::NotPermitted)
        );
    }

    #[test]
    fn administration_is_not_patient_scoped() {
        let admin = who(Role::Admin, &[]);
        assert_eq!(decide(&admin, Action::ManageUsers, Target::System), Ok(()));
        assert_eq!(decide(&admin, Action::ReadAudit, Target::System), Err(Denied::NotPermitted));
        assert_eq!(
            decide(&admin, Action::ManageUsers, Target::Patient { unit: "ICU", break_glass: false }),
            Err(Denied::NotPermitted)
        );
        let auditor = who(Role::Auditor, &[]);
        assert_eq!(decide(&auditor, Action::ReadAudit, Target::System), Ok(()));
        assert_eq!(
            decide(&auditor, Action::Read(ChartSection::Vitals), Target::System),
            Err(Denied::NotPermitted)
        );
    }

    fn any_action() -> impl Strategy<Value = Action> {
        let kind = prop_oneof![Just(NoteKind::Nursing), Just(NoteKind::Progress)];
        prop_oneof![
            proptest::sample::select(ChartSection::ALL.to_vec()).prop_map(Action::Read),
            Just(Action::WriteVitals),
            kind.clone().prop_map(Action::WriteNote),
            kind.prop_map(Action::SignNote),
            Just(Action::ReadCensus),
            Just(Action::WriteAllergies),
            Just(Action::WriteOrders),
            Just(Action::WriteDemographics),
            Just(Action::ReadAudit),
            Just(Action::ManageUsers),
            Just(Action::ManageDevices),
        ]
    }

    proptest! {
        /// The admin never reads or writes patient data, whatever the unit or break-glass.
        // hipaa (a)(1): the admin role administers accounts but is granted no patient data
        #[test]
        fn admin_never_touches_phi(action in any_action(), unit in "[A-Z]{1,4}", bg: bool, star: bool) {
            let units = if star { vec!["*".to_string()] } else { vec![unit.clone()] };
            let admin = Principal { role: Role::Admin, units };
            if action.is_patient_scoped() {
                let target = Target::Patient { unit: &unit, break_glass: bg };
                prop_assert!(decide(&admin, action, target).is_err());
            }
        }

        /// Outside a user's units only break-glass can allow anything, and break-glass never allows
        /// more than the role's break-glass grants.
        // hipaa (a)(2)(ii): out-of-scope reads are refused unless break-glass is granted
        #[test]
        fn out_of_scope_needs_break_glass(
            action in any_action(),
            role in proptest::sample::select(Role::ALL.to_vec()),
        ) {
            let user = who(role, &["ICU"]);
            let plain = decide(&user, action, Target::Patient { unit: "MED", break_glass: false });
            prop_assert!(plain.is_err());
            let bg = decide(&user, action, Target::Patient { unit: "MED", break_glass: true });
            let granted = break_glass_grants(role).iter().any(|g| grant_covers(g, &action.permission()));
            prop_assert_eq!(bg.is_ok(), granted && action.is_patient_scoped());
        }
    }
}
