// Keyboard-first: move focus to the given element once it is in the document.
// (An attachment instead of `autofocus`, which Svelte's a11y checks warn about and which only
// works on page load, not when a view is swapped in.)
export function focusOnMount(node: HTMLElement): void {
  node.focus();
}
