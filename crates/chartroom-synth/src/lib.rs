//! Deterministic synthetic patients: realistic-looking names, MRNs, units and beds, allergies,
//! problems, medications, days of vital signs and signed notes — generated from a seed, never from
//! real people.
//!
//! Patient `i` of seed `s` is always the same, independent of how many patients are generated, so
//! demos, tests and benchmarks can generate any slice of a population (in parallel, or resuming).

#![forbid(unsafe_code)]

use std::time::Duration;

use chartroom_domain::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use uuid::Uuid;

/// What to generate.
#[derive(Clone, Debug)]
pub struct SynthConfig {
    pub seed: u64,
    pub units: Vec<String>,
    /// Vital-sign observations per patient (sets of up to seven, every four hours going back from `now`).
    pub observations_per_patient: usize,
    /// "Now" for the generated history (injected, so output is deterministic).
    pub now: Timestamp,
    /// The user recorded as author of generated observations and notes.
    pub author: Uuid,
}

impl SynthConfig {
    pub fn new(seed: u64, now: Timestamp) -> Self {
        SynthConfig {
            seed,
            units: vec!["ICU".into(), "MED".into()],
            observations_per_patient: 42,
            now,
            author: Uuid::from_u128(0x5e7_0000_0000_4000_8000_0000_0000_0001),
        }
    }
}

const GIVEN_FEMALE: &[&str] = &[
    "Ava", "Mia", "Zoe", "Ines", "Hana", "Lena", "Aiko", "Elena", "Priya", "Freya", "Nora", "Clara", "Sofia",
    "Leila", "Amara", "Ruth", "Iris", "Lucia",
];
const GIVEN_MALE: &[&str] = &[
    "Noah", "Liam", "Omar", "Mateo", "Ravi", "Tomas", "Kofi", "Jonas", "Diego", "Malik", "Yusuf", "Arjun",
    "Emil", "Hugo", "Felix", "Sami", "Bram", "Theo",
];
const FAMILY: &[&str] = &[
    "Synthwood",
    "Testa",
    "Mockridge",
    "Fakely",
    "Samplesson",
    "Demoulin",
    "Placeholt",
    "Dummett",
    "Sandbrook",
    "Fictor",
    "Proxley",
    "Simula",
    "Avatarov",
    "Exemplar",
    "Pseudonym",
    "Notreal",
    "Madeup",
    "Vertex",
    "Quillfeather",
    "Hollowmere",
    "Ashcombe",
    "Brindlewood",
    "Castellane",
    "Dunmore",
    "Everhart",
    "Foxglove",
];
const ALLERGIES: &[(&str, &str, Criticality)] = &[
    ("Penicillin", "Hives", Criticality::High),
    ("Peanut", "Anaphylaxis", Criticality::High),
    ("Latex", "Contact dermatitis", Criticality::Low),
    ("Sulfonamide antibiotics", "Rash", Criticality::Low),
    ("Codeine", "Nausea and vomiting", Criticality::Low),
    ("Iodinated contrast media", "Bronchospasm", Criticality::High),
    ("Shellfish", "Angioedema", Criticality::High),
];
const CONDITIONS: &[(&str, &str)] = &[
    ("38341003", "Hypertensive disorder"),
    ("44054006", "Diabetes mellitus type 2"),
    ("195967001", "Asthma"),
    ("49436004", "Atrial fibrillation"),
    ("233604007", "Pneumonia"),
    ("84114007", "Heart failure"),
    ("13645005", "Chronic obstructive lung disease"),
    ("709044004", "Chronic kidney disease"),
    ("35489007", "Depressive disorder"),
    ("40055000", "Chronic sinusitis"),
];
const MEDICATIONS: &[(&str, &str, &str, &str)] = &[
    ("Lisinopril", "10 mg", "oral", "once daily"),
    ("Metformin", "500 mg", "oral", "twice daily"),
    ("Apixaban", "5 mg", "oral", "twice daily"),
    ("Furosemide", "40 mg", "intravenous", "twice daily"),
    ("Salbutamol", "2.5 mg", "inhaled", "every 4 hours as needed"),
    ("Ceftriaxone", "1 g", "intravenous", "once daily"),
    ("Enoxaparin", "40 mg", "subcutaneous", "once daily"),
    ("Paracetamol", "1 g", "oral", "every 6 hours as needed"),
    ("Insulin glargine", "20 units", "subcutaneous", "at bedtime"),
];
const NOTES: &[&str] = &[
    "Patient resting comfortably. Pain controlled on current regimen. Tolerating oral intake.",
    "Ambulated in hallway with assistance. No shortness of breath reported. Family at bedside.",
    "Afebrile overnight. Lungs clear on auscultation. Plan: continue current antibiotics, reassess tomorrow.",
    "Blood glucose within target range. Reviewed insulin technique with patient; good understanding.",
    "Mild peripheral oedema noted. Fluid balance chart started. Physician informed.",
];

