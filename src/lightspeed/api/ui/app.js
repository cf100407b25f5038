// Lightspeed dashboard: plain JS over the node's REST API (no build step, nothing from a CDN).
// The token lives in sessionStorage (this tab only); every call sends it as a bearer token.
// Everything the node returns is put on the page as text (textContent), never as HTML.
"use strict";

const TOKEN_KEY = "lightspeed.token";
const PAGES = ["overview", "channels", "peers", "payments", "receive", "send"];
let lastInvoiceHash = null;
let liveAbort = null;
let poller = null;
let armedClose = null;  // the channel whose Close button was clicked once
const POLL_MS = 5000;  // channel states and peers change without an event on the bus: look again now and then

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function sat(msat) {
  if (msat === null || msat === undefined) return "—";
  const whole = Math.floor(msat / 1000), rest = msat % 1000;
  return whole.toLocaleString("en-US") + (rest ? "." + String(rest).padStart(3, "0") : "") + " sat";
}

function short(hex) { return hex && hex.length > 20 ? hex.slice(0, 10) + "…" + hex.slice(-8) : (hex || "—"); }

function when(unix) { return unix ? new Date(unix * 1000).toLocaleString() : "—"; }

function token() { return sessionStorage.getItem(TOKEN_KEY); }

class ApiError extends Error {
  constructor(status, reason, field) { super(field ? field + ": " + reason : reason); this.status = status; }
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method, headers: {"Authorization": "Bearer " + token(), ...(body ? {"Content-Type": "application/json"} : {})},
    body: body ? JSON.stringify(body) : undefined,
  });
  let data = null;
  try { data = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) {
    const error = (data && data.error) || {};
    if (response.status === 401) logout(error.reason || "the token was refused");
    throw new ApiError(response.status, error.reason || response.statusText, error.field);
  }
  return data;
}

function notice(text, bad) {
  const box = $("notice");
  box.textContent = text;
  box.classList.toggle("bad", !!bad);
  box.hidden = !text;
}

function dl(pairs) {
  const list = el("dl");
  for (const [key, value] of pairs) list.append(el("dt", {}, key), el("dd", {}, value));
  return list;
}

function state(text) { return el("span", {"class": "state " + text}, text.replace(/_/g, " ")); }

// -- pages ---------------------------------------------------------------------------------------

async function showOverview() {
  const [info, balance] = await Promise.all([api("GET", "/v1/getinfo"), api("GET", "/v1/balance")]);
  $("node-info").replaceChildren(
    el("div", {"class": "label"}, info.alias || "node"),
    dl([["Node id", el("span", {"class": "mono wrap"}, info.node_id)], ["Network", info.network],
        ["Block height", info.block_height], ["Peers", info.num_peers],
        ["Channels", `${info.num_active_channels} active, ${info.num_pending_channels} pending`]]));
  const figure = (label, value) => el("div", {"class": "card"}, el("div", {"class": "label"}, label),
                                        el("div", {"class": "figure"}, value));
  $("balances").replaceChildren(
    figure("On chain", sat(balance.onchain_sat * 1000)),
    figure("In channels (ours)", sat(balance.channels_local_msat)),
    figure("Receivable", sat(balance.channels_remote_msat)),
    ...(balance.limbo_sat ? [figure("In limbo (force close)", sat(balance.limbo_sat * 1000))] : []));
}

function liquidityBar(channel) {
  const local = channel.local_balance_msat || 0, remote = channel.remote_balance_msat || 0;
  const total = local + remote || 1;
  // Widths through the CSSOM: the page's CSP forbids style attributes.
  const ours = el("span", {"class": "local"}), theirs = el("span", {"class": "remote"});
  ours.style.width = (100 * local / total).toFixed(2) + "%";
  theirs.style.width = (100 * remote / total).toFixed(2) + "%";
  return [
    el("div", {"class": "bar", "role": "img", "aria-label": `ours ${sat(local)}, theirs ${sat(remote)}`}, ours, theirs),
    el("div", {"class": "bar-legend"}, el("span", {}, "ours " + sat(local)), el("span", {}, "theirs " + sat(remote))),
  ];
}

