// The owner's page: today's figures (satisfaction is private to the owner), the floor map
// (who is in which zone now), paired tablets, pairing codes, the box's health, and claiming a
// blank box for the shop.
let session = sessionStorage.getItem("ownerSession");
let pinSet = true;
let overview = null;
let floor = null; // GET /api/owner/floor
let planUrl = null; // object URL of the plan's image, loaded with the session token
let planStale = true; // the image changed (or was never loaded)
let placing = null; // { kind, name } while the owner picks a spot on the plan

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
      d.kind === "scanner" ? el("span", { class: "meta" }, `(${t("scanner")}) `) : null,
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
  renderFloor();
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
  const today = `since_ms=${midnight.getTime()}&tz_offset_min=${-new Date().getTimezoneOffset()}`;
  [overview, floor] = await Promise.all([api(`/api/owner/overview?${today}`), api(`/api/owner/floor?${today}`)]);
  await loadPlan().catch((err) => { document.getElementById("floor-error").textContent = err.message; });
  render();
}

// The floor map. The plan's image needs the session token, so it is fetched and shown
// through an object URL rather than by its address.
async function loadPlan() {
  if (!floor.has_plan) {
    if (planUrl) URL.revokeObjectURL(planUrl);
    planUrl = null;
    planStale = true;
    return;
  }
  if (planUrl && !planStale) return;
  const res = await fetch("/api/owner/floor/plan", { headers: { Authorization: `Bearer ${session}` } });
  if (!res.ok) throw new Error((await res.json().catch(() => ({}))).error || res.statusText);
  const url = URL.createObjectURL(await res.blob());
  if (planUrl) URL.revokeObjectURL(planUrl);
  planUrl = url;
  planStale = false;
}

function duration(s) {
  return s < 60 ? `${Math.round(s)} ${t("sec")}` : `${Math.round(s / 60)} ${t("min")}`;
}

// Heard by the box in the last minute, silent for longer, or not at all since it started.
function scannerState(name) {
  const seen = overview.health.scanners.find((s) => s.name === name);
  if (!seen) return "never";
  return Date.now() - seen.last_heard_ms < 60000 ? "heard" : "silent";
}

function markNode(mark) {
  const node = el("div", { class: `mark ${mark.kind}`, "data-kind": mark.kind, "data-name": mark.name });
  // Through the style object, not a style attribute: allowed by a strict CSP too.
  node.style.left = `${mark.x * 100}%`;
  node.style.top = `${mark.y * 100}%`;
  if (mark.kind === "zone") {
    const zone = floor.zones.find((z) => z.zone === mark.name) || { visits_today: 0, average_dwell_s: null, present: [] };
    const figures = [t("zone_visits", { n: zone.visits_today })];
    if (zone.average_dwell_s !== null) figures.push(t("zone_dwell", { time: duration(zone.average_dwell_s) }));
    if (zone.present.length) node.classList.add("busy");
    node.append(el("b", {}, mark.name), el("span", { class: "meta figures" }, figures.join(" · ")),
      el("ul", {}, zone.present.map((p) => el("li", { "data-visit-id": p.visit_id }, p.display_name))));
  } else {
    const state = scannerState(mark.name);
    node.classList.add(state);
    node.title = t(`scanner_${state}`);
    node.append(el("span", { class: `dot ${state}` }), mark.name,
      el("span", { class: "meta state" }, ` · ${t(`scanner_${state}`)}`));
  }
  node.append(el("button", {
    class: "remove", type: "button", title: t("remove_mark", { name: mark.name }),
    "aria-label": t("remove_mark", { name: mark.name }),
    onclick: (e) => { e.stopPropagation(); removeMark(mark); },
  }, "×"));
  return node;
}

