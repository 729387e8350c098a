// Portcullis admin console: the one script. Pages work without it; with it, a running job's
// page follows the job until it is done, and confirmations guard buttons that start work.
"use strict";
(function () {
  // A running job: ask for it every 1.5 s (same origin, the session's cookie), and show the
  // finished page once it is done.
  const job = document.querySelector("[data-job-poll]");
  if (job) {
    const url = job.getAttribute("data-job-poll");
    const status = document.getElementById("job-status");
    const started = Date.now();
    const tick = async () => {
      try {
        const r = await fetch(url, { headers: { accept: "application/json" }, credentials: "same-origin" });
        if (r.ok) {
          const j = await r.json();
          if (j.status !== "running") {
            window.location.reload();
            return;
          }
        }
        if (status) status.textContent = "Running for " + Math.round((Date.now() - started) / 1000) + " s…";
      } catch (e) {
        if (status) status.textContent = "Cannot reach the console; retrying…";
      }
      setTimeout(tick, 1500);
    };
    setTimeout(tick, 1500);
  }
  // Buttons that start work across every computer ask first.
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (ev) => {
      if (!window.confirm(form.getAttribute("data-confirm"))) ev.preventDefault();
    });
  });
})();
