// The HQ console: signs in, keeps the access token in memory (the refresh token is an
// HttpOnly cookie), and draws one page at a time from the JSON API.
let accessToken = null;
let user = null;
let timer = null; // the current page's refresh timer
let charts = [];

class SignedOut extends Error {}

// Spends the refresh cookie for a new access token. One tab at a time: two tabs spending the
// same token would look like a stolen one and end the session.
async function refresh() {
  const spend = async () => {
    const res = await fetch("/api/v1/auth/refresh", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: "{}", credentials: "same-origin",
    });
    if (!res.ok) return false;
    const body = await res.json();
    accessToken = body.access_token;
    user = body.user;
    return true;
  };
  return navigator.locks ? navigator.locks.request("tastesync-refresh", spend) : spend();
}

async function api(path, options = {}, retried = false) {
  const res = await fetch(path, {
    ...options,
    headers: { "Content-Type": "application/json", ...(accessToken ? { Authorization: `Bearer ${accessToken}` } : {}) },
  });
  if (res.status === 401 && !retried) {
    if (await refresh()) return api(path, options, true);
    throw new SignedOut();
  }
  if (res.status === 401) throw new SignedOut();
  if (res.status === 204) return null;
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
}

function may(page) {
  if (!user) return false;
  if (user.role === "admin") return true;
  if (user.role === "manager") return ["shops", "customers", "analytics", "feedback"].includes(page);
  return page === "analytics";
}

function showSignIn(message) {
  accessToken = null;
  user = null;
  clearInterval(timer);
  document.getElementById("page").hidden = true;
  document.getElementById("nav").hidden = true;
  document.getElementById("signout").hidden = true;
  document.getElementById("who").textContent = "";
  document.getElementById("signin").hidden = false;
  document.getElementById("signin-error").textContent = message || "";
}

function showApp() {
  document.getElementById("signin").hidden = true;
  document.getElementById("page").hidden = false;
  document.getElementById("nav").hidden = false;
  document.getElementById("signout").hidden = false;
  document.getElementById("who").textContent = `${user.email} · ${user.role}`;
  for (const a of document.querySelectorAll("nav a")) a.hidden = !may(a.dataset.page);
  route();
}

function route() {
  if (!user) return;
  let page = location.hash.replace(/^#\//, "") || "";
  if (!(page in PAGES) || !may(page)) page = user.role === "analyst" ? "analytics" : "shops";
  if (location.hash !== `#/${page}`) history.replaceState(null, "", `#/${page}`);
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === page);
  clearInterval(timer);
  for (const chart of charts) chart.destroy();
  charts = [];
  const main = document.getElementById("page");
  main.replaceChildren(el("p", { class: "note" }, t("loading")));
  PAGES[page](main).catch(failed);
}

function failed(e) {
  if (e instanceof SignedOut) return showSignIn(t("signed_out"));
  const main = document.getElementById("page");
  main.prepend(el("div", { class: "card error", role: "alert" }, e.message));
}

function dialog(...children) {
  const d = document.getElementById("dialog");
  document.getElementById("dialog-body").replaceChildren(...children);
  d.showModal();
  return d;
}

function closeDialog() {
  document.getElementById("dialog").close();
}

// A form in the dialog: `submit` runs on save; its error is shown in the form.
function formDialog(title, fields, submit) {
  const error = el("div", { class: "error", role: "alert" });
  const form = el("form", {}, el("h2", {}, title), ...fields, error,
    el("div", { class: "actions" },
      el("button", { class: "primary", type: "submit" }, t("save")),
      el("button", { class: "secondary", type: "button", onclick: closeDialog }, t("cancel"))));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.textContent = "";
    try {
      await submit(form);
    } catch (err) {
      if (err instanceof SignedOut) { closeDialog(); return showSignIn(t("signed_out")); }
      error.textContent = err.message;
    }
  });
  dialog(form);
}

function field(label, input) {
  const id = input.id || `f-${Math.random().toString(36).slice(2)}`;
  input.id = id;
  return [el("label", { for: id }, label), input];
}

function table(headers, rows) {
  return el("div", { class: "table-wrap" },
    el("table", {}, el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))), el("tbody", {}, rows)));
}

