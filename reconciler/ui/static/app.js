// Sluice dashboard: live updates without a reload, and filters that apply on change.
// No build step, no library. The page polls a tiny endpoint (version: the data
// generation, ETag/304) twice a second while visible and every 5 s when hidden;
// when the generation differs from the page's, it fetches itself again and swaps
// its parts in place (header tip, notice, filters, content). No connection is
// held open per tab, so any number of tabs update.
"use strict";
(function () {
  var VISIBLE_MS = 500, HIDDEN_MS = 5000;
  var SWAPPED = ["tip", "notice", "filters", "live"];
  var body = document.body;
  var root = body.getAttribute("data-root") || "./";
  var versionUrl = new URL(root + "version", location.href).href;
  var state = document.getElementById("live-state");
  var etag = null, timer = null, polling = false;

  // filters apply on change; delegated, so a swapped-in form works too
  document.addEventListener("change", function (ev) {
    var s = ev.target;
    if (s && s.matches && s.matches("select.auto") && s.form) { s.form.submit(); }
  });

  function say(text, cls) {
    if (state) { state.textContent = text; state.className = "live " + cls; }
  }

  function swap(doc) {
    SWAPPED.forEach(function (id) {
      var fresh = doc.getElementById(id), cur = document.getElementById(id);
      if (!fresh || !cur) { return; }
      if (id === "filters" && cur.contains(document.activeElement)) { return; }  // never under the user's hands
      cur.replaceWith(document.importNode(fresh, true));
    });
    body.setAttribute("data-token", doc.body.getAttribute("data-token") || "");
    window.sluiceUpdates = (window.sluiceUpdates || 0) + 1;
    window.sluiceUpdatedAt = Date.now();
  }

  function refresh() {
    return fetch(location.href, {cache: "no-store", credentials: "same-origin"})
      .then(function (resp) {
        // a 404 is the server's own page ("no release ... at this tip"): show it
        if (!resp.ok && resp.status !== 404) { throw new Error("HTTP " + resp.status); }
        return resp.text();
      })
      .then(function (text) { swap(new DOMParser().parseFromString(text, "text/html")); });
  }

  function poll() {
    if (timer !== null) { clearTimeout(timer); timer = null; }   // one loop, whoever calls
    if (polling) { return; }
    polling = true;
    fetch(versionUrl, {cache: "no-store", credentials: "same-origin",
                       headers: etag ? {"If-None-Match": etag} : {}})
      .then(function (resp) {
        if (resp.status === 304) { return null; }
        if (!resp.ok) { throw new Error("HTTP " + resp.status); }
        etag = resp.headers.get("ETag");
        return resp.json();
      })
      .then(function (v) {
        if (v && String(v.generation) !== body.getAttribute("data-token")) { return refresh(); }
      })
      .then(function () { say("live", "on"); },
            function () { say("offline", "off"); etag = null; })
      .then(function () { polling = false; schedule(); });
  }

  function schedule() {
    timer = setTimeout(poll, document.visibilityState === "hidden" ? HIDDEN_MS : VISIBLE_MS);
  }

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState !== "hidden" && !polling) { poll(); }
  });
  poll();
})();
