// glow web: the live map. Every update comes from the server-sent events
// of /api/events (a status a second); the page never reloads. Names and
// addresses come from certificates and other nodes: they are only ever set
// as text (textContent, SVG text nodes), never parsed as HTML.
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const csrf = document.querySelector('meta[name="glow-csrf"]').content;
const $ = (sel) => document.querySelector(sel);

// Fields the page knows; anything else status reports (routes, exit nodes,
// whatever the daemon adds) is shown as it comes, under "more".
const KNOWN_PEER = new Set(["name", "user", "ipv4", "ipv6", "id", "online", "path", "endpoint", "via", "rtt_ms", "loss", "last_seen", "session", "offered_routes", "routes"]);
const KNOWN_SELF = new Set(["name", "user", "ipv4", "ipv6", "id", "admin", "port", "endpoints", "cert_expires", "offered_routes", "exit_node", "exit_node_in_use"]);
const DEFAULT_ROUTES = new Set(["0.0.0.0/0", "::/0"]);

// routeBadges says what a node routes: a subnet router's prefixes (those
// this node sends through it, or those it offers), an exit node, and
// whether it is this node's exit node.
function routeBadges(st, p, isSelf) {
  const out = [];
  const offered = p.offered_routes || [];
  const subnets = offered.filter((r) => !DEFAULT_ROUTES.has(r));
  if (offered.some((r) => DEFAULT_ROUTES.has(r))) {
    const mine = !isSelf && st.self.exit_node && (st.self.exit_node === p.name || st.self.exit_node === key(st, p));
    out.push(isSelf ? "offers exit node" : mine ? (st.self.exit_node_in_use ? "your exit node" : "your exit node (not in use)") : "exit node");
  }
  if (!isSelf && p.routes && p.routes.length) out.push("routes " + p.routes.join(", "));
  else if (subnets.length) out.push("offers " + subnets.join(", "));
  return out;
}
const KNOWN_TOP = new Set(["self", "peers", "drops", "conflicts"]);

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function empty(v) {
  return v === null || v === undefined || v === "" || v === false ||
    (Array.isArray(v) && v.length === 0) ||
    (typeof v === "object" && !Array.isArray(v) && Object.keys(v).length === 0);
}

function show(v) {
  if (typeof v === "string") return v;
  if (Array.isArray(v) && v.every((x) => typeof x === "string")) return v.join(", ");
  return JSON.stringify(v);
}

// extras returns "key: value" for the fields of o not in known, non-empty.
function extras(o, known) {
  return Object.keys(o).filter((k) => !known.has(k) && !empty(o[k])).sort().map((k) => k + ": " + show(o[k]));
}

function ms(v) {
  return v >= 10 ? v.toFixed(0) + " ms" : v.toFixed(1) + " ms";
}

function pathText(p) {
  switch (p.path) {
    case "direct": return "direct " + (p.endpoint || "");
    case "relay": return "relay via " + (p.via || []).join(", ");
    case "stream": return "stream " + (p.endpoint || "");
    default: return "offline";
  }
}

// ---- the map ----

const W = 720, H = 520, CX = W / 2, CY = H / 2;

// layout places self in the middle, the peers it reaches directly (or
// over a stream link, or not at all) on a ring around it, and each peer
// reached through relays on an outer ring beside its last relay, so a
// relayed route reads as a chain outwards. Peers are taken in name order
// (the user's own nodes first, then each friend's), so a node keeps its
// place from one update to the next while the paths stay the same.
function layout(st) {
  const pos = new Map();
  pos.set(st.self.name, { x: CX, y: CY });
  const peers = [...st.peers].sort((a, b) => {
    const fa = a.user !== st.self.user, fb = b.user !== st.self.user;
    if (fa !== fb) return fa ? 1 : -1;
    return (a.user + "/" + a.name).localeCompare(b.user + "/" + b.name);
  });
  const lastRelay = (p) => {
    if (!p.online || p.path !== "relay" || !p.via || p.via.length === 0) return null;
    const v = p.via[p.via.length - 1];
    const r = peers.find((q) => q !== p && (q.name === v || key(st, q) === v || v.startsWith(q.name + "." + q.user)));
    return r && !(r.online && r.path === "relay") ? r : null; // one level out, no chains of outer nodes
  };
  const inner = peers.filter((p) => !lastRelay(p));
  const R1 = 140, R2 = 225, SX = 1.2;
  const angle = new Map();
  inner.forEach((p, i) => {
    const n = inner.length;
    const a = Math.PI + (2 * Math.PI * i) / Math.max(n, 1); // the first to the left: the map is wide
    angle.set(p, a);
    pos.set(key(st, p), { x: CX + R1 * SX * Math.cos(a), y: CY + R1 * Math.sin(a) });
  });
  const children = new Map();
  for (const p of peers) {
    const r = lastRelay(p);
    if (r) children.set(r, (children.get(r) || []).concat([p]));
  }
  for (const [r, kids] of children) {
    const spread = Math.min(0.5, 1.2 / kids.length);
    kids.forEach((p, i) => {
      const a = angle.get(r) + (i - (kids.length - 1) / 2) * spread;
      pos.set(key(st, p), { x: CX + R2 * SX * Math.cos(a), y: CY + R2 * Math.sin(a) });
    });
  }
  return pos;
}