const PAGES = {
  // Shops and their boxes, refreshed every 5 s: a box that drops turns offline here.
  async shops(main) {
    let filter = "";
    const list = el("div");
    const count = el("span", { class: "note" });
    const draw = async () => {
      const shops = await api("/api/v1/shops");
      const shown = shops.filter((s) => !filter || `${s.shop_id} ${s.name}`.toLowerCase().includes(filter)).slice(0, 100);
      count.textContent = t("showing", { n: shown.length, m: shops.length });
      list.replaceChildren(...shown.map(shopCard));
    };
    const search = el("input", { type: "search", placeholder: t("shops_filter"), "aria-label": t("shops_filter"),
      oninput: (e) => { filter = e.target.value.toLowerCase(); draw().catch(failed); } });
    const toolbar = el("div", { class: "toolbar" }, el("label", { class: "grow" }, t("filter"), search), count);
    if (user.role === "admin") toolbar.append(el("button", { class: "primary", onclick: () => addShop(draw) }, t("add_shop")));
    main.replaceChildren(toolbar, list);
    await draw();
    timer = setInterval(() => draw().catch(failed), 5000);
  },

  async customers(main) {
    const shops = await api("/api/v1/shops");
    const results = el("div", { class: "card" });
    const search = el("input", { type: "search", placeholder: t("search"), "aria-label": t("search"), id: "customer-search" });
    const shopSelect = el("select", { "aria-label": t("shop") },
      el("option", { value: "" }, t("all_shops")), shops.map((s) => el("option", { value: s.shop_id }, s.name || s.shop_id)));
    const draw = async () => {
      const params = new URLSearchParams();
      if (search.value.trim()) params.set("q", search.value.trim());
      if (shopSelect.value) params.set("shop", shopSelect.value);
      const found = await api(`/api/v1/customers?${params}`);
      if (!found.length) return results.replaceChildren(el("p", { class: "note" }, t("no_customers")));
      results.replaceChildren(table(
        [t("customer_ref"), t("display_name"), t("tier"), t("shops"), t("visits"), t("last_visit")],
        found.map((c) => el("tr", { class: "clickable", onclick: () => editCustomer(c, shops, draw) },
          el("td", {}, c.customer_ref), el("td", {}, c.display_name), el("td", {}, c.tier),
          el("td", {}, c.shops.join(", ")), el("td", {}, number(c.visits)), el("td", {}, ago(c.last_visit_ms))))));
    };
    let debounce = null;
    search.addEventListener("input", () => { clearTimeout(debounce); debounce = setTimeout(() => draw().catch(failed), 250); });
    shopSelect.addEventListener("change", () => draw().catch(failed));
    main.replaceChildren(
      el("div", { class: "toolbar" }, el("label", { class: "grow" }, t("search"), search), el("label", {}, t("shop"), shopSelect),
        el("button", { class: "primary", id: "enroll", onclick: () => enrollCustomer(shops, draw) }, t("enroll"))),
      results);
    await draw();
  },

  async analytics(main) {
    const shops = user.role === "analyst" ? [] : await api("/api/v1/shops");
    // The range starts empty: the first report is the server's default (the last 30 days up
    // to today in the shops' own time zones, which may be ahead of this browser's), and the
    // inputs take its dates.
    const from = el("input", { type: "date", "aria-label": t("from") });
    const to = el("input", { type: "date", "aria-label": t("to") });
    const shopSelect = el("select", { "aria-label": t("shop") },
      el("option", { value: "" }, user.role === "manager" ? t("all_shops") : t("chain")),
      shops.map((s) => el("option", { value: s.shop_id }, s.name || s.shop_id)));
    const body = el("div");
    const draw = async () => {
      const params = new URLSearchParams();
      if (from.value) params.set("from", from.value);
      if (to.value) params.set("to", to.value);
      if (shopSelect.value) params.set("shop", shopSelect.value);
      const report = await api(`/api/v1/analytics?${params}`);
      from.value = report.from;
      to.value = report.to;
      drawReport(body, report);
    };
    for (const input of [from, to, shopSelect]) input.addEventListener("change", () => draw().catch(failed));
    main.replaceChildren(
      el("div", { class: "toolbar" }, el("label", {}, t("from"), from), el("label", {}, t("to"), to), el("label", {}, t("shop"), shopSelect)),
      body);
    await draw();
    timer = setInterval(() => draw().catch(failed), 30000);
  },

  async feedback(main) {
    const shops = await api("/api/v1/shops");
    const list = el("div");
    const more = el("button", { class: "secondary", hidden: true }, t("more"));
    const shopSelect = el("select", { "aria-label": t("shop") },
      el("option", { value: "" }, t("all_shops")), shops.map((s) => el("option", { value: s.shop_id }, s.name || s.shop_id)));
    let before = null;
    const load = async (reset) => {
      if (reset) { before = null; list.replaceChildren(); }
      const params = new URLSearchParams({ limit: "50" });
      if (shopSelect.value) params.set("shop", shopSelect.value);
      if (before !== null) params.set("before_ms", before);
      const page = await api(`/api/v1/feedback?${params}`);
      if (reset && !page.length) list.append(el("p", { class: "note" }, t("no_feedback")));
      for (const f of page) list.append(feedbackCard(f));
      before = page.length ? page[page.length - 1].at_ms : before;
      more.hidden = page.length < 50;
    };
    shopSelect.addEventListener("change", () => load(true).catch(failed));
    more.addEventListener("click", () => load(false).catch(failed));
    main.replaceChildren(el("div", { class: "toolbar" }, el("label", {}, t("shop"), shopSelect)), list, more);
    await load(true);
  },

  async privacy(main) {
    const ref = el("input", { id: "privacy-ref", "aria-label": t("customer_ref"), placeholder: t("customer_ref") });
    const message = el("div", { class: "error", role: "alert" });
    const erasures = el("div", { class: "card" });
    const drawErasures = async () => {
      const list = await api("/api/v1/erasures");
      erasures.replaceChildren(el("h2", {}, t("erasures")), list.length ? table(
        [t("customer_ref"), t("state"), t("requested_by"), t("at"), t("events_scrubbed"), t("boxes")],
        list.map((e) => el("tr", { class: "erasure", "data-ref": e.customer_ref },
          el("td", {}, e.customer_ref),
          el("td", {}, el("span", { class: `pill state ${e.done ? "done" : "pending"}` }, e.done ? t("erasure_done") : t("erasure_pending"))),
          el("td", {}, e.requested_by), el("td", {}, when(Date.parse(e.requested_at))), el("td", {}, number(e.events_scrubbed)),
          el("td", {}, e.boxes.map((b) => el("div", {},
            `${b.shop_id} / ${b.box_id || t("first_release")}: `,
            el("span", { class: `pill ${b.applied ? "done" : b.revoked ? "revoked" : "pending"}` },
              b.applied ? t("box_applied") : b.revoked ? t("revoked") : t("box_waiting"))))))))
        : el("p", { class: "note" }, t("none")));
    };
    const exportButton = el("button", { class: "secondary", id: "export", onclick: async () => {
      message.className = "error";
      message.textContent = "";
      try {
        const file = await download(ref.value.trim());
        message.className = "note";
        message.textContent = t("exported", { file });
      } catch (e) {
        if (e instanceof SignedOut) return showSignIn(t("signed_out"));
        message.textContent = e.message;
      }
    } }, t("export"));
    const eraseButton = el("button", { class: "danger", id: "erase", onclick: () => eraseCustomer(ref.value.trim(), drawErasures) }, t("erase"));
    main.replaceChildren(
      el("div", { class: "card" }, el("p", {}, t("privacy_help")),
        el("div", { class: "toolbar" }, el("label", { class: "grow" }, t("customer_ref"), ref), exportButton, eraseButton), message),
      erasures);
    await drawErasures();
    timer = setInterval(() => drawErasures().catch(failed), 3000);
  },

  async audit(main) {
    const rows = el("tbody");
    const more = el("button", { class: "secondary", hidden: true }, t("more"));
    let before = null;
    const load = async () => {
      const params = new URLSearchParams({ limit: "100" });
      if (before !== null) params.set("before_id", before);
      const entries = await api(`/api/v1/audit?${params}`);
      for (const e of entries) {
        rows.append(el("tr", { class: "audit-entry" }, el("td", {}, when(Date.parse(e.at))), el("td", {}, e.actor), el("td", {}, e.action),
          el("td", {}, e.target), el("td", {}, Object.keys(e.detail).length ? JSON.stringify(e.detail) : ""), el("td", {}, e.client)));
      }
      before = entries.length ? entries[entries.length - 1].id : before;
      more.hidden = entries.length < 100;
    };
    more.addEventListener("click", () => load().catch(failed));
    main.replaceChildren(el("div", { class: "card" },
      el("div", { class: "table-wrap" }, el("table", {},
        el("thead", {}, el("tr", {}, [t("at"), t("actor"), t("action"), t("target"), t("detail"), t("client")].map((h) => el("th", {}, h)))),
        rows)), more));
    await load();
  },
};

