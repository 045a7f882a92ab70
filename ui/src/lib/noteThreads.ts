// Note list shape: top-level notes newest first, each with its addenda (oldest first) beneath it,
// and the signed-in user's own open draft (the backend never sends other users' drafts).
import type { NoteView } from "./bindings";

export interface NoteThread {
  note: NoteView;
  addenda: NoteView[];
}

function time(n: NoteView): number {
  const t = Date.parse(n.signed_at ?? n.created_at);
  return Number.isNaN(t) ? 0 : t;
}

/** Threads of non-draft notes, newest first; addenda whose parent is missing become threads. */
export function noteThreads(notes: NoteView[]): NoteThread[] {
  const finished = notes.filter((n) => n.status !== "draft");
  const ids = new Set(finished.map((n) => n.id));
  const threads = new Map<string, NoteThread>();
  for (const n of finished) {
    if (n.addendum_to === null || !ids.has(n.addendum_to)) threads.set(n.id, { note: n, addenda: [] });
  }
  for (const n of finished) {
    if (n.addendum_to !== null && ids.has(n.addendum_to)) threads.get(n.addendum_to)?.addenda.push(n);
  }
  const out = [...threads.values()].sort((a, b) => time(b.note) - time(a.note));
  for (const t of out) t.addenda.sort((a, b) => time(a) - time(b));
  return out;
}

/** The user's own newest draft (not an addendum), if any. */
export function myDraft(notes: NoteView[]): NoteView | null {
  let best: NoteView | null = null;
  for (const n of notes) {
    if (n.status === "draft" && n.mine && n.addendum_to === null && (!best || time(n) > time(best))) best = n;
  }
  return best;
}

/** Replaces the note with the same id or adds it. */
export function upsertNote(notes: NoteView[], note: NoteView): NoteView[] {
  const i = notes.findIndex((n) => n.id === note.id);
  if (i < 0) return [...notes, note];
  const copy = [...notes];
  copy[i] = note;
  return copy;
}
