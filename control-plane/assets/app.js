// Progressive enhancement only: every page works without it.
// Times are rendered in UTC by the server; show them in the browser's zone (UTC stays on hover).
"use strict";
document.querySelectorAll("time[datetime]").forEach((el) => {
  const t = new Date(el.getAttribute("datetime"));
  if (!Number.isNaN(t.getTime())) {
    el.textContent = t.toLocaleString();
  }
});
