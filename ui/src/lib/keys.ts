// Keyboard helpers for global shortcuts.

/** Whether a key event comes from a field the user is typing into (then `/` is just a slash). */
export function isTypingTarget(target: EventTarget | null): boolean {
  if (!target || typeof (target as Element).tagName !== "string") return false;
  const el = target as HTMLElement;
  const tag = el.tagName;
  if (tag === "TEXTAREA" || tag === "SELECT" || el.isContentEditable) return true;
  if (tag !== "INPUT") return false;
  const type = (el as HTMLInputElement).type;
  return !["button", "checkbox", "radio", "submit", "reset"].includes(type);
}

/** Alt+1..9 → 0-based index, else null. */
export function altDigit(event: Pick<KeyboardEvent, "altKey" | "ctrlKey" | "metaKey" | "code">): number | null {
  if (!event.altKey || event.ctrlKey || event.metaKey) return null;
  const m = /^Digit([1-9])$/.exec(event.code);
  return m ? Number(m[1]) - 1 : null;
}
