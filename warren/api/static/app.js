// Warren management UI: vanilla JS over the management HTTP API, refreshed by polling.
"use strict";

const POLL_MS = 2000;
const HISTORY = 60; // samples kept for the rate chart
let auth = sessionStorage.getItem("warren-auth");
let pollTimer = null;
const rateHistory = [];
const tableState = {}; // per table: {sort, desc, filters}

// ---- helpers ------------------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
const enc = (s) => encodeURIComponent(s);
const fmtRate = (r) => (r || 0).toFixed(1) + "/s";

async function api(method, path, body, extraHeaders) {
  const headers = { Authorization: "Basic " + auth, "X-Requested-With": "XMLHttpRequest", ...(extraHeaders || {}) };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await resp.text();
  const data = text ? JSON.parse(text) : null;
  // RabbitMQ's API answers both bad credentials ("not_authorized") and refusals of a logged-in
  // user ("not_authorised": a tag or vhost it lacks) with 401; only the former logs out.
  if (resp.status === 401 && !(data && data.error === "not_authorised" && data.reason !== "Not management user")) {
    logout((data && data.reason) || "Login failed");
    throw new Error("unauthorised");
  }
  if (!resp.ok) throw new Error((data && data.reason) || resp.statusText);
  return data;
}

function setStatus(message) { document.getElementById("status").textContent = message || ""; }

// ---- login --------------------------------------------------------------------------------
function showLogin(message) {
  document.getElementById("login").hidden = false;
  document.getElementById("nav").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("view").replaceChildren();
  document.getElementById("who").textContent = "";
  document.getElementById("login-error").textContent = message || "";
}

function logout(message) {
  auth = null;
  sessionStorage.removeItem("warren-auth");
  clearTimeout(pollTimer);
  showLogin(message);
}

document.getElementById("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const user = document.getElementById("login-user").value;
  const pass = document.getElementById("login-pass").value;
  auth = btoa(unescape(encodeURIComponent(user + ":" + pass)));
  try {
    const resp = await fetch("api/whoami", { headers: { Authorization: "Basic " + auth, "X-Requested-With": "XMLHttpRequest" } });
    if (!resp.ok) { const d = await resp.json(); logout(d.reason || "Login failed"); return; }
    sessionStorage.setItem("warren-auth", auth);
    start();
  } catch (e) { logout(String(e)); }
});
document.getElementById("logout").addEventListener("click", () => logout(""));

// ---- tables -------------------------------------------------------------------------------
// columns: [{key, title, num, get(row)->value, render(row)->node}]
// A quorum queue's members: which one leads, which are online (as RabbitMQ's queue page).
function quorumMembers(q) {
  const online = new Set(q.online || []);
  return el("div", {},
    el("h3", {}, "Members"),
    el("p", {}, "Leader: ", el("b", { id: "queue-leader" }, q.leader || "none (an election is under way)")),
    el("table", { id: "queue-members" },
      el("thead", {}, el("tr", {}, el("th", {}, "Node"), el("th", {}, "Role"), el("th", {}, "Online"))),
      el("tbody", {}, (q.members || []).map((m) => el("tr", { "data-node": m },
        el("td", {}, m), el("td", {}, m === q.leader ? "leader" : "follower"),
        el("td", {}, online.has(m) ? "yes" : "no"))))));
}

function table(id, rows, columns, filterKeys) {
  const state = tableState[id] || (tableState[id] = { sort: columns[0].key, desc: false, filters: {} });
  const value = (row, col) => (col.get ? col.get(row) : row[col.key]);
  let shown = rows.filter((row) => Object.entries(state.filters).every(([key, f]) => {
    if (!f) return true;
    const col = columns.find((c) => c.key === key);
    return String(value(row, col) ?? "").toLowerCase().includes(f.toLowerCase());
  }));
  const sortCol = columns.find((c) => c.key === state.sort) || columns[0];
  shown = shown.slice().sort((a, b) => {
    const x = value(a, sortCol), y = value(b, sortCol);
    const cmp = typeof x === "number" && typeof y === "number" ? x - y : String(x ?? "").localeCompare(String(y ?? ""));
    return state.desc ? -cmp : cmp;
  });
  const filters = (filterKeys || []).map((key) => {
    const col = columns.find((c) => c.key === key);
    return el("label", {}, "Filter " + col.title,
      el("input", { "data-filter": key, value: state.filters[key] || "",
        oninput: (e) => { state.filters[key] = e.target.value; refresh(); } }));
  });
  const head = el("tr", {}, columns.map((col) => el("th", {
    "data-key": col.key,
    class: state.sort === col.key ? (state.desc ? "sorted-desc" : "sorted-asc") : null,
    onclick: () => { state.desc = state.sort === col.key ? !state.desc : false; state.sort = col.key; refresh(); },
  }, col.title)));
  const body = shown.map((row) => el("tr", {}, columns.map((col) =>
    el("td", { class: col.num ? "num" : null }, col.render ? col.render(row) : fmtCell(value(row, col))))));
  return el("div", {}, filters.length ? el("div", { class: "filters" }, filters) : null,
    el("table", { id }, el("thead", {}, head), el("tbody", {}, body)));
}