function shopCard(shop) {
  const admin = user.role === "admin";
  const boxes = shop.boxes.length ? table(
    [t("box"), t("state"), t("last_seen"), t("last_event"), t("backlog"), t("oldest_unsent"), t("software"), t("claimed"), ""],
    shop.boxes.map((b) => el("tr", { class: "box", "data-box": b.box_id || "" },
      el("td", {}, b.box_id || t("first_release")),
      el("td", {}, el("span", { class: `pill ${b.revoked ? "revoked" : b.online ? "online" : "offline"}` },
        b.revoked ? t("revoked") : b.online ? t("online") : t("offline"))),
      el("td", {}, b.last_seen ? ago(Date.parse(b.last_seen)) : t("never")),
      el("td", {}, b.last_event ? ago(Date.parse(b.last_event)) : t("never")),
      el("td", {}, b.backlog === null ? "–" : number(b.backlog)),
      el("td", {}, b.oldest_unsent_ms ? ago(b.oldest_unsent_ms) : "–"),
      el("td", {}, b.software || "–"),
      el("td", {}, b.claimed_at ? when(Date.parse(b.claimed_at)) : "–"),
      el("td", {}, admin && b.box_id && !b.revoked
        ? el("button", { class: "secondary", onclick: () => revokeBox(b.box_id) }, t("revoke")) : ""))))
    : el("p", { class: "note" }, t("no_boxes"));
  const gaps = shop.gaps.length ? [el("h3", {}, t("gaps")), el("ul", {}, shop.gaps.map((g) =>
    el("li", {}, `${g.box_id || t("first_release")}: ${g.from_seq}–${g.to_seq} (${g.kind === "restore" ? t("gap_restore") : t("gap_conflict")}), ${when(Date.parse(g.detected_at))}`)))] : [];
  // Only when cloud-sync relays to Kafka: its events not yet there.
  const kafka = shop.kafka && shop.kafka.events > 0
    ? [el("p", { class: "note kafka-waiting" }, t("kafka_waiting", { n: number(shop.kafka.events), since: ago(Date.parse(shop.kafka.oldest_event_stored_at)) }))]
    : [];
  const codes = shop.claim_codes.length ? table([t("created"), t("expires"), t("state")], shop.claim_codes.map((c) =>
    el("tr", {}, el("td", {}, when(Date.parse(c.created_at))), el("td", {}, when(Date.parse(c.expires_at))),
      el("td", {}, c.state === "used" ? t("code_used", { box: c.used_by }) : t(`code_${c.state}`))))) : null;
  return el("section", { class: "card shop", "data-shop": shop.shop_id },
    el("div", { class: "shop-head" }, el("h2", {}, shop.name || shop.shop_id), el("span", { class: "note" }, `${shop.shop_id} · ${shop.time_zone}`)),
    el("h3", {}, t("boxes")), boxes, ...kafka, ...gaps,
    el("h3", {}, t("claim_codes")), codes,
    el("div", { class: "actions" }, el("button", { class: "secondary", onclick: () => newClaimCode(shop) }, t("new_claim_code"))));
}

