//! The census as the UI searches it: loaded from the vault once (again when the UI asks, after a
//! sync or a local write), kept in the shell while the session is active, searched here at each
//! keystroke. Only the rows the table draws cross to the webview, so a 10,000-patient unit costs
//! the page 50 rows, not 10,000 (the page's memory and each keystroke's work stay small). Dropped
//! at every lock with the rest of the session.

use std::cmp::Ordering;

use uuid::Uuid;

use crate::dto::{CensusPage, CensusRow};

/// The loaded census of one user's session, sorted by unit then bed, with lowercase search keys.
pub struct Census {
    /// Whose census this is (a different user signed in means it must be loaded again).
    pub user: Uuid,
    pub partial: bool,
    pub units: Vec<String>,
    rows: Vec<CensusRow>,
    names: Vec<String>,
    mrns: Vec<String>,
    beds: Vec<String>,
}

/// Never prints a patient: only how many there are.
impl std::fmt::Debug for Census {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Census").field("patients", &self.rows.len()).finish_non_exhaustive()
    }
}

impl Census {
    pub fn new(user: Uuid, mut rows: Vec<CensusRow>, partial: bool) -> Census {
        rows.sort_by(|a, b| natural(&a.unit, &b.unit).then_with(|| natural(&a.bed, &b.bed)));
        let mut units: Vec<String> = rows.iter().map(|r| r.unit.clone()).collect();
        units.dedup();
        Census {
            user,
            partial,
            units,
            names: rows.iter().map(|r| r.name.to_lowercase()).collect(),
            mrns: rows.iter().map(|r| r.mrn.to_lowercase()).collect(),
            beds: rows.iter().map(|r| r.bed.to_lowercase()).collect(),
            rows,
        }
    }

    /// How many patients it lists.
    pub fn patients(&self) -> usize {
        self.rows.len()
    }

    /// Rank of row `i` for the lowercase query `q`: 0 = exact bed or MRN, 1 = prefix of bed, MRN,
    /// name or a name word, 2 = substring anywhere, `None` = no match. Exact and prefix hits come
    /// first, so typing "12" finds bed 12 before MRN 100012.
    fn rank(&self, i: usize, q: &str) -> Option<usize> {
        let (name, mrn, bed) = (&self.names[i], &self.mrns[i], &self.beds[i]);
        if mrn == q || bed == q {
            return Some(0);
        }
        if mrn.starts_with(q) || bed.starts_with(q) || name.starts_with(q) {
            return Some(1);
        }
        if let Some(at) = name.find(q).filter(|at| *at > 0) {
            // A word start after a space, comma or hyphen ("doe, jane" → "jane").
            return Some(if matches!(name.as_bytes()[at - 1], b' ' | b',' | b'-') { 1 } else { 2 });
        }
        (mrn.contains(q) || bed.contains(q)).then_some(2)
    }

    /// The rows matching `query` (name, MRN or bed, any case), best first and then in census order,
    /// at most `limit` of them; `total` counts every match.
    pub fn search(&self, query: &str, mine_only: bool, limit: usize) -> CensusPage {
        let q = query.trim().to_lowercase();
        let mut buckets: [Vec<usize>; 3] = Default::default();
        let mut total = 0u32;
        for i in 0..self.rows.len() {
            if mine_only && !self.rows[i].mine {
                continue;
            }
            let Some(r) = (if q.is_empty() { Some(1) } else { self.rank(i, &q) }) else { continue };
            total += 1;
            // No bucket ever needs more than `limit` rows.
            if buckets[r].len() < limit {
                buckets[r].push(i);
            }
        }
        let rows = buckets.iter().flatten().take(limit).map(|&i| self.rows[i].clone()).collect();
        CensusPage { rows, total }
    }

    /// Marks a patient as one of the physician's own (or not).
    pub fn set_mine(&mut self, mrn: &str, mine: bool) {
        for r in self.rows.iter_mut().filter(|r| r.mrn == mrn) {
            r.mine = mine;
        }
    }
}

/// Natural order, ignoring case: runs of digits compare by value, so bed "B2" comes before "B10".
fn natural(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let (da, ra) = split_digits(a);
                let (db, rb) = split_digits(b);
                let (na, nb) = (trim_zeros(da), trim_zeros(db));
                let order = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if order != Ordering::Equal {
                    return order;
                }
                (a, b) = (ra, rb);
            }
            (Some(x), Some(y)) => {
                let order = x.to_ascii_lowercase().cmp(&y.to_ascii_lowercase());
                if order != Ordering::Equal {
                    return order;
                }
                (a, b) = (&a[1..], &b[1..]);
            }
        }
    }
}