/// Deterministic, time-ordered (UUIDv7-shaped) ids: the timestamp part grows with the patient index,
/// the rest is random. Like the ids the station gives new records, they keep inserts at the right edge
/// of the id indexes instead of scattering them over pages that must be read (and, with SQLCipher,
/// decrypted) first — which is what keeps building 100k patients a matter of minutes.
struct Ids<'a> {
    rng: &'a mut ChaCha8Rng,
    millis: u64,
}

impl Ids<'_> {
    fn next(&mut self) -> Uuid {
        let random: [u8; 10] = self.rng.gen();
        uuid::Builder::from_unix_timestamp_millis(self.millis, &random).into_uuid()
    }
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    // The tables above are non-empty constants.
    &items[rng.gen_range(0..items.len())]
}

/// Patient number `index` of the population described by `config`.
pub fn patient(config: &SynthConfig, index: u64) -> Chart {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut id_rng = ChaCha8Rng::seed_from_u64(rng.gen());
    let mut ids = Ids { rng: &mut id_rng, millis: 1_600_000_000_000 + index };
    let id = ids.next();
    let units = if config.units.is_empty() { vec!["MED".to_string()] } else { config.units.clone() };
    let unit_count = units.len() as u64;
    let unit = units[usize::try_from(index % unit_count).unwrap_or(0)].clone();
    let bed_number = index / unit_count + 1;
    let (now_year, ..) = config.now.to_civil();
    let year = i32::try_from(now_year).unwrap_or(2026) - rng.gen_range(18..96);
    let birth_date = Date::new(year, rng.gen_range(1..=12), rng.gen_range(1..=28)).unwrap_or(Date {
        year,
        month: 1,
        day: 1,
    });
    let sex = if rng.gen_bool(0.5) { Sex::Female } else { Sex::Male };
    let patient = Patient {
        id,
        // Unique per index within a seed: a bijection of the index over 90 million numbers.
        mrn: format!("M{:08}", 10_000_000 + (index.wrapping_mul(7_919) + config.seed % 1_000) % 90_000_000),
        name: HumanName {
            family: pick(&mut rng, FAMILY).to_string(),
            given: pick(&mut rng, if sex == Sex::Female { GIVEN_FEMALE } else { GIVEN_MALE }).to_string(),
        },
        birth_date,
        sex,
        unit,
        bed: format!("{:02}{}", bed_number, ['A', 'B'][usize::from(rng.gen_bool(0.5))]),
        version: 1,
    };

    let mut allergy_pool: Vec<_> = ALLERGIES.iter().collect();
    allergy_pool.shuffle(&mut rng);
    let allergies = allergy_pool
        .into_iter()
        .take(rng.gen_range(0..=2))
        .map(|(substance, reaction, criticality)| Allergy {
            id: ids.next(),
            patient_id: id,
            substance: substance.to_string(),
            reaction: reaction.to_string(),
            criticality: *criticality,
            version: 1,
        })
        .collect();

    let mut cond_pool: Vec<_> = CONDITIONS.iter().collect();
    cond_pool.shuffle(&mut rng);
    let conditions = cond_pool
        .into_iter()
        .take(rng.gen_range(1..=4))
        .map(|(code, display)| Condition {
            id: ids.next(),
            patient_id: id,
            code: code.to_string(),
            display: display.to_string(),
            onset: Date::new(
                year + rng.gen_range(20..40).min(i32::try_from(now_year).unwrap_or(2026) - year),
                6,
                1,
            ),
            status: if rng.gen_bool(0.85) { ClinicalStatus::Active } else { ClinicalStatus::Resolved },
            version: 1,
        })
        .collect();

    let mut med_pool: Vec<_> = MEDICATIONS.iter().collect();
    med_pool.shuffle(&mut rng);
    let medications = med_pool
        .into_iter()
        .take(rng.gen_range(1..=5))
        .map(|(medication, dose, route, frequency)| MedicationRequest {
            id: ids.next(),
            patient_id: id,
            medication: medication.to_string(),
            dose: dose.to_string(),
            route: route.to_string(),
            frequency: frequency.to_string(),
            status: MedicationStatus::Active,
            version: 1,
        })
        .collect();

    let observations = vitals(&mut rng, &mut ids, config, id);

    let notes = (0..rng.gen_range(1..=3))
        .map(|i| {
            let created_at = Timestamp(config.now.0 - (i64::from(i) * 8 + 2) * 3_600_000);
            Note {
                id: ids.next(),
                patient_id: id,
                author_id: config.author,
                kind: if rng.gen_bool(0.7) { NoteKind::Nursing } else { NoteKind::Progress },
                text: pick(&mut rng, NOTES).to_string(),
                created_at,
                status: NoteStatus::Signed { signed_at: created_at.plus(Duration::from_secs(300)) },
                addendum_to: None,
                version: 1,
            }
        })
        .collect();

    Chart { patient, allergies, conditions, medications, observations, notes }
}