async function newClaimCode(shop) {
  try {
    const code = await api(`/api/v1/shops/${encodeURIComponent(shop.shop_id)}/claim-codes`, { method: "POST", body: "{}" });
    dialog(el("p", {}, t("claim_code_shown", { shop: shop.name || shop.shop_id, until: when(Date.parse(code.expires_at)) })),
      el("p", { class: "code", id: "claim-code" }, code.claim_code),
      el("div", { class: "actions" }, el("button", { class: "primary", onclick: closeDialog }, t("close"))));
  } catch (e) { failed(e); }
}

async function revokeBox(box) {
  if (!confirm(t("revoke_confirm", { box }))) return;
  try {
    await api(`/api/v1/boxes/${encodeURIComponent(box)}/revoke`, { method: "POST" });
    route();
  } catch (e) { failed(e); }
}

function addShop(redraw) {
  const id = el("input", { required: true, pattern: "[A-Za-z0-9_-]{1,64}" });
  const name = el("input", {});
  const zone = el("input", { value: "Asia/Seoul", required: true });
  formDialog(t("add_shop"), [...field(t("shop_id"), id), ...field(t("shop_name"), name), ...field(t("time_zone"), zone)], async () => {
    await api("/api/v1/shops", { method: "POST", body: JSON.stringify({ shop_id: id.value.trim(), name: name.value.trim(), time_zone: zone.value.trim() }) });
    closeDialog();
    await redraw();
  });
}