// key names a peer on the map: its name for our user's nodes,
// name.user for a friend's.
function key(st, p) {
  return p.user === st.self.user ? p.name : p.name + "." + p.user;
}

// findRelay finds the map position of a relay named in via (node or
// node.user).
function findRelay(st, pos, name) {
  if (pos.has(name)) return pos.get(name);
  const short = name.split(".")[0];
  for (const p of st.peers) {
    if (p.name === short && (name === short || name.startsWith(short + "." + p.user))) return pos.get(key(st, p));
  }
  return null;
}

// curve is a quadratic Bézier from a to b bowed sideways by bend pixels
// (so a relayed route does not hide a direct edge along the same line).
function curve(a, b, bend) {
  const mx = (a.x + b.x) / 2, my = (a.y + b.y) / 2;
  const dx = b.x - a.x, dy = b.y - a.y, len = Math.hypot(dx, dy) || 1;
  const cx = mx - (dy / len) * bend, cy = my + (dx / len) * bend;
  return { d: `M${a.x},${a.y} Q${cx},${cy} ${b.x},${b.y}`, lx: (mx + cx) / 2, ly: (my + cy) / 2 };
}

function drawMap(st) {
  const m = $("#map");
  const pos = layout(st);
  const edges = svg("g", { class: "edges" }), labels = svg("g", { class: "labels" }), nodes = svg("g", { class: "nodes" });
  const self = pos.get(st.self.name);
  const routeLabel = new Map();

  for (const p of st.peers) {
    const k = key(st, p), at = pos.get(k);
    if (!p.online || p.path === "none") continue;
    let label = "", lx, ly;
    const q = [];
    if (p.rtt_ms > 0) q.push(ms(p.rtt_ms));
    q.push(Math.round((p.loss || 0) * 100) + "% loss");
    if (p.path === "relay") {
      // The route: this node, each relay in order, the peer.
      const hops = [self];
      for (const v of p.via || []) {
        const r = findRelay(st, pos, v);
        if (r) hops.push(r);
      }
      hops.push(at);
      let d = "";
      for (let i = 0; i + 1 < hops.length; i++) {
        d += (i ? " " : "") + curve(hops[i], hops[i + 1], 28).d;
      }
      edges.append(svg("path", { class: "edge relay", d, "data-peer": k, "data-kind": "relay", "data-via": (p.via || []).join(",") }));
      // A route's label goes under its peer: its last hop is often too
      // short to hold it.
      routeLabel.set(k, ["via " + (p.via || []).join(" → ")].concat(q).join(" · "));
      continue;
    } else {
      const c = curve(self, at, 0);
      lx = c.lx; ly = c.ly;
      edges.append(svg("path", { class: "edge " + p.path, d: c.d, "data-peer": k, "data-kind": p.path }));
      label = [p.path].concat(q).join(" · ");
    }
    labels.append(svg("text", { class: "edge-label " + p.path, x: lx, y: ly - 4, "text-anchor": "middle" }, label));
  }

  const addNode = (k, p, cls, sub, badges) => {
    const at = pos.get(k);
    const g = svg("g", { class: "node " + cls, transform: `translate(${at.x},${at.y})`, "data-name": k });
    g.append(svg("circle", { r: 16 }));
    g.append(svg("text", { class: "name", y: -22 }, k));
    g.append(svg("text", { class: "sub", y: 32 }, sub));
    let y = 46;
    if (routeLabel.has(k)) {
      // Near the map's sides the label grows inwards, not off the map.
      const side = at.x < 110 ? { x: -20, class: "edge-label relay anchor-start" } : at.x > W - 110 ? { x: 20, class: "edge-label relay anchor-end" } : {};
      g.append(svg("text", { class: "edge-label relay", y, ...side }, routeLabel.get(k)));
      y += 13;
    }
    badges.forEach((b, i) => g.append(svg("text", { class: "badge", y: y + 13 * i }, b)));
    nodes.append(g);
    return g;
  };
  const me = addNode(st.self.name, st.self, "self", st.self.ipv4, routeBadges(st, st.self, true).concat(extras(st.self, KNOWN_SELF)).slice(0, 3));
  me.append(svg("text", { class: "self-mark", y: 4 }, "you"));
  for (const p of st.peers) {
    const cls = [];
    if (p.user !== st.self.user) cls.push("friend");
    if (!p.online || p.path === "none") cls.push("offline");
    else if (p.path === "relay") cls.push("relayed");
    else if (p.path === "stream") cls.push("stream");
    const sub = p.online ? p.ipv4 : "offline";
    addNode(key(st, p), p, cls.join(" "), sub, routeBadges(st, p, false).concat(extras(p, KNOWN_PEER)).slice(0, 3));
  }
  m.replaceChildren(edges, labels, nodes);
}

