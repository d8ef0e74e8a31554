// Times on staff pages: the server writes each one in UTC (so the page reads right without
// JavaScript); this shows it in the browser's own time zone instead, and keeps the UTC time
// in the title, shown on hover.
(function () {
  "use strict";

  if (!window.Intl || !Intl.DateTimeFormat) {
    return;
  }
  var format = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
    hourCycle: "h23", timeZoneName: "short"
  });
  var zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "";

  function localise(element) {
    var moment = new Date(element.getAttribute("datetime"));
    if (isNaN(moment.getTime())) {
      return;
    }
    if (!element.title) {
      element.title = element.textContent;
    }
    element.textContent = format.format(moment);
    element.setAttribute("data-local", zone);
  }

  function run() {
    document.querySelectorAll("time[data-local=''][datetime]").forEach(localise);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", run);
  } else {
    run();
  }
})();
