// The footer's time-zone toggle: "show local time" asks for the browser's own zone by name
// (without this script the link asks for the server's local zone). The choice is kept in a cookie.
(function () {
  "use strict";
  const a = document.getElementById("tz-toggle");
  if (!a) return;
  const q = new URLSearchParams(window.location.search);
  let zone = a.dataset.to;
  if (zone === "local") {
    try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local"; } catch (e) { zone = "local"; }
  }
  q.set("tz", zone);
  a.href = "?" + q.toString();
})();