// ---- the panels ----

function drawSelf(st) {
  const s = st.self, dl = $("#self");
  const rows = [
    ["name", s.name + "." + s.user + ".glow"],
    ["addresses", s.ipv4 + "  " + s.ipv6],
    ["admin", s.admin ? "yes" : "no"],
    ["port", String(s.port)],
    ["endpoints", (s.endpoints || []).join(", ") || "none yet"],
    ["certificate until", s.cert_expires],
  ];
  if (!empty(s.offered_routes)) rows.push(["offers routes", s.offered_routes.join(", ")]);
  if (s.exit_node) rows.push(["exit node", s.exit_node + (s.exit_node_in_use ? " (in use)" : " (not in use: Internet traffic blocked)")]);
  for (const k of Object.keys(s).sort()) {
    if (!KNOWN_SELF.has(k) && !empty(s[k])) rows.push([k, show(s[k])]);
  }
  dl.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  $("#title").textContent = s.name + "." + s.user;
}

function drawPeers(st) {
  const rows = st.peers.map((p) => {
    const k = key(st, p);
    const tr = el("tr", { "data-peer": k, "data-path": p.online ? p.path : "none", "data-via": (p.via || []).join(","), "data-online": String(!!p.online) });
    tr.append(el("td", {}, p.name), el("td", {}, p.user), el("td", {}, p.ipv4),
      el("td", { class: "path-" + (p.online ? p.path : "none") }, p.online ? pathText(p) : "offline"),
      el("td", {}, p.online && p.rtt_ms > 0 ? ms(p.rtt_ms) : "-"),
      el("td", {}, p.loss > 0 ? Math.round(p.loss * 100) + "%" : "0%"),
      el("td", {}, p.last_seen || "-"),
      el("td", { class: "more" }, routeBadges(st, p, false).concat(extras(p, KNOWN_PEER)).join("; ")));
    return tr;
  });
  if (rows.length === 0) {
    const tr = el("tr");
    tr.append(el("td", { colspan: "8", class: "muted" }, "no peers yet: invite a device"));
    rows.push(tr);
  }
  $("#peers tbody").replaceChildren(...rows);
}

function drawFriends(friends) {
  const rows = friends.map((f) => {
    const tr = el("tr", { "data-friend": f.name });
    tr.append(el("td", {}, f.name), el("td", {}, (f.nodes || []).join(", ") || "-"), el("td", {}, (f.shared || []).join(", ") || "nothing"));
    return tr;
  });
  if (rows.length === 0) {
    const tr = el("tr");
    tr.append(el("td", { colspan: "3", class: "muted" }, "no friends yet"));
    rows.push(tr);
  }
  $("#friends tbody").replaceChildren(...rows);
}

function drawExtra(st) {
  const out = [];
  for (const k of Object.keys(st).sort()) {
    if (!KNOWN_TOP.has(k) && !empty(st[k])) {
      out.push(el("h3", {}, k), el("pre", {}, JSON.stringify(st[k], null, 2)));
    }
  }
  for (const c of st.conflicts || []) {
    out.push(el("p", { class: "err" }, `conflict: ${c.node} claims ${c.addr}, held by ${c.holder}: not routed to ${c.node}`));
  }
  const drops = Object.entries(st.drops || {}).filter(([, v]) => v > 0).sort();
  if (drops.length) {
    out.push(el("h3", {}, "drops"), el("pre", {}, drops.map(([k, v]) => k + " " + v).join("\n")));
  }
  if (out.length === 0) out.push(el("p", { class: "muted" }, "nothing else"));
  $("#extra").replaceChildren(...out);
}

