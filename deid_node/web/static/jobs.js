// Send the form (the browser streams the files), then show the job's progress.
(function () {
  "use strict";
  const form = document.getElementById("job-form");
  if (!form) return;
  const state = document.getElementById("job-state");
  const bar = document.getElementById("job-progress");
  const text = document.getElementById("job-text");
  const link = document.getElementById("job-download");
  form.addEventListener("submit", function (e) {
    e.preventDefault();
    const data = new FormData(form);
    state.hidden = false; text.textContent = "uploading";
    fetch("/api/jobs", { method: "POST", body: data, credentials: "same-origin" })
      .then(function (r) { return r.json().then(function (j) { return [r.ok, j]; }); })
      .then(function (res) {
        if (!res[0]) { text.textContent = "refused: " + (res[1].detail || "error"); return; }
        poll(res[1].id);
      });
  });
  function poll(id) {
    fetch("/api/jobs/" + id, { credentials: "same-origin" }).then(function (r) { return r.json(); })
      .then(function (j) {
        bar.max = Math.max(j.total, 1); bar.value = j.done;
        text.textContent = j.status + ": " + j.done + " of " + j.total + ", " + j.written + " written, " + j.quarantined + " not";
        if (j.status === "done") { link.href = "/api/jobs/" + id + "/download"; link.hidden = false; }
        else if (j.status !== "failed") setTimeout(function () { poll(id); }, 300);
      });
  }
})();
