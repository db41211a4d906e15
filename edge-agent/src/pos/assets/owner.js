// The owner's page: today's figures (satisfaction is private to the owner), paired tablets,
// pairing codes, the box's health, and claiming a blank box for the shop.
let session = sessionStorage.getItem("ownerSession");
let pinSet = true;
let overview = null;

async function api(path, options = {}) {
  const res = await fetch(path, {
    ...options,
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${session}` },
  });
  const body = res.status === 204 ? {} : await res.json().catch(() => ({}));
  if (res.status === 401) { session = null; sessionStorage.removeItem("ownerSession"); showLogin(); throw new Error(body.error); }
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
}

async function showLogin() {
  const status = await fetch("/api/owner/status").then((r) => r.json());
  pinSet = status.pin_set;
  document.getElementById("dashboard").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("login-title").textContent = t(pinSet ? "owner_login" : "owner_setup");
  document.getElementById("login-help").textContent = pinSet ? "" : t("owner_setup_help");
  document.getElementById("login-button").textContent = t(pinSet ? "login" : "set_pin");
  document.getElementById("setup-code-field").hidden = pinSet || !status.setup_code_required;
  const unclaimed = document.getElementById("login-unclaimed");
  unclaimed.hidden = status.box.standing !== "setup";
  unclaimed.textContent = t("claim_after_login");
}

document.getElementById("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const res = await fetch(pinSet ? "/api/owner/login" : "/api/owner/setup", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(pinSet
      ? { pin: document.getElementById("pin").value }
      : { pin: document.getElementById("pin").value, setup_code: document.getElementById("setup-code").value }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) { document.getElementById("login-error").textContent = body.error || res.statusText; return; }
  session = body.token;
  sessionStorage.setItem("ownerSession", session);
  showDashboard();
});

function pct(v) { return v === null || v === undefined ? "–" : `${Math.round(v)}%`; }

function render() {
  if (!overview) return;
  const s = overview.summary;
  document.getElementById("f-present").textContent = s.present;
  document.getElementById("f-visits").textContent = s.visits_today;
  document.getElementById("f-returning").textContent = pct(s.returning_rate_pct);
  document.getElementById("f-dwell").textContent =
    s.average_dwell_s === null ? "–" : `${Math.round(s.average_dwell_s / 60)} ${t("min")}`;
  document.getElementById("f-satisfaction").textContent = pct(s.satisfaction_pct);
  document.getElementById("f-feedback").textContent = `n = ${s.feedback_count}`;
  const max = Math.max(1, ...s.visits_by_hour);
  document.getElementById("f-hours").replaceChildren(...s.visits_by_hour.map((n, h) =>
    el("div", { title: `${h}:00 — ${n}`, style: `height:${(100 * n) / max}%` })));
  document.getElementById("present").replaceChildren(...overview.present.map((p) =>
    el("li", {}, p.display_name, el("span", { class: "meta" }, ` · ${p.zone} · ${ago(p.arrived_at_ms)}`))));
  document.getElementById("devices").replaceChildren(...overview.devices.map((d) =>
    el("li", { "data-device-id": d.id }, d.name, " ",
      d.revoked_at_ms ? el("span", { class: "meta" }, `(${t("revoked")})`)
        : el("button", { class: "secondary", onclick: () => revoke(d.id) }, t("revoke")))));
  const h = overview.health;
  const p = h.pipeline;
  const rows = [
    [t("scanner"), `${h.scanner}: ${t(h.scanner_running ? "running" : "stopped")}`],
    [t("last_adv"), p.last_advertisement_ms ? ago(p.last_advertisement_ms) : t("none_yet")],
    [t("advertisements"), p.advertisements],
    [t("recognised"), p.recognised],
    [t("tablets"), overview.connected_tablets],
    [t("cloud"), h.cloud_sync === "not configured" ? t("not_configured")
      : ["setup", "revoked"].includes(overview.box.standing) ? t(`standing_${overview.box.standing}`)
      : h.cloud_sync],
    [t("storage"), h.storage === "ok" ? t("ok") : h.storage],
    [t("clock"), t(h.clock === "synchronised" ? "clock_ok" : "clock_provisional")],
  ];
  document.getElementById("health").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]));
  const b = overview.box;
  const boxRows = [
    [t("box_id"), b.box_id],
    [t("standing"), t(`standing_${b.standing}`)],
    [t("shop"), b.shop_id || "–"],
  ];
  document.getElementById("box").replaceChildren(...boxRows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]));
  const claimable = b.standing === "setup" || b.standing === "revoked";
  document.getElementById("claim").hidden = !claimable;
  document.getElementById("claim-help").textContent = t(b.standing === "revoked" ? "claim_help_revoked" : "claim_help");
}

document.getElementById("claim").addEventListener("submit", async (e) => {
  e.preventDefault();
  const error = document.getElementById("claim-error");
  error.textContent = "";
  document.getElementById("claim-button").disabled = true;
  try {
    await api("/api/owner/claim", { method: "POST", body: JSON.stringify({ code: document.getElementById("claim-code").value }) });
    document.getElementById("claim-code").value = "";
    await refresh();
  } catch (err) {
    error.textContent = err.message;
  } finally {
    document.getElementById("claim-button").disabled = false;
  }
});

async function refresh() {
  const midnight = new Date(); midnight.setHours(0, 0, 0, 0);
  const offset = -new Date().getTimezoneOffset();
  overview = await api(`/api/owner/overview?since_ms=${midnight.getTime()}&tz_offset_min=${offset}`);
  render();
}

async function revoke(id) { await api(`/api/owner/devices/${id}`, { method: "DELETE" }); refresh(); }

document.getElementById("pair-button").addEventListener("click", async () => {
  const r = await api("/api/owner/pairing-codes", { method: "POST", body: "{}" });
  document.getElementById("pairing-code").replaceChildren(
    el("div", { class: "code" }, r.code), el("div", { class: "meta" }, t("code_valid")));
});

document.getElementById("lang").addEventListener("click", () => switchLanguage(render));

async function showDashboard() {
  document.getElementById("login").hidden = true;
  document.getElementById("dashboard").hidden = false;
  await refresh();
}

applyText();
if (session) showDashboard().catch(() => showLogin()); else showLogin();
setInterval(() => { if (session && !document.getElementById("dashboard").hidden) refresh().catch(() => {}); }, 5000);

document.getElementById("pin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const error = document.getElementById("pin-error");
  error.textContent = "";
  error.classList.remove("ok");
  try {
    const body = await api("/api/owner/pin", {
      method: "POST",
      body: JSON.stringify({
        current_pin: document.getElementById("current-pin").value,
        new_pin: document.getElementById("new-pin").value,
      }),
    });
    session = body.token;
    sessionStorage.setItem("ownerSession", session);
    document.getElementById("pin-form").reset();
    error.textContent = t("pin_changed");
    error.classList.add("ok");
  } catch (err) {
    error.textContent = err.message;
  }
});
