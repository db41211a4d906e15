// The staff's tablet app: live arrivals, "in the shop now", and staff actions.
let token = localStorage.getItem("deviceToken");
if (location.hash.startsWith("#token=")) {
  token = decodeURIComponent(location.hash.slice(7));
  localStorage.setItem("deviceToken", token);
  history.replaceState(null, "", location.pathname);
}

const visits = new Map(); // visit_id -> alert (+ left_at_ms, dwell_s once gone)
let source = null;
let current = null; // visit_id of the open dialog
let score = 0;

class Unpaired extends Error {}

async function api(path, options = {}) {
  const res = await fetch(path, {
    ...options,
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
  });
  const body = await res.json().catch(() => ({}));
  if (res.status === 401 || res.status === 403) throw new Unpaired(body.error || "unpaired");
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
}

// Staff actions carry an id made once, so a retry after a dropped connection records once.
async function action(path, body) {
  const payload = JSON.stringify({ action_id: uuid(), ...body });
  for (let attempt = 0; ; attempt++) {
    try {
      return await api(path, { method: "POST", body: payload });
    } catch (e) {
      if (e instanceof Unpaired || !(e instanceof TypeError) || attempt >= 4) throw e;
      await new Promise((r) => setTimeout(r, 500 * (attempt + 1)));
    }
  }
}

function setStatus(live) {
  const s = document.getElementById("status");
  s.textContent = live ? t("connected") : t("reconnecting");
  s.className = live ? "live" : "";
}

function showPairing(message) {
  if (source) source.close();
  localStorage.removeItem("deviceToken");
  token = null;
  document.getElementById("app").hidden = true;
  document.getElementById("pairing").hidden = false;
  document.getElementById("pair-error").textContent = message || "";
}

async function load() {
  try {
    const state = await api("/api/present");
    visits.clear();
    for (const alert of state.present) visits.set(alert.visit_id, alert);
    render();
    connect(state.last_event_id);
  } catch (e) {
    if (e instanceof Unpaired) showPairing(t("unpaired"));
    else setTimeout(load, 2000);
  }
}

// The live stream opens with a single-use ticket (the device token never goes in a URL), so
// the page reconnects itself, with a new ticket, from the last event it saw: the box replays
// what was missed.
let lastEventId = 0;

async function connect(since) {
  if (source) source.close();
  lastEventId = since;
  let ticket;
  try {
    ticket = (await api("/api/stream-tickets", { method: "POST", body: "{}" })).ticket;
  } catch (e) {
    if (e instanceof Unpaired) return showPairing(t("unpaired"));
    setStatus(false);
    return setTimeout(() => connect(lastEventId), 2000);
  }
  source = new EventSource(`/api/stream?ticket=${encodeURIComponent(ticket)}&since=${since}`);
  const seen = (e) => { if (e.lastEventId) lastEventId = Number(e.lastEventId); };
  source.onopen = () => setStatus(true);
  source.onerror = () => {
    setStatus(false);
    source.close();
    setTimeout(() => connect(lastEventId), 2000);
  };
  for (const kind of ["arrival", "departure", "ack", "zone"]) source.addEventListener(kind, seen);
  source.addEventListener("arrival", (e) => {
    const alert = JSON.parse(e.data);
    alert.fresh = true;
    visits.set(alert.visit_id, alert);
    render();
  });
  source.addEventListener("departure", (e) => {
    const d = JSON.parse(e.data);
    const v = visits.get(d.visit_id);
    if (v) Object.assign(v, { left_at_ms: d.left_at_ms, dwell_s: d.dwell_s });
    render();
  });
  source.addEventListener("ack", (e) => {
    const a = JSON.parse(e.data);
    const v = visits.get(a.visit_id);
    if (v) v.acknowledged_by = a.acknowledged_by;
    render();
  });
  // A customer moved to another zone of the shop (several scanners).
  source.addEventListener("zone", (e) => {
    const z = JSON.parse(e.data);
    const v = visits.get(z.visit_id);
    if (v && !v.left_at_ms) v.zone = z.zone;
    render();
  });
  source.addEventListener("reset", () => load());
}