async function showChannels() {
  const {channels} = await api("GET", "/v1/channels");
  const list = $("channel-list");
  if (!channels.length) { list.replaceChildren(el("p", {"class": "empty"}, "No channels yet.")); return; }
  list.replaceChildren(...channels.map((c) => {
    const card = el("div", {"class": "card channel", "data-channel-id": c.channel_id},
      el("div", {}, state(c.state), " ", el("span", {"class": "mono"}, c.short_channel_id || short(c.channel_id))),
      ...liquidityBar(c),
      dl([["Peer", el("span", {"class": "mono wrap"}, short(c.peer_id))], ["Capacity", sat((c.capacity_sat || 0) * 1000)],
          ["Can send", sat(c.spendable_msat)], ["Can receive", sat(c.receivable_msat)]]));
    if (c.state === "normal") {
      // Two clicks close: the first arms the button (kept across the page's refreshes).
      const button = el("button", {"class": "danger close", "type": "button"},
                        armedClose === c.channel_id ? "Confirm close" : "Close");
      button.addEventListener("click", async () => {
        if (armedClose !== c.channel_id) { armedClose = c.channel_id; button.textContent = "Confirm close"; return; }
        armedClose = null;
        button.disabled = true;
        try {
          const closed = await api("POST", `/v1/channels/${c.channel_id}/close`, {});
          notice("Channel closed: closing transaction " + closed.closing_txid);
        } catch (error) { notice("Close failed: " + error.message, true); }
        refresh();
      });
      card.append(button);
    }
    return card;
  }));
}

async function showPeers() {
  const {peers} = await api("GET", "/v1/peers");
  const list = $("peer-list");
  if (!peers.length) { list.replaceChildren(el("p", {"class": "empty"}, "No peers connected.")); return; }
  list.replaceChildren(...peers.map((p) => el("div", {"class": "card peer"},
    el("div", {"class": "mono wrap"}, p.node_id),
    dl([["Address", p.address || "—"], ["Channels", p.channels.length]]))));
}

async function showPayments() {
  const [{payments}, {invoices}] = await Promise.all([api("GET", "/v1/payments"), api("GET", "/v1/invoices")]);
  $("payment-list").replaceChildren(...(payments.length ? payments.slice().reverse().map((p) => el("div", {"class": "card payment"},
    el("div", {}, state(p.status), " ", p.direction === "sent" ? "Sent " : "Received ", el("strong", {}, sat(p.amount_msat))),
    dl([["Hash", el("span", {"class": "mono"}, short(p.payment_hash))], ["When", when(p.settled_at || p.created_at)],
        ...(p.fee_msat ? [["Fee", sat(p.fee_msat)]] : []),
        ...(p.failure_reason ? [["Why", p.failure_reason]] : [])]))) : [el("p", {"class": "empty"}, "No payments yet.")]));
  $("invoice-list").replaceChildren(...(invoices.length ? invoices.slice().reverse().map((i) => el("div", {"class": "card invoice"},
    el("div", {}, state(i.status), " ", el("strong", {}, i.amount_msat === null ? "any amount" : sat(i.amount_msat))),
    dl([["For", i.description || "—"], ["Hash", el("span", {"class": "mono"}, short(i.payment_hash))],
        ["Expires", when(i.expires_at)]]))) : [el("p", {"class": "empty"}, "No invoices yet.")]));
}

async function showReceive() {
  if (!lastInvoiceHash) return;
  const invoice = await api("GET", `/v1/invoices/${lastInvoiceHash}`);
  $("invoice-status").textContent = invoice.status;
}

async function showSend() {}

const SHOW = {overview: showOverview, channels: showChannels, peers: showPeers, payments: showPayments,
              receive: showReceive, send: showSend};

function currentPage() {
  const page = location.hash.slice(1);
  return PAGES.includes(page) ? page : "overview";
}

async function refresh() {
  const page = currentPage();
  for (const name of PAGES) $("page-" + name).hidden = name !== page;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.page === page);
  try { await SHOW[page](); } catch (error) { if (error.status !== 401) notice(error.message, true); }
}

// -- forms ---------------------------------------------------------------------------------------

function onSubmit(id, action) {
  $(id).addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = $(id).querySelector("button[type=submit]");
    button.disabled = true;
    try { await action(); } catch (error) { notice(error.message, true); }
    button.disabled = false;
    refresh();
  });
}

