// Progressive enhancement only: every page works without it.
// Times are rendered in UTC by the server; show them in the browser's zone (UTC stays on hover).
"use strict";
document.querySelectorAll("time[datetime]").forEach((el) => {
  const t = new Date(el.getAttribute("datetime"));
  if (!Number.isNaN(t.getTime())) {
    el.textContent = t.toLocaleString();
  }
});

// "Copy" buttons: data-copy names the input whose value goes to the clipboard.
document.querySelectorAll("button[data-copy]").forEach((button) => {
  button.addEventListener("click", async () => {
    const field = document.getElementById(button.dataset.copy);
    const status = document.getElementById("copy-status");
    try {
      await navigator.clipboard.writeText(field.value);
      if (status) status.textContent = "Copied.";
    } catch {
      field.select();
      if (status) status.textContent = "Select the key and copy it (Ctrl+C or Cmd+C).";
    }
  });
});