function card(v) {
  const classes = ["card", "alert"];
  if (v.left_at_ms) classes.push("left");
  else if (v.acknowledged_by) classes.push("handled");
  else classes.push("new");
  const meta = [v.visit_count > 1 ? ordinal(v.visit_count) : t("first_visit")];
  if (v.last_visit_ms) meta.push(t("last_visit", { ago: ago(v.last_visit_ms) }));
  meta.push(v.zone);
  if (v.left_at_ms) meta.push(t("left", { min: Math.max(1, Math.round(v.dwell_s / 60)) }));
  return el("article", { class: classes.join(" "), "data-visit-id": v.visit_id, "data-customer-ref": v.customer_ref },
    el("h3", {}, t("is_here", { name: v.display_name }), v.tier ? el("span", { class: "tier" }, v.tier) : null),
    el("div", { class: "meta" }, meta.join(" · ")),
    v.notes ? el("div", { class: "careful" }, `⚠ ${t("careful")}: ${v.notes}`) : null,
    v.usual_order.length ? el("div", { class: "usual" }, el("b", {}, `${t("usual")}: `), v.usual_order.join(", ")) : null,
    v.preferences ? el("div", { class: "usual" }, el("b", {}, `${t("likes")}: `), v.preferences) : null,
    v.suggestions.length ? el("div", { class: "usual" }, el("b", {}, `${t("suggest")}: `), v.suggestions.join(", ")) : null,
    el("div", { class: "actions" },
      v.acknowledged_by
        ? el("span", { class: "handled-by" }, t("handled_by", { name: v.acknowledged_by }))
        : el("button", { class: "primary ack", onclick: () => acknowledge(v.visit_id) }, t("ack")),
      el("button", { class: "secondary order", onclick: () => openOrder(v.visit_id) }, t("order")),
      el("button", { class: "secondary feedback", onclick: () => openFeedback(v.visit_id) }, t("feedback"))));
}

function render() {
  const all = [...visits.values()].sort((a, b) => b.arrived_at_ms - a.arrived_at_ms);
  const list = document.getElementById("alerts");
  list.replaceChildren(...(all.length ? all.map(card) : [el("p", { class: "meta" }, t("no_alerts"))]));
  const here = all.filter((v) => !v.left_at_ms);
  document.getElementById("present-count").textContent = here.length;
  document.getElementById("present").replaceChildren(...here.map((v) =>
    el("li", { "data-visit-id": v.visit_id }, v.display_name, v.notes ? " ⚠" : "")));
}

async function acknowledge(visitId) {
  try {
    const r = await api(`/api/visits/${visitId}/ack`, { method: "POST", body: "{}" });
    visits.get(visitId).acknowledged_by = r.acknowledged_by;
    render();
  } catch (e) {
    if (e instanceof Unpaired) showPairing(t("unpaired"));
  }
}

function openOrder(visitId) {
  current = visitId;
  document.getElementById("order-items").value = "";
  document.getElementById("order-error").textContent = "";
  document.getElementById("order-dialog").showModal();
}

function openFeedback(visitId) {
  current = visitId;
  score = 0;
  drawStars();
  document.getElementById("feedback-comment").value = "";
  document.getElementById("feedback-error").textContent = "";
  document.getElementById("feedback-dialog").showModal();
}

function drawStars() {
  const stars = [1, 2, 3, 4, 5].map((n) =>
    el("button", { type: "button", class: n <= score ? "on" : "", "data-score": n, "aria-label": `${n}`,
      onclick: () => { score = n; drawStars(); } }, "★"));
  document.getElementById("stars").replaceChildren(...stars);
}

async function submit(dialog, errorBox, run) {
  try {
    await run();
    dialog.close();
  } catch (e) {
    if (e instanceof Unpaired) { dialog.close(); showPairing(t("unpaired")); }
    else document.getElementById(errorBox).textContent = e.message;
  }
}

document.getElementById("order-form").addEventListener("submit", (e) => {
  if (e.submitter && e.submitter.value === "cancel") return;
  e.preventDefault();
  const items = document.getElementById("order-items").value.split(",").map((s) => s.trim()).filter(Boolean);
  submit(document.getElementById("order-dialog"), "order-error",
    () => action(`/api/visits/${current}/orders`, { items }));
});

document.getElementById("feedback-form").addEventListener("submit", (e) => {
  if (e.submitter && e.submitter.value === "cancel") return;
  e.preventDefault();
  submit(document.getElementById("feedback-dialog"), "feedback-error",
    () => action(`/api/visits/${current}/feedback`, { score, comment: document.getElementById("feedback-comment").value }));
});

document.getElementById("pair-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const res = await fetch("/api/pair", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ code: document.getElementById("pair-code").value, name: document.getElementById("pair-name").value }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    document.getElementById("pair-error").textContent = body.error || res.statusText;
    return;
  }
  token = body.token;
  localStorage.setItem("deviceToken", token);
  localStorage.setItem("tokenRotatedAt", String(Date.now()));
  start();
});

// A tablet's token is renewed monthly, keeping its pairing.
async function rotateToken() {
  const at = Number(localStorage.getItem("tokenRotatedAt"));
  if (!at) return localStorage.setItem("tokenRotatedAt", String(Date.now())); // counting from now
  if (Date.now() - at < 30 * 86400000) return;
  try {
    const body = await api("/api/devices/rotate", { method: "POST", body: "{}" });
    token = body.token;
    localStorage.setItem("deviceToken", token);
    localStorage.setItem("tokenRotatedAt", String(Date.now()));
  } catch (e) {
    if (e instanceof Unpaired) showPairing(t("unpaired"));
  }
}

document.getElementById("lang").addEventListener("click", () => switchLanguage(render));

function start() {
  applyText();
  if (!token) return showPairing("");
  document.getElementById("pairing").hidden = true;
  document.getElementById("app").hidden = false;
  setStatus(false);
  rotateToken().finally(load);
}

start();