// The shops a customer may be given: all for an admin, a manager's own.
function shopChecks(shops, chosen) {
  return el("div", { class: "checks" }, shops.map((s) => el("label", {},
    el("input", { type: "checkbox", value: s.shop_id, checked: chosen.includes(s.shop_id) }), s.name || s.shop_id)));
}

function customerFields(shops, c = {}) {
  const inputs = {
    display_name: el("input", { required: true, maxlength: 1000, value: c.display_name || "" }),
    tier: el("input", { maxlength: 1000, value: c.tier || "" }),
    notes: el("textarea", { maxlength: 1000 }, c.notes || ""),
    preferences: el("input", { maxlength: 1000, value: c.preferences || "" }),
    tags: el("textarea", {}, (c.tag_ids || []).join("\n")),
    shops: shopChecks(shops, c.shops || []),
  };
  const fields = [
    ...field(t("display_name"), inputs.display_name), ...field(t("tier"), inputs.tier),
    ...field(t("notes"), inputs.notes), ...field(t("preferences"), inputs.preferences),
    el("label", {}, t("shops")), inputs.shops, ...field(t("tags"), inputs.tags),
  ];
  const values = () => ({
    display_name: inputs.display_name.value.trim(), tier: inputs.tier.value.trim(),
    notes: inputs.notes.value.trim(), preferences: inputs.preferences.value.trim(),
    tag_ids: inputs.tags.value.split("\n").map((s) => s.trim()).filter(Boolean),
    shops: [...inputs.shops.querySelectorAll("input:checked")].map((i) => i.value),
  });
  return { fields, values };
}

function showIdentityKey(saved) {
  if (!saved.eid_identity_key) return closeDialog();
  dialog(el("p", {}, t("eid_key_once")), el("p", { class: "secret", id: "eid-key" }, saved.eid_identity_key),
    el("div", { class: "actions" }, el("button", { class: "primary", onclick: closeDialog }, t("close"))));
}

function enrollCustomer(shops, redraw) {
  const ref = el("input", { required: true, maxlength: 64, id: "new-ref" });
  const { fields, values } = customerFields(shops);
  const eid = el("input", { type: "checkbox" });
  formDialog(t("enroll"), [...field(t("customer_ref"), ref), ...fields, el("label", { class: "inline" }, eid, t("eid_new"))], async () => {
    const saved = await api("/api/v1/customers", { method: "POST",
      body: JSON.stringify({ customer_ref: ref.value.trim(), ...values(), eid: eid.checked }) });
    showIdentityKey(saved);
    await redraw();
  });
}

function editCustomer(c, shops, redraw) {
  const { fields, values } = customerFields(shops, c);
  const eid = el("select", {}, ["keep", "new", "remove"].map((v) =>
    el("option", { value: v }, t({ keep: "eid_keep", new: "eid_renew", remove: "eid_remove" }[v]))));
  const remove = el("button", { class: "danger", type: "button", onclick: async () => {
    if (!confirm(t("delete_confirm", { name: c.display_name, ref: c.customer_ref }))) return;
    try {
      await api(`/api/v1/customers/${encodeURIComponent(c.customer_ref)}`, { method: "DELETE" });
      closeDialog();
      await redraw();
    } catch (e) { failed(e); closeDialog(); }
  } }, t("delete"));
  formDialog(`${c.display_name} · ${c.customer_ref}`, [...fields, ...field(t("eid"), eid), el("div", { class: "actions" }, remove)], async () => {
    const saved = await api(`/api/v1/customers/${encodeURIComponent(c.customer_ref)}`, { method: "PUT",
      body: JSON.stringify({ ...values(), eid: eid.value }) });
    showIdentityKey(saved);
    await redraw();
  });
}