/// Vital signs every four hours going back from `now`: a per-patient baseline plus noise, kept
/// inside the plausible range.
fn vitals(
    rng: &mut ChaCha8Rng,
    ids: &mut Ids<'_>,
    config: &SynthConfig,
    patient_id: Uuid,
) -> Vec<Observation> {
    let baseline: Vec<(VitalSign, f64, f64)> = vec![
        (VitalSign::HeartRate, rng.gen_range(60.0..105.0), 8.0),
        (VitalSign::SystolicBp, rng.gen_range(105.0..150.0), 10.0),
        (VitalSign::DiastolicBp, rng.gen_range(60.0..88.0), 6.0),
        (VitalSign::Temperature, rng.gen_range(36.4..37.6), 0.4),
        (VitalSign::RespiratoryRate, rng.gen_range(12.0..22.0), 2.0),
        (VitalSign::Spo2, rng.gen_range(92.0..99.0), 1.5),
        (VitalSign::Weight, rng.gen_range(48.0..120.0), 0.3),
    ];
    let mut out = Vec::with_capacity(config.observations_per_patient);
    let mut set = 0i64;
    while out.len() < config.observations_per_patient {
        let at = Timestamp(config.now.0 - set * 4 * 3_600_000 - 15 * 60_000);
        for (vital, base, spread) in &baseline {
            if out.len() >= config.observations_per_patient {
                break;
            }
            // Weight once a day.
            if *vital == VitalSign::Weight && set % 6 != 0 {
                continue;
            }
            let (lo, hi) = vital.plausible_range();
            let raw: f64 = base + rng.gen_range(-spread..*spread);
            let decimals =
                if matches!(vital, VitalSign::Temperature | VitalSign::Weight) { 10.0 } else { 1.0 };
            let value = ((raw * decimals).round() / decimals).clamp(lo, hi);
            let value = if *vital == VitalSign::DiastolicBp {
                value.min(out_last_systolic(&out) - 10.0)
            } else {
                value
            };
            out.push(Observation {
                id: ids.next(),
                patient_id,
                vital: *vital,
                value,
                effective_at: at,
                recorded_by: config.author,
                version: 1,
            });
        }
        set += 1;
    }
    out
}

fn out_last_systolic(out: &[Observation]) -> f64 {
    out.iter().rev().find(|o| o.vital == VitalSign::SystolicBp).map_or(300.0, |o| o.value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chartroom_domain::Validate;
    use std::collections::HashSet;

    fn cfg() -> SynthConfig {
        SynthConfig::new(7, Timestamp::from_civil_date(2026, 11, 27))
    }

    #[test]
    fn deterministic_and_independent_of_population_size() {
        let c = cfg();
        assert_eq!(patient(&c, 41), patient(&c, 41));
        assert_ne!(patient(&c, 41).patient.id, patient(&c, 42).patient.id);
        let other = SynthConfig { seed: 8, ..cfg() };
        assert_ne!(patient(&c, 41).patient.id, patient(&other, 41).patient.id);
    }

    #[test]
    fn everything_generated_is_valid_and_mrns_are_unique() {
        let c = SynthConfig { observations_per_patient: 100, ..cfg() };
        let mut mrns = HashSet::new();
        for i in 0..500 {
            let b = patient(&c, i);
            b.patient.validate().unwrap();
            assert!(mrns.insert(b.patient.mrn.clone()));
            assert_eq!(b.observations.len(), 100);
            b.allergies.iter().try_for_each(|r| r.validate()).unwrap();
            b.conditions.iter().try_for_each(|r| r.validate()).unwrap();
            b.medications.iter().try_for_each(|r| r.validate()).unwrap();
            b.observations.iter().try_for_each(|r| r.validate()).unwrap();
            b.notes.iter().try_for_each(|r| r.validate()).unwrap();
            assert!(b.observations.iter().all(|o| o.effective_at <= c.now));
        }
    }
}
