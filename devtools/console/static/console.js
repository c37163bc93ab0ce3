// The console page: renders each snapshot the server sends over Server-Sent Events (/events).
// Plain DOM, no build step. Values from documents and pushes (caller names...) are untrusted:
// they only ever go into textContent, never into HTML.
"use strict";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === "") continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function time(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleTimeString("en-GB", { hour12: false });
}

function renderRelays(relays) {
  const body = document.querySelector("#relays tbody");
  body.replaceChildren(...(relays.length ? relays.map((r) => {
    const c = r.counters || {};
    return el("tr", { "data-relay": r.relay },
      el("td", {}, el("code", {}, r.relay)),
      el("td", { class: `state ${r.state}` }, r.state, r.refusedReason ? ` (${r.refusedReason})` : ""),
      el("td", {}, r.pbxLink || "–"),
      el("td", {}, time(r.since)),
      el("td", {}, time(r.lastEventAt)),
      el("td", {}, `${c.frames ?? 0} / ${c.events ?? 0} / ${c.badFrames ?? 0}`),
      el("td", {}, r.activeCalls ?? 0),
      el("td", { class: "muted" }, r.lastError || ""));
  }) : [el("tr", {}, el("td", { colspan: 8, class: "muted" }, "no relay_status documents yet"))]));
}

function lifecycle(call) {
  const steps = [el("span", { class: "step ringing" }, "ringing")];
  if (call.answeredBy || call.answeredAt) {
    steps.push(el("span", { class: "step answered" }, `answered by ${call.answeredBy || "?"}`));
  }
  if (call.state === "ended") {
    steps.push(el("span", { class: "step ended" }, `ended: ${call.outcome || "?"}`));
  }
  if (call.cancelledBy) steps.push(el("span", { class: "muted" }, `cancel: ${call.cancelledBy}`));
  if (call.duration !== null && call.duration !== undefined) {
    steps.push(el("span", { class: "muted" }, `${call.duration} s`));
  }
  return el("div", { class: `life ${call.state}` }, steps);
}

function renderCalls(calls) {
  const body = document.querySelector("#calls tbody");
  body.replaceChildren(...(calls.length ? calls.map((c) => el("tr",
    { "data-linkedid": c.linkedid, "data-state": c.state, class: "call" },
    el("td", {}, time(c.pbxTime)),
    el("td", {}, el("div", {}, c.callerName), el("div", { class: "muted" }, c.callerNumber)),
    el("td", {}, c.receiverNumber),
    el("td", { class: "lifecycle" }, lifecycle(c)),
    el("td", {}, `${c.devicesRung} device(s)`,
      el("div", { class: "muted" }, c.recipients.join(", ")),
      c.cancelsSent ? el("div", { class: "muted" }, `${c.cancelsSent} cancel(s)`) : "",
      c.missedSent ? el("div", { class: "muted" }, `${c.missedSent} missed notice(s)`) : ""),
    el("td", { class: "latency" }, c.latencyMs === null ? "–" : `${c.latencyMs} ms`),
    el("td", {}, el("code", {}, c.linkedid))))
    : [el("tr", {}, el("td", { colspan: 7, class: "muted" }, "no calls yet: run `make call`"))]));
}

const ACTIONS = {
  answered_elsewhere: "다른 곳에서 받음", caller_hung_up: "발신자가 끊음",
  no_answer: "응답 없음", rejected: "거절됨", call_ended: "통화 종료",
};

function card(p) {
  const common = { "data-linkedid": p.linkedid, "data-kind": p.kind };
  const device = el("span", { class: "device" }, p.device, p.userId ? ` · ${p.userId}` : "");
  if (!p.delivered) {
    return el("div", { ...common, class: "card failed" }, device,
      el("div", { class: "title" }, `FCM answered ${p.status} ${p.error || ""}`),
      el("div", {}, p.title || p.kind), el("div", { class: "muted" }, p.linkedid));
  }
  if (p.kind === "incoming") {
    return el("div", { ...common, class: "card incoming" }, device,
      el("div", { class: "title" }, p.title),
      el("div", { class: "name" }, p.callerName),
      el("div", { class: "number" }, p.callerNumber),
      el("div", { class: "company" }, p.company,
        p.companyLine ? ` · ${p.companyLine}` : "",
        p.companyNumber ? ` ${p.companyNumber}` : "",
        p.extension ? ` · 내선 ${p.extension}` : ""),
      el("div", { class: "buttons" }, el("span", { class: "accept" }), el("span", { class: "decline" })));
  }
  if (p.kind === "cancel") {
    return el("div", { ...common, class: "card cancel" }, device,
      el("div", { class: "title" }, "수신 화면 닫힘 (cancel)"),
      el("div", {}, `${ACTIONS[p.action] || p.action} · ${p.action}`),
      el("div", { class: "muted" }, p.linkedid));
  }
  if (p.kind === "missed") {
    return el("div", { ...common, class: "card missed" }, device,
      el("div", { class: "title" }, p.title),
      el("div", { class: "name" }, p.body || p.callerName),
      el("div", { class: "number" }, p.callerNumber),
      el("div", { class: "muted" }, `→ ${p.receiverNumber}`));
  }
  return el("div", { ...common, class: "card other" }, device, el("div", {}, p.title || "push"));
}

function renderPushes(pushes) {
  const box = document.getElementById("pushes");
  box.replaceChildren(...(pushes.length ? pushes.map(card)
    : [el("div", { class: "muted" }, "no pushes yet")]));
}

function renderDoctor(doctor) {
  const box = document.getElementById("doctor");
  if (!doctor || doctor.available === false) {
    box.replaceChildren(el("div", { class: "muted", id: "doctor-status" },
      "doctor unavailable", doctor && doctor.error ? ` — ${doctor.error}` : ""));
    return;
  }
  const problems = doctor.problems || [];
  const errors = problems.filter((p) => p.severity === "error").length;
  const head = el("div", { id: "doctor-status" },
    doctor.error ? doctor.error
      : `${problems.length} finding(s), ${errors} error(s)` + (errors ? ": some phone will not ring" : ""),
    el("span", { class: "muted" }, ` · checked ${time(doctor.checkedAt)}`));
  box.replaceChildren(head, ...problems.map((p) => el("div", { class: "problem" },
    el("span", { class: `sev ${p.severity}` }, p.severity), " ",
    el("code", {}, p.path), " ", el("b", {}, p.code), " ", p.message)));
}

function renderErrors(errors) {
  const entries = Object.entries(errors || {});
  document.getElementById("errors-section").hidden = entries.length === 0;
  document.getElementById("errors").replaceChildren(
    ...entries.map(([name, text]) => el("li", {}, el("b", {}, name), `: ${text}`)));
}

function render(state) {
  renderRelays(state.relays || []);
  renderCalls(state.calls || []);
  renderPushes(state.pushes || []);
  renderDoctor(state.doctor);
  renderErrors(state.errors);
  window.consoleUpdates = (window.consoleUpdates || 0) + 1;
  document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString("en-GB")}`;
}

function connect() {
  const live = document.getElementById("live");
  const source = new EventSource("/events");
  source.addEventListener("state", (event) => render(JSON.parse(event.data)));
  source.onopen = () => { live.textContent = "live"; live.className = "badge on"; };
  // EventSource reconnects by itself; only say so meanwhile.
  source.onerror = () => { live.textContent = "reconnecting…"; live.className = "badge off"; };
}

connect();