function drawReport(body, r) {
  for (const chart of charts) chart.destroy();
  charts = [];
  const x = r.totals;
  const figure = (label, value, note) => el("div", { class: "card figure" },
    el("div", { class: "value" }, value), el("div", { class: "label" }, label), note ? el("div", { class: "note" }, note) : null);
  const canvas = (cls = "") => el("div", { class: `chart-box ${cls}` }, el("canvas"));
  const perDay = canvas(), hours = canvas("tall"), items = canvas();
  const compared = el("div", { class: "chart-box tall" }, el("canvas"));
  body.replaceChildren(
    el("div", { class: "figures", id: "figures" },
      figure(t("fig_visits"), number(x.visits)),
      figure(t("fig_returning"), percent(x.returning_rate)),
      figure(t("fig_dwell"), minutes(x.average_dwell_s)),
      figure(t("fig_satisfaction"), percent(x.satisfaction), t("fig_feedback", { n: x.feedback })),
      figure(t("fig_orders"), number(x.orders))),
    el("div", { class: "charts" },
      el("div", { class: "card" }, el("h2", {}, t("visits_per_day")), perDay),
      el("div", { class: "card" }, el("h2", {}, t("busiest_hours")), hours),
      el("div", { class: "card" }, el("h2", {}, t("top_items")), r.top_items.length ? items : el("p", { class: "note" }, t("none"))),
      el("div", { class: "card" }, el("h2", {}, t("shops_compared")), compared)),
    el("div", { class: "card" }, el("h2", {}, t("shops_compared")), table(
      [t("shop"), t("fig_visits"), t("returning_rate"), t("fig_dwell"), t("fig_satisfaction"), t("fig_orders")],
      r.shops.map((s) => el("tr", { class: "shop-figures" }, el("td", {}, s.name || s.shop_id), el("td", {}, number(s.visits)),
        el("td", {}, percent(s.returning_rate)), el("td", {}, minutes(s.average_dwell_s)),
        el("td", {}, percent(s.satisfaction)), el("td", {}, number(s.orders)))))));
  const accent = "#b5542d", ok = "#2f7d4f";
  // Every day of the range, those without visits too.
  const byDay = new Map(r.days.map((d) => [d.day, d]));
  const days = [];
  for (let d = new Date(`${r.from}T00:00:00Z`); d <= new Date(`${r.to}T00:00:00Z`); d = new Date(d.getTime() + 86400000)) {
    const key = d.toISOString().slice(0, 10);
    days.push(byDay.get(key) || { day: key, visits: 0, returning_visits: 0 });
  }
  charts.push(new Chart(perDay.firstChild, {
    type: "bar",
    data: { labels: days.map((d) => d.day.slice(5)), datasets: [
      { label: t("new_visits"), data: days.map((d) => d.visits - d.returning_visits), backgroundColor: accent },
      { label: t("returning_visits"), data: days.map((d) => d.returning_visits), backgroundColor: ok }] },
    options: { maintainAspectRatio: false, animation: false, scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } },
  }));
  const weekdays = t("weekdays").split(",");
  const hourLabels = Array.from({ length: 24 }, (_, h) => String(h));
  const cells = r.busiest_hours.flatMap((row, day) => row.map((v, hour) => ({ x: String(hour), y: weekdays[day], v })));
  const max = Math.max(1, ...cells.map((c) => c.v));
  charts.push(new Chart(hours.firstChild, {
    type: "matrix",
    data: { datasets: [{ label: t("busiest_hours"), data: cells,
      backgroundColor: (c) => `rgba(181, 84, 45, ${0.06 + 0.94 * ((c.raw && c.raw.v) || 0) / max})`,
      width: ({ chart }) => (chart.chartArea || {}).width / 24 - 2,
      height: ({ chart }) => (chart.chartArea || {}).height / 7 - 2 }] },
    options: { maintainAspectRatio: false, animation: false, plugins: { legend: { display: false },
      tooltip: { callbacks: { title: () => "", label: (c) => `${c.raw.y} ${c.raw.x}:00 — ${number(c.raw.v)}` } } },
      scales: { x: { type: "category", labels: hourLabels, offset: true, grid: { display: false } },
        y: { type: "category", labels: weekdays, offset: true, reverse: true, grid: { display: false } } } },
  }));
  if (r.top_items.length) {
    charts.push(new Chart(items.firstChild, {
      type: "bar",
      data: { labels: r.top_items.map((i) => i.item), datasets: [{ label: t("fig_orders"), data: r.top_items.map((i) => i.orders), backgroundColor: accent }] },
      options: { indexAxis: "y", maintainAspectRatio: false, animation: false, plugins: { legend: { display: false } }, scales: { x: { ticks: { precision: 0 } } } },
    }));
  }
  const top = r.shops.slice(0, 15);
  charts.push(new Chart(compared.firstChild, {
    type: "bar",
    data: { labels: top.map((s) => s.name || s.shop_id), datasets: [
      { label: t("new_visits"), data: top.map((s) => s.visits - s.returning_visits), backgroundColor: accent },
      { label: t("returning_visits"), data: top.map((s) => s.returning_visits), backgroundColor: ok }] },
    options: { indexAxis: "y", maintainAspectRatio: false, animation: false,
      scales: { x: { stacked: true, beginAtZero: true, ticks: { precision: 0 } }, y: { stacked: true } } },
  }));
}

