// Pangolin Gateway admin UI: the little script the pages need, nothing else.
// Served from 'self' under a CSP with no inline script; it reads no secret into storage.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Copy buttons: the text of the element named by data-copy. The message never repeats
  // what was copied (it may be a key).
  const status = document.getElementById("copied");
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copy);
      const text = source.value !== undefined ? source.value : source.textContent;
      try {
        await navigator.clipboard.writeText(text);
        button.textContent = "Copied";
        if (status) status.textContent = "Copied to the clipboard.";
      } catch (error) {
        // No clipboard (an insecure origin, a denied permission): select it for Ctrl+C.
        if (source.select) source.select();
        if (status) status.textContent = "Select the text and copy it with Ctrl+C.";
      }
    });
  }
  // Picking a date chooses "On a date": else the checked preset (90 days) would win unseen.
  const day = document.getElementById("expires_on");
  const onDate = document.querySelector('input[name="expiry"][value="date"]');
  if (day && onDate) {
    day.addEventListener("input", () => { if (day.value) onDate.checked = true; });
  }
  // The one-time key dialog: focus goes to it. It is no <dialog> element, so Escape and a
  // click outside do nothing; only "I have copied the key" and Done leave it.
  const dialog = document.getElementById("key-dialog");
  if (dialog) {
    const key = document.getElementById("api-key");
    (key || dialog).focus();
    if (key) key.select();
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape") event.preventDefault();
    });
  }
});
