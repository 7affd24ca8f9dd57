// Progressive enhancement only: every page works without it.
"use strict";

// Times are rendered in UTC by the server; show them in the browser's zone (UTC stays on hover).
function localTimes(root) {
  root.querySelectorAll("time[datetime]").forEach((el) => {
    const t = new Date(el.getAttribute("datetime"));
    if (!Number.isNaN(t.getTime())) {
      el.textContent = t.toLocaleString();
    }
  });
}

// How long ago a request was made, next to its time ("5 min ago").
function ages(root) {
  root.querySelectorAll(".age[data-since]").forEach((el) => {
    const since = new Date(el.dataset.since);
    if (Number.isNaN(since.getTime())) return;
    const minutes = Math.max(0, Math.round((Date.now() - since.getTime()) / 60000));
    el.textContent = minutes < 60 ? `(${minutes} min ago)`
      : minutes < 2880 ? `(${Math.round(minutes / 60)} h ago)`
      : `(${Math.round(minutes / 1440)} days ago)`;
  });
}

localTimes(document);
ages(document);
setInterval(() => ages(document), 30000);

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

// Live updates (/ui/events): the pending count in the header and, on the approvals page, the
// queue, rendered by the server. When the session ends, to the login form.
const badge = document.getElementById("pending-count");
if (badge && window.EventSource) {
  const source = new EventSource("/ui/events");
  source.addEventListener("queue", (event) => {
    const update = JSON.parse(event.data);
    badge.textContent = String(update.pending);
    const queue = document.getElementById("queue");
    if (queue) {
      const parsed = new DOMParser().parseFromString(update.queue, "text/html");
      queue.replaceChildren(...parsed.body.childNodes);
      localTimes(queue);
      ages(queue);
    }
  });
  source.addEventListener("ended", () => {
    source.close();
    window.location.assign("/ui/login?expired=1");
  });
}
