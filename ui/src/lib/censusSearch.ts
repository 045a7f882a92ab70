// Census search: precomputed lowercase keys so typing stays fast at 10,000 rows. The index is
// built once per census load; a keystroke only walks the arrays (no per-row allocation).
import type { CensusRow } from "./bindings";

export interface CensusIndex {
  rows: CensusRow[];
  /** Lowercased name, parallel to `rows`. */
  names: string[];
  mrns: string[];
  beds: string[];
}

export function buildCensusIndex(rows: CensusRow[]): CensusIndex {
  const sorted = [...rows].sort(compareRows);
  return {
    rows: sorted,
    names: sorted.map((r) => r.name.toLowerCase()),
    mrns: sorted.map((r) => r.mrn.toLowerCase()),
    beds: sorted.map((r) => r.bed.toLowerCase()),
  };
}

// One collator for the whole sort: `localeCompare` with options builds one per call (slow at 10k).
const natural = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

/** Default census order: by unit, then bed (natural order, so "B2" before "B10"). */
function compareRows(a: CensusRow, b: CensusRow): number {
  return natural.compare(a.unit, b.unit) || natural.compare(a.bed, b.bed);
}

export interface CensusResult {
  rows: CensusRow[];
  /** How many rows matched before the display limit. */
  total: number;
}

/**
 * Rank of a row for the query: 0 = exact bed/MRN, 1 = prefix of bed/MRN/name or a name word,
 * 2 = substring anywhere, -1 = no match. Exact and prefix hits come first so typing "12" finds
 * bed 12 before MRN 100012.
 */
function rank(ix: CensusIndex, i: number, q: string): number {
  const mrn = ix.mrns[i];
  const bed = ix.beds[i];
  if (mrn === q || bed === q) return 0;
  const name = ix.names[i];
  if (mrn.startsWith(q) || bed.startsWith(q) || name.startsWith(q)) return 1;
  const at = name.indexOf(q);
  if (at > 0) {
    const before = name.charCodeAt(at - 1);
    // A word start after a space, comma or hyphen ("doe, jane" → "jane").
    return before === 32 || before === 44 || before === 45 ? 1 : 2;
  }
  if (mrn.includes(q) || bed.includes(q)) return 2;
  return -1;
}

/** Filters and ranks the census. `limit` bounds what the table renders; `total` counts all hits. */
export function searchCensus(ix: CensusIndex, query: string, mineOnly: boolean, limit: number): CensusResult {
  const q = query.trim().toLowerCase();
  const buckets: number[][] = [[], [], []];
  let total = 0;
  for (let i = 0; i < ix.rows.length; i++) {
    if (mineOnly && !ix.rows[i].mine) continue;
    const r = q === "" ? 1 : rank(ix, i, q);
    if (r < 0) continue;
    total++;
    // Each bucket keeps at most `limit` indices: the output never needs more from any one rank.
    if (buckets[r].length < limit) buckets[r].push(i);
  }
  const out: CensusRow[] = [];
  for (const b of buckets) {
    for (const i of b) {
      if (out.length >= limit) break;
      out.push(ix.rows[i]);
    }
  }
  return { rows: out, total };
}

/**
 * Whether the search text looks like a medical record number, so that a miss can offer
 * emergency access: one token of letters, digits and hyphens ("M10004711", "MRN-000123") with
 * at least four digits. Names and bed labels ("ICU-3") do not qualify.
 */
export function looksLikeMrn(query: string): boolean {
  const q = query.trim();
  if (!/^[A-Za-z0-9-]{4,32}$/.test(q)) return false;
  let digits = 0;
  for (let i = 0; i < q.length; i++) {
    const c = q.charCodeAt(i);
    if (c >= 48 && c <= 57) digits++;
  }
  return digits >= 4;
}
