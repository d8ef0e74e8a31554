// The letter page: while a PDF is being generated, or the executed PDF assembled, ask the
// server how it is going and reload the page when it is done. Without JavaScript the page shows
// a "Refresh" link instead.
(function () {
  "use strict";

  var notice = document.querySelector("[data-status-url]");
  if (!notice || !window.fetch) {
    return;
  }
  var url = notice.getAttribute("data-status-url");
  var text = notice.querySelector("[data-status-text]");
  var title = notice.querySelector("[data-status-title]");
  var started = Date.now();
  var delay = 500;
  var limit = 5 * 60 * 1000;

  function check() {
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (response) {
        if (response.status === 401 || response.status === 404) {
          window.location.reload();  // signed out, or gone: the page itself says so
          return new Promise(function () {});
        }
        if (!response.ok) {
          throw new Error("status " + response.status);
        }
        return response.json();
      })
      .then(function (status) {
        if (!status.pending && !status.assembling) {
          if (text) {
            text.textContent = "Done. Showing the pages…";
          }
          window.location.reload();
          return;
        }
        // No worker is running: say so (and go on asking, for when one starts).
        if (status.pending && text && title) {
          title.textContent = status.worker_note ? "Waiting for a background worker"
                                                 : "Generating PDF…";
          text.textContent = status.worker_note || "This takes a second or two; the page " +
                                                   "shows the pages when it is done.";
        }
        schedule();
      })
      .catch(function () {
        schedule();
      });
  }

  function schedule() {
    if (Date.now() - started > limit) {
      if (text) {
        text.textContent = "This is taking longer than usual. Refresh the page to check again.";
      }
      return;
    }
    delay = Math.min(delay * 1.3, 3000);
    window.setTimeout(check, delay);
  }

  window.setTimeout(check, delay);
})();