function minutes(seconds) {
  return seconds === null || seconds === undefined ? "–" : `${Math.round(seconds / 60)} ${t("min")}`;
}

function feedbackCard(f) {
  const who = f.customer_ref ? `${f.display_name || ""} (${f.customer_ref})` : t("erased_customer");
  return el("div", { class: "card feedback" },
    el("div", { class: "shop-head" }, el("span", { class: "stars", "aria-label": `${f.score}/5` }, "★".repeat(f.score || 0) + "☆".repeat(5 - (f.score || 0))),
      el("strong", {}, who), el("span", { class: "note" }, `${f.shop_id} · ${when(f.at_ms)}`)),
    f.comment ? el("p", { class: "comment" }, f.comment) : null);
}

// Fetches the export with the bearer token and saves it as a file.
async function download(ref) {
  if (!ref) throw new Error(t("customer_ref"));
  let res = await fetch(`/api/v1/customers/${encodeURIComponent(ref)}/export`, { headers: { Authorization: `Bearer ${accessToken}` } });
  if (res.status === 401 && await refresh()) {
    res = await fetch(`/api/v1/customers/${encodeURIComponent(ref)}/export`, { headers: { Authorization: `Bearer ${accessToken}` } });
  }
  if (res.status === 401) throw new SignedOut();
  if (!res.ok) throw new Error((await res.json().catch(() => ({}))).error || res.statusText);
  const file = (res.headers.get("Content-Disposition") || "").match(/filename="([^"]+)"/)?.[1] || "customer.json";
  const url = URL.createObjectURL(await res.blob());
  const a = el("a", { href: url, download: file });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  return file;
}

function eraseCustomer(ref, redraw) {
  if (!ref) return;
  const confirmation = el("input", { required: true, id: "erase-confirm", autocomplete: "off" });
  formDialog(t("erase_title", { ref }), [el("p", {}, t("erase_help")), ...field(t("customer_ref"), confirmation)], async () => {
    await api(`/api/v1/customers/${encodeURIComponent(ref)}/erasure`, { method: "POST", body: JSON.stringify({ confirm: confirmation.value }) });
    closeDialog();
    await redraw();
  });
}

document.getElementById("signin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const error = document.getElementById("signin-error");
  error.textContent = "";
  try {
    const res = await fetch("/api/v1/auth/login", {
      method: "POST", headers: { "Content-Type": "application/json" }, credentials: "same-origin",
      body: JSON.stringify({ email: document.getElementById("email").value, password: document.getElementById("password").value, cookie: true }),
    });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(body.error || res.statusText);
    accessToken = body.access_token;
    user = body.user;
    document.getElementById("password").value = "";
    showApp();
  } catch (err) {
    error.textContent = err.message;
  }
});

document.getElementById("signout").addEventListener("click", async () => {
  await fetch("/api/v1/auth/logout", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}", credentials: "same-origin" }).catch(() => {});
  showSignIn();
});

document.getElementById("lang").addEventListener("click", () => { switchLanguage(); if (user) route(); });
window.addEventListener("hashchange", route);

translatePage();
refresh().then((ok) => (ok ? showApp() : showSignIn())).catch(() => showSignIn());