function wireForms() {
  onSubmit("invoice-form", async () => {
    const amount = $("invoice-amount").value, body = {description: $("invoice-description").value};
    if (amount) body.amount_msat = Number(amount) * 1000;
    const invoice = await api("POST", "/v1/invoices", body);
    const qr = await api("GET", `/v1/invoices/${invoice.payment_hash}/qr`);
    lastInvoiceHash = invoice.payment_hash;
    $("invoice-qr").src = qr.svg_data_uri;
    $("invoice-text").textContent = invoice.invoice;
    $("invoice-status").textContent = invoice.status;
    $("invoice-made").hidden = false;
    notice("Invoice created.");
  });
  onSubmit("pay-form", async () => {
    const body = {invoice: $("pay-invoice").value.trim()}, amount = $("pay-amount").value;
    if (amount) body.amount_msat = Number(amount) * 1000;
    notice("Paying…");
    const paid = await api("POST", "/v1/payments", body);
    $("pay-result").replaceChildren(el("div", {}, state(paid.status), " ", el("strong", {}, sat(paid.amount_msat))),
      dl([["Fee", sat(paid.fee_msat)], ["Preimage", el("span", {"class": "mono wrap"}, paid.preimage || "—")]]));
    $("pay-result").hidden = false;
    notice("Payment " + paid.status + ".");
  });
  onSubmit("open-form", async () => {
    const body = {node_id: $("open-node").value.trim(), amount_sat: Number($("open-amount").value)};
    if ($("open-push").value) body.push_msat = Number($("open-push").value);
    const opened = await api("POST", "/v1/channels", body);
    notice("Channel opening: funding transaction " + opened.funding_txid + " (3 confirmations to go).");
  });
  onSubmit("connect-form", async () => {
    const match = /^(0[23][0-9a-fA-F]{64})@(.+):([0-9]{1,5})$/.exec($("connect-uri").value.trim());
    if (!match) throw new Error("give node_id@host:port");
    await api("POST", "/v1/peers", {node_id: match[1], host: match[2].replace(/^\[|\]$/g, ""), port: Number(match[3])});
    notice("Connected.");
  });
}

// -- live updates: the event stream, read with fetch (EventSource cannot send the token) ---------

async function follow() {
  if (liveAbort) liveAbort.abort();
  liveAbort = new AbortController();
  const signal = liveAbort.signal;
  while (!signal.aborted && token()) {
    try {
      const response = await fetch("/v1/events", {headers: {"Authorization": "Bearer " + token()}, signal});
      if (!response.ok) throw new Error("events: " + response.status);
      $("live").textContent = "live";
      $("live").classList.add("on");
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
          if (data) onEvent(JSON.parse(data));
        }
      }
    } catch (error) {
      if (signal.aborted) return;
    }
    $("live").textContent = "offline";
    $("live").classList.remove("on");
    await new Promise((resolve) => setTimeout(resolve, 3000));
  }
}

function onEvent(event) {
  const words = {payment_received: "Payment received", payment_sent: "Payment sent", payment_failed: "Payment failed",
                 forward_settled: "Forwarded a payment", htlc_held: "A hold invoice's payment arrived",
                 broadcast_rejected: "A transaction was refused"};
  notice((words[event.type] || event.type) + (event.amount_msat ? ": " + sat(event.amount_msat) : "") + ".",
         event.type === "payment_failed" || event.type === "broadcast_rejected");
  refresh();
}

// -- login ---------------------------------------------------------------------------------------

function logout(reason) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (liveAbort) liveAbort.abort();
  clearInterval(poller);
  $("app").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = reason || "";
}

async function login(candidate) {
  sessionStorage.setItem(TOKEN_KEY, candidate);
  try {
    await api("GET", "/v1/getinfo");
  } catch (error) {
    if (error.status !== 401) logout(error.message);
    return;
  }
  $("login").hidden = true;
  $("app").hidden = false;
  follow();
  refresh();
  clearInterval(poller);
  poller = setInterval(refresh, POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  wireForms();
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    $("token").value = "";
    login(value);
  });
  $("logout").addEventListener("click", () => logout(""));
  window.addEventListener("hashchange", () => { notice(""); refresh(); });
  for (const link of document.querySelectorAll("nav a")) {  // the page shown already: look again
    link.addEventListener("click", () => { if (link.dataset.page === currentPage()) refresh(); });
  }
  if (token()) login(token()); else logout("");
});
