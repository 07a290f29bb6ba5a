// Coldchain dashboard: live updates by polling server-rendered fragments,
// and acknowledgements through the API with a bearer token kept in
// localStorage. Inserts only server-rendered (escaped) HTML; user-visible
// text set here goes through textContent.
(function () {
  "use strict";
  var TOKEN_KEY = "coldchain.token";
  var BY_KEY = "coldchain.by";
  var live = document.getElementById("live");
  var statusEl = document.getElementById("live-status");
  var forget = document.getElementById("forget-token");

  function token() { return localStorage.getItem(TOKEN_KEY) || ""; }
  function headers(extra) {
    var h = extra || {};
    var t = token();
    if (t) { h["Authorization"] = "Bearer " + t; }
    return h;
  }
  function showForget() { forget.hidden = !token(); }
  function setStatus(text, bad) {
    statusEl.textContent = text;
    statusEl.classList.toggle("bad", !!bad);
  }
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function clock() {
    var d = new Date();
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }

  var busy = false;
  function refresh() {
    var src = live && live.dataset.src;
    if (!src || busy) { return Promise.resolve(); }
    busy = true;
    var locked = live.dataset.locked === "1";
    if (locked && !token()) { busy = false; return Promise.resolve(); }
    return fetch(src, { headers: headers(), cache: "no-store" })
      .then(function (r) {
        if (r.status === 401 && locked) {
          localStorage.removeItem(TOKEN_KEY);
          showForget();
          var te = document.getElementById("token-error");
          if (te) { te.textContent = "wrong token"; }
        }
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.text();
      })
      .then(function (html) {
        live.innerHTML = html;
        live.dataset.locked = "0";
        setStatus("updated " + clock(), false);
      })
      .catch(function (e) { setStatus("update failed (" + e.message + ")", true); })
      .then(function () { busy = false; });
  }
  if (live && live.dataset.src) {
    var every = (parseInt(live.dataset.pollS, 10) || 5) * 1000;
    setInterval(refresh, every);
    if (live.dataset.locked === "1") {
      // A page served without data (the daemon needs the token for reads):
      // with a token kept from before, load the content now; else ask.
      setStatus(token() ? "loading" : "token needed", !token());
      refresh();
    } else {
      setStatus("live, updated " + clock(), false);
    }
  }
  document.addEventListener("submit", function (e) {
    if (!e.target || e.target.id !== "token-form") { return; }
    e.preventDefault();
    var v = document.getElementById("token-input").value.trim();
    if (!v) { return; }
    localStorage.setItem(TOKEN_KEY, v);
    showForget();
    refresh();
  });

  forget.addEventListener("click", function () {
    localStorage.removeItem(TOKEN_KEY);
    showForget();
  });
  showForget();

  // Acknowledgement dialog.
  var dlg = document.getElementById("ack-dialog");
  var form = document.getElementById("ack-form");
  var what = document.getElementById("ack-what");
  var by = document.getElementById("ack-by");
  var comment = document.getElementById("ack-comment");
  var tokenLabel = document.getElementById("ack-token-label");
  var tokenInput = document.getElementById("ack-token");
  var err = document.getElementById("ack-error");
  var submit = document.getElementById("ack-submit");
  var alertId = null;

  document.addEventListener("click", function (e) {
    var b = e.target.closest ? e.target.closest("button.ack") : null;
    if (!b) { return; }
    alertId = b.dataset.alert;
    what.textContent = "#" + alertId + ": " + (b.dataset.what || "");
    by.value = localStorage.getItem(BY_KEY) || "";
    comment.value = "";
    tokenInput.value = "";
    tokenLabel.hidden = !!token();
    tokenInput.required = !token();
    err.textContent = "";
    dlg.showModal();
    (by.value ? comment : by).focus();
  });
  document.getElementById("ack-cancel").addEventListener("click", function () { dlg.close(); });

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    if (!alertId) { return; }
    if (!token() && tokenInput.value.trim()) {
      localStorage.setItem(TOKEN_KEY, tokenInput.value.trim());
    }
    localStorage.setItem(BY_KEY, by.value.trim());
    err.textContent = "";
    submit.disabled = true;
    fetch("/api/v1/alerts/" + encodeURIComponent(alertId) + "/ack", {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify({ by: by.value.trim(), comment: comment.value.trim() })
    })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (body) {
          if (r.ok) {
            dlg.close();
            setStatus("alert #" + alertId + " acknowledged", false);
            return refresh();
          }
          if (r.status === 401 || r.status === 403) {
            localStorage.removeItem(TOKEN_KEY);
            tokenLabel.hidden = false;
            tokenInput.required = true;
          }
          err.textContent = (body && body.error) ? body.error : ("HTTP " + r.status);
        });
      })
      .catch(function (e2) { err.textContent = "cannot reach the daemon: " + e2.message; })
      .then(function () { submit.disabled = false; showForget(); });
  });
})();