let seq = 0;

function update(snap) {
  const live = $("#live");
  if (snap.error || !snap.status) {
    live.className = "live down";
    live.textContent = "daemon not answering: " + (snap.error || "no status");
    return;
  }
  const st = snap.status;
  st.peers = st.peers || [];
  drawMap(st);
  drawSelf(st);
  drawPeers(st);
  drawFriends(snap.friends || []);
  drawExtra(st);
  seq++;
  document.body.dataset.seq = String(seq);
  live.className = "live ok";
  live.textContent = "live · " + new Date(snap.time).toLocaleTimeString();
}

// ---- NAT view ----

const MAPPING = {
  "endpoint-independent": "easy NAT (or none): one public port for every peer; direct paths work",
  "endpoint-dependent": "hard NAT: a new public port per destination; peers behind hard NATs are reached through relays",
  "unknown": "unknown: no STUN answer (no public relay reachable?)",
};

async function netcheck() {
  const btn = $("#netcheck-btn"), box = $("#nat");
  btn.disabled = true;
  try {
    const r = await fetch("/api/netcheck", { credentials: "same-origin" });
    const nc = await r.json();
    if (!r.ok) throw new Error(nc.error || r.statusText);
    const dl = el("dl", { id: "nat-view", "data-mapping": nc.mapping });
    const rows = [
      ["mapping", MAPPING[nc.mapping] || nc.mapping],
      ["public address", (nc.reflexive || []).join(", ") || "none seen"],
      ["local port", String(nc.local_port)],
      ["port mapping", `UPnP ${nc.portmap.UPnP ? "yes" : "no"} · NAT-PMP ${nc.portmap.PMP ? "yes" : "no"} · PCP ${nc.portmap.PCP ? "yes" : "no"}` + (nc.mapped ? " · mapped " + nc.mapped : "")],
      ["relays", (nc.relays || []).map((x) => `${x.name} ${x.addr} ${ms(x.rtt_ms)}`).join(", ") || "none"],
    ];
    if (nc.port_clash) rows.push(["port clash", nc.port_clash]);
    for (const s of nc.servers || []) rows.push(["STUN " + s.server, s.error ? "error: " + s.error : `${s.reflexive} in ${ms(s.latency_ms)}`]);
    dl.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    box.replaceChildren(dl);
  } catch (e) {
    box.replaceChildren(el("p", { class: "err" }, "netcheck: " + e.message));
  } finally {
    btn.disabled = false;
  }
}

// ---- invites ----

async function invite(kind) {
  const err = $("#invite-err"), out = $("#invite-out");
  err.hidden = true;
  for (const b of document.querySelectorAll("#invite-panel button")) b.disabled = true;
  try {
    const r = await fetch("/api/invite?kind=" + encodeURIComponent(kind), {
      method: "POST", credentials: "same-origin", headers: { "X-Glow-CSRF": csrf },
    });
    const inv = await r.json();
    if (!r.ok) throw new Error(inv.error || r.statusText);
    $("#invite-kind").textContent = inv.kind === "friend" ? "Friend" : "Device";
    $("#invite-expires").textContent = new Date(inv.expires).toLocaleString();
    $("#invite-code").textContent = inv.code;
    const img = $("#invite-qr");
    if (inv.qr && inv.qr.startsWith("data:image/")) {
      img.src = inv.qr;
      img.hidden = false;
    } else {
      img.hidden = true;
    }
    out.dataset.kind = inv.kind;
    out.hidden = false;
  } catch (e) {
    err.textContent = "invite: " + e.message;
    err.hidden = false;
  } finally {
    for (const b of document.querySelectorAll("#invite-panel button")) b.disabled = false;
  }
}

// ---- start ----

function start() {
  $("#netcheck-btn").addEventListener("click", netcheck);
  $("#invite-device").addEventListener("click", () => invite("device"));
  $("#invite-friend").addEventListener("click", () => invite("friend"));
  const es = new EventSource("/api/events");
  es.onmessage = (ev) => {
    try {
      update(JSON.parse(ev.data));
    } catch (e) {
      const live = $("#live");
      live.className = "live down";
      live.textContent = "bad update: " + e.message;
    }
  };
  es.onerror = () => {
    const live = $("#live");
    live.className = "live down";
    live.textContent = "reconnecting to glow web… (restarted? open the new URL it printed)";
  };
  netcheck();
}

start();