function renderFloor() {
  if (!floor) return;
  const shown = Boolean(floor.has_plan && planUrl);
  const plan = document.getElementById("floor-plan");
  plan.hidden = !shown;
  plan.classList.toggle("placing", Boolean(placing));
  const image = document.getElementById("floor-image");
  if (shown && image.getAttribute("src") !== planUrl) image.src = planUrl;
  document.getElementById("floor-remove-plan").hidden = !floor.has_plan;
  for (const id of ["place-zone", "place-scanner"]) document.getElementById(id).disabled = !shown;
  document.getElementById("floor-help").textContent =
    placing ? t("floor_click", { name: placing.name }) : t(floor.has_plan ? "floor_help" : "floor_no_plan");
  document.getElementById("floor-marks").replaceChildren(...(shown ? floor.marks.map(markNode) : []));

  // The scanners the box hears (and those already placed), to choose from.
  const select = document.getElementById("scanner-name");
  const names = [...new Set([...overview.health.scanners.map((s) => s.name),
    ...floor.marks.filter((m) => m.kind === "scanner").map((m) => m.name)])];
  const chosen = select.value;
  select.replaceChildren(...(names.length
    ? names.map((n) => el("option", { value: n }, `${n} (${overview.health.scanners.find((s) => s.name === n)?.zone || "?"})`))
    : [el("option", { value: "" }, t("floor_no_scanners"))]));
  if (names.includes(chosen)) select.value = chosen;

  // Zones where customers are or were today but not on the plan: placing them shows them there.
  const marked = new Set(floor.marks.filter((m) => m.kind === "zone").map((m) => m.name));
  const unplaced = floor.zones.filter((z) => !marked.has(z.zone));
  document.getElementById("floor-unplaced").replaceChildren(...(unplaced.length ? [
    el("h3", { class: "meta" }, t("floor_unplaced")),
    el("ul", {}, unplaced.map((z) => el("li", { "data-zone": z.zone }, el("b", {}, z.zone), " ",
      el("span", { class: "meta" }, [t("zone_visits", { n: z.visits_today }),
        z.present.length ? t("floor_here", { n: z.present.length }) : null].filter(Boolean).join(" · "))))),
  ] : []));
}

function startPlacing(kind, name) {
  document.getElementById("floor-error").textContent = "";
  if (!name) {
    document.getElementById("floor-error").textContent = t(kind === "zone" ? "floor_need_name" : "floor_no_scanners");
    return;
  }
  placing = { kind, name };
  renderFloor();
}

document.getElementById("place-zone").addEventListener("click", () =>
  startPlacing("zone", document.getElementById("zone-name").value.trim()));
document.getElementById("place-scanner").addEventListener("click", () =>
  startPlacing("scanner", document.getElementById("scanner-name").value));
document.addEventListener("keydown", (e) => { if (e.key === "Escape" && placing) { placing = null; renderFloor(); } });

document.getElementById("floor-plan").addEventListener("click", async (e) => {
  if (!placing) return;
  const box = document.getElementById("floor-image").getBoundingClientRect();
  const within = (v) => Math.min(1, Math.max(0, v));
  const at = { x: within((e.clientX - box.left) / box.width), y: within((e.clientY - box.top) / box.height) };
  const { kind, name } = placing;
  placing = null;
  try {
    await api(`/api/owner/floor/marks/${kind}/${encodeURIComponent(name)}`, { method: "PUT", body: JSON.stringify(at) });
    if (kind === "zone") document.getElementById("zone-name").value = "";
    await refresh();
  } catch (err) {
    document.getElementById("floor-error").textContent = err.message;
    renderFloor();
  }
});

async function removeMark(mark) {
  try {
    await api(`/api/owner/floor/marks/${mark.kind}/${encodeURIComponent(mark.name)}`, { method: "DELETE" });
    await refresh();
  } catch (err) {
    document.getElementById("floor-error").textContent = err.message;
  }
}

document.getElementById("floor-file").addEventListener("change", async (e) => {
  const file = e.target.files[0];
  e.target.value = "";
  if (!file) return;
  const error = document.getElementById("floor-error");
  error.textContent = "";
  const res = await fetch("/api/owner/floor/plan", {
    method: "PUT",
    headers: { "Content-Type": file.type || "application/octet-stream", Authorization: `Bearer ${session}` },
    body: file,
  });
  if (!res.ok) { error.textContent = (await res.json().catch(() => ({}))).error || res.statusText; return; }
  planStale = true;
  await refresh().catch((err) => { error.textContent = err.message; });
});

document.getElementById("floor-remove-plan").addEventListener("click", async () => {
  try {
    await api("/api/owner/floor/plan", { method: "DELETE" });
    await refresh();
  } catch (err) {
    document.getElementById("floor-error").textContent = err.message;
  }
});

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