function fmtCell(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

// ---- views --------------------------------------------------------------------------------
const views = {
  async overview() {
    const o = await api("GET", "api/overview");
    const s = o.message_stats || {};
    rateHistory.push({
      publish: (s.publish_details || {}).rate || 0,
      deliver: (s.deliver_get_details || {}).rate || 0,
      ack: (s.ack_details || {}).rate || 0,
      ready: o.queue_totals.messages_ready, unacked: o.queue_totals.messages_unacknowledged,
    });
    while (rateHistory.length > HISTORY) rateHistory.shift();
    const t = o.object_totals, q = o.queue_totals;
    const box = (label, v, id) => el("div", { id }, label, el("b", {}, v));
    const canvasRates = el("canvas", { id: "rates-chart", width: 640, height: 180 });
    const canvasQueued = el("canvas", { id: "queued-chart", width: 640, height: 180 });
    drawChart(canvasRates, ["publish", "deliver", "ack"], ["#e67e22", "#2980b9", "#27ae60"], "msg/s");
    drawChart(canvasQueued, ["ready", "unacked"], ["#8e44ad", "#c0392b"], "messages");
    return el("div", {},
      el("h2", {}, "Overview: " + o.cluster_name),
      el("div", { class: "totals" },
        box("Connections", t.connections, "total-connections"), box("Channels", t.channels),
        box("Queues", t.queues, "total-queues"), box("Consumers", t.consumers), box("Exchanges", t.exchanges),
        box("Messages", q.messages, "total-messages"), box("Ready", q.messages_ready),
        box("Unacked", q.messages_unacknowledged)),
      el("div", { class: "totals" },
        box("Publish", fmtRate((s.publish_details || {}).rate), "rate-publish"),
        box("Deliver/get", fmtRate((s.deliver_get_details || {}).rate), "rate-deliver"),
        box("Ack", fmtRate((s.ack_details || {}).rate), "rate-ack"),
        box("Redeliver", fmtRate((s.redeliver_details || {}).rate))),
      el("h3", {}, "Message rates"), canvasRates,
      el("h3", {}, "Queued messages"), canvasQueued);
  },

  async nodes() {
    const nodes = await api("GET", "api/nodes");
    let cluster = null;  // membership as this node sees it; a standalone node has none (404)
    try { cluster = await api("GET", "v1/cluster/info"); } catch (e) { cluster = null; }
    const member = {};
    for (const m of (cluster ? cluster.members : [])) member[m.name] = m;
    const mb = (b) => (b / 1048576).toFixed(0) + " MiB";
    return el("div", {}, el("h2", {}, "Nodes"), table("nodes-table", nodes, [
      { key: "name", title: "Name" },
      { key: "running", title: "Running" },
      { key: "status", title: "Status", get: (n) => (member[n.name] || {}).status || (n.running ? "alive" : "down"),
        render: (n) => { const st = (member[n.name] || {}).status || (n.running ? "alive" : "down");
          return el("span", { class: "node-status status-" + st }, st); } },
      { key: "leader", title: "Leader", get: (n) => ((member[n.name] || {}).is_leader ? "leader" : "") },
      { key: "partitions", title: "Cannot reach", get: (n) => (n.partitions || []).join(", ") },
      { key: "uptime", title: "Uptime (s)", num: true, get: (n) => Math.floor(n.uptime / 1000) },
      { key: "mem_used", title: "Memory", num: true, render: (n) => mb(n.mem_used) + " / " + mb(n.mem_limit) },
      { key: "disk_free", title: "Disk free", num: true, render: (n) => mb(n.disk_free) },
      { key: "alarms", title: "Alarms", get: (n) => [n.mem_alarm && "memory", n.disk_free_alarm && "disk"].filter(Boolean).join(", ") },
      { key: "connections", title: "Connections", num: true },
    ]));
  },

  async connections() {
    const rows = await api("GET", "api/connections");
    return el("div", {}, el("h2", {}, "Connections"), table("connections-table", rows, [
      { key: "name", title: "Name" },
      { key: "user_provided_name", title: "Client name", get: (c) => c.user_provided_name || "" },
      { key: "user", title: "User" }, { key: "vhost", title: "Vhost" },
      { key: "state", title: "State" }, { key: "channels", title: "Channels", num: true },
      { key: "protocol", title: "Protocol" },
      { key: "client", title: "Client", get: (c) => (c.client_properties || {}).product || "" },
      { key: "close", title: "", render: (c) => el("button", { class: "close-connection",
        onclick: async () => { if (!confirm("Close connection " + c.name + "?")) return;
          await act(() => api("DELETE", "api/connections/" + enc(c.name), undefined, { "X-Reason": "Closed from the web UI" })); } }, "Close") },
    ], ["name", "user_provided_name", "user"]));
  },

  async channels() {
    const rows = await api("GET", "api/channels");
    return el("div", {}, el("h2", {}, "Channels"), table("channels-table", rows, [
      { key: "name", title: "Channel" }, { key: "user", title: "User" }, { key: "vhost", title: "Vhost" },
      { key: "state", title: "State" }, { key: "confirm", title: "Confirm" },
      { key: "consumer_count", title: "Consumers", num: true },
      { key: "messages_unacknowledged", title: "Unacked", num: true },
      { key: "prefetch_count", title: "Prefetch", num: true },
    ], ["name"]));
  },

  async exchanges() {
    const rows = await api("GET", "api/exchanges");
    return el("div", {}, el("h2", {}, "Exchanges"), table("exchanges-table", rows, [
      { key: "vhost", title: "Vhost" }, { key: "name", title: "Name", get: (x) => x.name || "(AMQP default)" },
      { key: "type", title: "Type" }, { key: "durable", title: "Durable" },
      { key: "auto_delete", title: "Auto-delete" }, { key: "internal", title: "Internal" },
      { key: "policy", title: "Policy" },
    ], ["name", "type"]));
  },

  async queues() {
    const rows = await api("GET", "api/queues");
    return el("div", {}, el("h2", {}, "Queues"), table("queues-table", rows, [
      { key: "vhost", title: "Vhost" },
      { key: "name", title: "Name", render: (q) => el("a", { href: "#/queue/" + enc(q.vhost) + "/" + enc(q.name), class: "queue-link" }, q.name) },
      { key: "type", title: "Type" },
      { key: "state", title: "State" },
      { key: "policy", title: "Policy" },
      { key: "messages_ready", title: "Ready", num: true },
      { key: "messages_unacknowledged", title: "Unacked", num: true },
      { key: "messages", title: "Total", num: true },
      { key: "rate", title: "Rate", num: true, get: (q) => (q.messages_details || {}).rate || 0, render: (q) => fmtRate((q.messages_details || {}).rate) },
      { key: "consumers", title: "Consumers", num: true },
      { key: "node", title: "Node", get: (q) => q.leader || q.node || "" },
    ], ["name", "type", "state"]),
    el("h3", {}, "Add a queue"),
    el("form", { class: "inline", id: "add-queue", onsubmit: async (e) => {
      e.preventDefault(); const f = e.target;
      await act(() => api("PUT", "api/queues/" + enc(f.vhost.value) + "/" + enc(f.name.value),
        { durable: f.durable.checked, auto_delete: false, arguments: {} }));
    } },
      el("label", {}, "Vhost", el("input", { name: "vhost", value: "/" })),
      el("label", {}, "Name", el("input", { name: "name", required: true })),
      el("label", {}, "Durable", el("input", { name: "durable", type: "checkbox", checked: true })),
      el("button", { type: "submit" }, "Add queue")));
  },

  async queue(vhost, name) {
    const q = await api("GET", "api/queues/" + enc(vhost) + "/" + enc(name));
    const base = "api/queues/" + enc(vhost) + "/" + enc(name);
    const got = document.getElementById("got-messages");
    const kept = got ? Array.from(got.childNodes) : [];
    return el("div", {},
      el("h2", {}, "Queue ", el("span", { id: "queue-name" }, q.name), " in vhost " + q.vhost),
      el("div", { class: "totals" },
        el("div", { id: "queue-ready" }, "Ready", el("b", {}, q.messages_ready)),
        el("div", { id: "queue-unacked" }, "Unacked", el("b", {}, q.messages_unacknowledged)),
        el("div", {}, "Total", el("b", { id: "queue-total" }, q.messages)),
        el("div", {}, "Consumers", el("b", {}, q.consumers)),
        el("div", {}, "Policy", el("b", {}, q.policy || "none"))),
      el("p", {}, "Durable: " + q.durable + ", auto-delete: " + q.auto_delete + ", arguments: " + JSON.stringify(q.arguments)
        + ", effective policy: " + JSON.stringify(q.effective_policy_definition || {})),
      q.type === "quorum" ? quorumMembers(q) : null,
      el("h3", {}, "Publish message"),
      el("form", { class: "inline", id: "publish-form", onsubmit: async (e) => {
        e.preventDefault(); const f = e.target;
        await act(() => api("POST", "api/exchanges/" + enc(vhost) + "/amq.default/publish", {
          routing_key: name, payload: f.payload.value, payload_encoding: "string",
          properties: { delivery_mode: f.persistent.checked ? 2 : 1 } }));
      } },
        el("label", {}, "Payload", el("textarea", { name: "payload", rows: 2, cols: 40 })),
        el("label", {}, "Persistent", el("input", { name: "persistent", type: "checkbox" })),
        el("button", { type: "submit", id: "publish-button" }, "Publish message")),
      el("h3", {}, "Get messages"),
      el("form", { class: "inline", id: "get-form", onsubmit: async (e) => {
        e.preventDefault(); const f = e.target;
        const messages = await act(() => api("POST", base + "/get", {
          count: Number(f.count.value), ackmode: f.ackmode.value, encoding: "auto", truncate: 50000 }));
        const box = document.getElementById("got-messages");
        box.replaceChildren(...(messages || []).map((m, i) => el("div", { class: "message" },
          el("p", {}, "Message " + (i + 1) + ": routing key " + m.routing_key + ", redelivered " + m.redelivered),
          el("pre", { class: "payload" }, m.payload))));
        if (!messages || !messages.length) box.replaceChildren(el("p", {}, "Queue is empty"));
      } },
        el("label", {}, "Ack mode", el("select", { name: "ackmode" },
          el("option", { value: "ack_requeue_true" }, "Nack message requeue true"),
          el("option", { value: "ack_requeue_false" }, "Automatic ack"))),
        el("label", {}, "Messages", el("input", { name: "count", type: "number", value: 1, min: 1 })),
        el("button", { type: "submit", id: "get-button" }, "Get message(s)")),
      el("div", { id: "got-messages" }, kept),
      el("h3", {}, "Purge / delete"),
      el("button", { id: "purge-button", onclick: () => act(() => api("DELETE", base + "/contents")) }, "Purge messages"),
      " ",
      el("button", { id: "delete-button", onclick: async () => {
        if (!confirm("Delete queue " + name + "?")) return;
        await act(() => api("DELETE", base)); location.hash = "#/queues";
      } }, "Delete queue"));
  },

  async users() {
    const rows = await api("GET", "api/users");
    return el("div", {}, el("h2", {}, "Users"), table("users-table", rows, [
      { key: "name", title: "Name" }, { key: "tags", title: "Tags", get: (u) => u.tags.join(", ") },
      { key: "delete", title: "", render: (u) => el("button", { onclick: () => act(() => api("DELETE", "api/users/" + enc(u.name))) }, "Delete") },
    ]),
    el("h3", {}, "Add a user"),
    el("form", { class: "inline", id: "add-user", onsubmit: async (e) => {
      e.preventDefault(); const f = e.target;
      await act(() => api("PUT", "api/users/" + enc(f.name.value), { password: f.password.value, tags: f.tags.value }));
    } },
      el("label", {}, "Username", el("input", { name: "name", required: true })),
      el("label", {}, "Password", el("input", { name: "password", type: "password", required: true })),
      el("label", {}, "Tags", el("input", { name: "tags", placeholder: "administrator, management" })),
      el("button", { type: "submit" }, "Add user")));
  },

  async vhosts() {
    const rows = await api("GET", "api/vhosts");
    return el("div", {}, el("h2", {}, "Virtual hosts"), table("vhosts-table", rows, [
      { key: "name", title: "Name" }, { key: "messages_ready", title: "Ready", num: true },
      { key: "messages_unacknowledged", title: "Unacked", num: true }, { key: "messages", title: "Total", num: true },
    ]),
    el("form", { class: "inline", id: "add-vhost", onsubmit: async (e) => {
      e.preventDefault(); await act(() => api("PUT", "api/vhosts/" + enc(e.target.name.value)));
    } }, el("label", {}, "Name", el("input", { name: "name", required: true })), el("button", { type: "submit" }, "Add virtual host")));
  },

  async policies() {
    const rows = await api("GET", "api/policies");
    return el("div", {}, el("h2", {}, "Policies"), table("policies-table", rows, [
      { key: "vhost", title: "Vhost" }, { key: "name", title: "Name" }, { key: "pattern", title: "Pattern" },
      { key: "apply-to", title: "Apply to" }, { key: "definition", title: "Definition" },
      { key: "priority", title: "Priority", num: true },
      { key: "delete", title: "", render: (p) => el("button", { onclick: () => act(() => api("DELETE", "api/policies/" + enc(p.vhost) + "/" + enc(p.name))) }, "Delete") },
    ]),
    el("h3", {}, "Add / update a policy"),
    el("form", { class: "inline", id: "add-policy", onsubmit: async (e) => {
      e.preventDefault(); const f = e.target;
      let definition;
      try { definition = JSON.parse(f.definition.value); } catch (err) { setStatus("Definition is not valid JSON: " + err.message); return; }
      await act(() => api("PUT", "api/policies/" + enc(f.vhost.value) + "/" + enc(f.name.value), {
        pattern: f.pattern.value, definition, priority: Number(f.priority.value), "apply-to": f.applyto.value }));
    } },
      el("label", {}, "Vhost", el("input", { name: "vhost", value: "/" })),
      el("label", {}, "Name", el("input", { name: "name", required: true })),
      el("label", {}, "Pattern", el("input", { name: "pattern", required: true })),
      el("label", {}, "Apply to", el("select", { name: "applyto" }, ["all", "queues", "exchanges"].map((v) => el("option", { value: v }, v)))),
      el("label", {}, "Priority", el("input", { name: "priority", type: "number", value: 0 })),
      el("label", {}, "Definition (JSON)", el("input", { name: "definition", value: '{"max-length": 1000}' })),
      el("button", { type: "submit" }, "Add policy")));
  },
};

async function act(fn) {
  try { const result = await fn(); setStatus(""); refresh(); return result; }
  catch (e) { setStatus(e.message); return null; }
}

function drawChart(canvas, keys, colors, unit) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 30;
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(1, ...rateHistory.flatMap((p) => keys.map((k) => p[k])));
  ctx.fillStyle = "#666"; ctx.font = "11px sans-serif";
  ctx.fillText(max.toFixed(1) + " " + unit, 2, 12); ctx.fillText("0", 2, h - 4);
  keys.forEach((key, i) => {
    ctx.strokeStyle = colors[i]; ctx.lineWidth = 2; ctx.beginPath();
    rateHistory.forEach((p, j) => {
      const x = pad + (j / Math.max(1, HISTORY - 1)) * (w - pad - 5);
      const y = h - 10 - (p[key] / max) * (h - 25);
      if (j === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
    ctx.fillStyle = colors[i]; ctx.fillText(key, w - 70, 14 + i * 13);
  });
}

// ---- routing and polling --------------------------------------------------------------------
function route() {
  const parts = (location.hash || "#/overview").slice(2).split("/").map(decodeURIComponent);
  const name = parts[0] in views ? parts[0] : "overview";
  return [name, parts.slice(1)];
}

let refreshing = false;
let lastRoute = null;
async function refresh() {
  if (!auth || refreshing) return;
  refreshing = true;
  const [name, args] = route();
  if (location.hash !== lastRoute) setStatus("");  // a message about another page is stale here
  lastRoute = location.hash;
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.getAttribute("href") === "#/" + (name === "queue" ? "queues" : name)));
  try {
    const active = document.activeElement;
    const typing = active && ["INPUT", "TEXTAREA", "SELECT"].includes(active.tagName) && !active.dataset.filter
      && document.getElementById("view").contains(active);
    const node = await views[name](...args);
    // never rebuild the form the user is typing in; filters keep their focus across rebuilds
    if (!typing) {
      const filterFocus = active && active.dataset ? active.dataset.filter : null;
      document.getElementById("view").replaceChildren(node);
      if (filterFocus) {
        const input = document.querySelector('[data-filter="' + filterFocus + '"]');
        if (input) { input.focus(); input.setSelectionRange(input.value.length, input.value.length); }
      }
    }
    document.getElementById("view").dataset.view = name;
  } catch (e) {
    if (e.message !== "unauthorised") setStatus(e.message);
  } finally {
    refreshing = false;
  }
}

function poll() {
  clearTimeout(pollTimer);
  refresh().finally(() => { if (auth) pollTimer = setTimeout(poll, POLL_MS); });
}

async function start() {
  document.getElementById("login").hidden = true;
  document.getElementById("nav").hidden = false;
  document.getElementById("logout").hidden = false;
  try {
    const me = await api("GET", "api/whoami");
    document.getElementById("who").textContent = me.name + " (" + me.tags.join(", ") + ")";
  } catch (e) { return; }
  poll();
}

window.addEventListener("hashchange", () => { document.getElementById("view").replaceChildren(); refresh(); });
if (auth) start(); else showLogin("");
