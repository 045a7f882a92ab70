// Conflict display helpers: pretty-printing the two JSON versions and the merge starting text.
import type { ConflictDetail } from "./bindings";

/** Pretty-prints JSON text; anything that is not JSON is shown as it is. */
export function prettyJson(text: string): string {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

/** The merge editor's starting text: both versions, clearly marked, for the clinician to edit. */
export function mergeTemplate(d: Pick<ConflictDetail, "mine_text" | "theirs_text" | "mine" | "theirs">): string {
  const mine = d.mine_text ?? d.mine;
  const theirs = d.theirs_text ?? d.theirs;
  if (mine === theirs) return mine;
  return `${mine}\n\n----- Server's version -----\n${theirs}`;
}
