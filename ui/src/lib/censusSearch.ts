// The census search itself runs in the backend (src-tauri/src/census.rs); what the page decides
// on its own is whether a query that found nothing deserves the emergency-access offer.

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
