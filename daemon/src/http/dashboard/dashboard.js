// Coldchain dashboard: live updates by polling server-rendered fragments;
// log in, acknowledge, assess and sign through the API with the session
// cookie (HttpOnly: this script never sees it) and the page's CSRF token.
// Nothing is kept in localStorage. Inserts only server-rendered (escaped)
// HTML; user-visible text set here goes through textContent.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var statusEl = document.getElementById("live-status");
  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.getAttribute("content") : "";

  function headers(extra) {
    var h = extra || {};
    if (csrf) { h["X-CSRF-Token"] = csrf; }
    return h;
  }
  function setStatus(text, bad) {
    if (!statusEl) { return; }
    statusEl.textContent = text;
    statusEl.classList.toggle("bad", !!bad);
  }
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function clock() {
    var d = new Date();
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }
  function toLogin() {
    location.assign("/login?next=" + encodeURIComponent(location.pathname));
  }
  function postJson(url, body) {
    return fetch(url, {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify(body)
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (b) { return { r: r, body: b }; });
    });
  }

  var busy = false;
  function refresh() {
    var src = live && live.dataset.src;
    if (!src || busy) { return Promise.resolve(); }
    busy = true;
    return fetch(src, { headers: { "X-Coldchain-Poll": "1" }, cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) { setStatus("signed out (session ended)", true); toLogin(); }
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.text();
      })
      .then(function (html) {
        live.innerHTML = html;
        setStatus("updated " + clock(), false);
      })
      .catch(function (e) { setStatus("update failed (" + e.message + ")", true); })
      .then(function () { busy = false; });
  }
  if (live && live.dataset.src) {
    if (live.dataset.locked === "1") {
      setStatus("sign in needed", true);
      toLogin();
      return;
    }
    var every = (parseInt(live.dataset.pollS, 10) || 5) * 1000;
    setInterval(refresh, every);
    setStatus("live, updated " + clock(), false);
  }

  // The list's filter by site: a GET form (the choice stays in the
  // address); submitted as soon as the choice changes. Delegated: the
  // polled fragment replaces the form.
  document.addEventListener("change", function (e) {
    var sel = e.target;
    if (sel && sel.id === "site" && sel.form && sel.form.id === "site-filter") { sel.form.submit(); }
  });

  // Log in.
  var loginForm = document.getElementById("login-form");
  if (loginForm) {
    var oldPassword = "";
    var goNext = function () {
      var next = new URLSearchParams(location.search).get("next") || "/";
      if (next.charAt(0) !== "/" || next.charAt(1) === "/") { next = "/"; }
      location.assign(next);
    };
    loginForm.addEventListener("submit", function (e) {
      e.preventDefault();
      var err = document.getElementById("login-error");
      err.textContent = "";
      oldPassword = document.getElementById("login-password").value;
      postJson("/api/v1/login", {
        name: document.getElementById("login-name").value.trim(),
        password: oldPassword
      }).then(function (x) {
        if (!x.r.ok) { err.textContent = x.body.error || ("HTTP " + x.r.status); return; }
        if (x.body.must_change_password) {
          csrf = x.body.csrf || "";
          loginForm.hidden = true;
          document.getElementById("newpw-form").hidden = false;
          document.getElementById("newpw").focus();
          return;
        }
        goNext();
      }).catch(function (e2) { err.textContent = "cannot reach the daemon: " + e2.message; });
    });
    document.getElementById("newpw-form").addEventListener("submit", function (e) {
      e.preventDefault();
      var err = document.getElementById("newpw-error");
      err.textContent = "";
      postJson("/api/v1/me/password", {
        old_password: oldPassword,
        new_password: document.getElementById("newpw").value
      }).then(function (x) {
        if (!x.r.ok) { err.textContent = x.body.error || ("HTTP " + x.r.status); return; }
        // Changing the password ends the session: log in with the new one.
        oldPassword = "";
        document.getElementById("newpw-form").hidden = true;
        loginForm.hidden = false;
        document.getElementById("login-password").value = "";
        document.getElementById("login-error").textContent = "password changed: log in with the new one";
      }).catch(function (e2) { err.textContent = "cannot reach the daemon: " + e2.message; });
    });
  }
  var logout = document.getElementById("logout");
  if (logout) {
    logout.addEventListener("click", function () {
      postJson("/api/v1/logout", {}).then(function () { location.assign("/login"); });
    });
  }

  // Acknowledge, assess, sign: one dialog.
  var dlg = document.getElementById("act-dialog");
  if (!dlg) { return; }
  var form = document.getElementById("act-form");
  var title = document.getElementById("act-title");
  var what = document.getElementById("act-what");
  var comment = document.getElementById("act-comment");
  var commentLabel = document.getElementById("act-comment-label");
  var decisionLabel = document.getElementById("act-decision-label");
  var decision = document.getElementById("act-decision");
  var passwordLabel = document.getElementById("act-password-label");
  var password = document.getElementById("act-password");
  var sha = document.getElementById("act-sha");
  var err = document.getElementById("act-error");
  var submit = document.getElementById("act-submit");
  var current = null;

  var kinds = {
    ack: { title: "Acknowledge alert", label: "What was done", button: "Acknowledge" },
    assess: { title: "QA assessment", label: "Impact on the product, and why", button: "Record assessment" },
    sign: { title: "Sign the disposition", label: "Reason", button: "Sign" }
  };

  document.addEventListener("click", function (e) {
    var b = e.target.closest ? e.target.closest("button.act") : null;
    if (!b) { return; }
    var k = kinds[b.dataset.action];
    if (!k) { return; }
    current = { action: b.dataset.action, alert: b.dataset.alert, shipment: b.dataset.shipment, sha: b.dataset.sha };
    title.textContent = k.title;
    commentLabel.textContent = k.label;
    submit.textContent = k.button;
    what.textContent = current.alert ? ("#" + current.alert + ": " + (b.dataset.what || "")) : (b.dataset.what || "");
    var signing = current.action === "sign";
    decisionLabel.hidden = !signing;
    passwordLabel.hidden = !signing;
    password.required = signing;
    password.value = "";
    sha.textContent = signing ? ("Your signature covers the arrival report with SHA-256 " + current.sha) : "";
    comment.value = "";
    err.textContent = "";
    dlg.showModal();
    comment.focus();
  });
  document.getElementById("act-cancel").addEventListener("click", function () { dlg.close(); });

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    if (!current) { return; }
    var url, body;
    if (current.action === "ack") {
      url = "/api/v1/alerts/" + encodeURIComponent(current.alert) + "/ack";
      body = { comment: comment.value.trim() };
    } else if (current.action === "assess") {
      url = "/api/v1/alerts/" + encodeURIComponent(current.alert) + "/assess";
      body = { comment: comment.value.trim() };
    } else {
      url = "/api/v1/shipments/" + encodeURIComponent(current.shipment) + "/close";
      body = { decision: decision.value, comment: comment.value.trim(), password: password.value, report_sha256: current.sha };
    }
    err.textContent = "";
    submit.disabled = true;
    postJson(url, body)
      .then(function (x) {
        password.value = "";
        if (x.r.ok) {
          dlg.close();
          setStatus(title.textContent + ": done", false);
          return refresh();
        }
        if (x.r.status === 401) { toLogin(); return; }
        err.textContent = x.body.error || ("HTTP " + x.r.status);
      })
      .catch(function (e2) { err.textContent = "cannot reach the daemon: " + e2.message; })
      .then(function () { submit.disabled = false; });
  });
})();
