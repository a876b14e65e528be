// The console's only script of its own: the copy button of a revealed secret. Everything else works
// without JavaScript; htmx (beside this file) only makes it smoother.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  try {
    await navigator.clipboard.writeText(field.value);
    button.textContent = "Copied";
  } catch {
    field.select();  // no clipboard (an insecure origin, a refusal): selected, for Ctrl+C
    button.textContent = "Press Ctrl+C";
  }
});