fn split_digits(s: &[u8]) -> (&[u8], &[u8]) {
    s.split_at(s.iter().position(|c| !c.is_ascii_digit()).unwrap_or(s.len()))
}

fn trim_zeros(s: &[u8]) -> &[u8] {
    &s[s.iter().position(|c| *c != b'0').unwrap_or(s.len())..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: u32, name: &str, bed: &str, unit: &str, mine: bool) -> CensusRow {
        CensusRow {
            patient_id: Uuid::from_u128(u128::from(i)),
            mrn: format!("M{}", 10_000_000 + i),
            name: name.into(),
            age: "50 y".into(),
            sex: "F".into(),
            unit: unit.into(),
            bed: bed.into(),
            allergy_count: 0,
            last_vitals_at: None,
            mine,
        }
    }

    fn census() -> Census {
        let mut smith = row(2, "Smith, John", "3", "MED", false);
        smith.mrn = "M00000012".into();
        Census::new(
            Uuid::nil(),
            vec![
                row(1, "Doe, Jane", "12", "MED", true),
                smith,
                row(3, "Adams, Jo", "10", "MED", false),
                row(4, "Jones, Mary", "2", "ICU", false),
            ],
            false,
        )
    }

    fn names(page: &CensusPage) -> Vec<&str> {
        page.rows.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn an_empty_query_lists_by_unit_then_bed_in_natural_order() {
        let c = census();
        let page = c.search("", false, 50);
        assert_eq!(page.rows.iter().map(|r| r.bed.as_str()).collect::<Vec<_>>(), ["2", "3", "10", "12"]);
        assert_eq!(page.total, 4);
        assert_eq!(c.units, ["ICU", "MED"]);
    }

    #[test]
    fn name_mrn_and_bed_match_in_any_case() {
        let c = census();
        assert_eq!(names(&c.search("JANE", false, 50)), ["Doe, Jane"]);
        assert_eq!(names(&c.search(" m00000012 ", false, 50)), ["Smith, John"]);
        assert_eq!(names(&c.search("zzz", false, 50)), Vec::<&str>::new());
    }

    #[test]
    fn an_exact_bed_comes_before_substring_hits() {
        let page = census().search("12", false, 50);
        assert_eq!(names(&page), ["Doe, Jane", "Smith, John"]);
    }

    #[test]
    fn name_word_starts_rank_before_inner_substrings() {
        let c = Census::new(
            Uuid::nil(),
            vec![row(1, "Majo, Ann", "1", "MED", false), row(2, "Adams, Jo", "2", "MED", false)],
            false,
        );
        assert_eq!(names(&c.search("jo", false, 50)), ["Adams, Jo", "Majo, Ann"]);
    }

    #[test]
    fn my_patients_only() {
        let mut c = census();
        assert_eq!(names(&c.search("", true, 50)), ["Doe, Jane"]);
        c.set_mine("M10000003", true);
        assert_eq!(names(&c.search("", true, 50)), ["Adams, Jo", "Doe, Jane"]);
    }

    #[test]
    fn the_limit_bounds_rows_not_the_count_and_keeps_the_best_ranked() {
        let mut rows: Vec<CensusRow> =
            (0..50).map(|i| row(i, &format!("Xabc{i}"), &format!("Z{i}"), "MED", false)).collect();
        rows.push(row(99, "Abc, Exact", "A1", "MED", false));
        let page = Census::new(Uuid::nil(), rows, false).search("abc", false, 5);
        assert_eq!(page.rows.len(), 5);
        assert_eq!(page.rows[0].name, "Abc, Exact");
        assert_eq!(page.total, 51);
    }

    #[test]
    fn debug_output_names_no_patient() {
        let shown = format!("{:?}", census());
        assert!(shown.contains("patients: 4"), "{shown}");
        assert!(!shown.contains("Jane") && !shown.contains("M1000"), "{shown}");
    }

    #[test]
    fn natural_order_compares_numbers_by_value() {
        let mut beds = vec!["B10", "b2", "B1", "A", "B02a", "B2b", ""];
        beds.sort_by(|a, b| natural(a, b));
        assert_eq!(beds, ["", "A", "B1", "b2", "B02a", "B2b", "B10"]);
    }
}
