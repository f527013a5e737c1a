// The RLM trajectory viewer: a tree of runs, turns, code cells, sub-calls and child runs.
// Data comes from an embedded <script id="rlm-data"> (rlm view FILE) or from the service
// (/v1/jobs/<id>/trajectory, job id and API key from the URL fragment or the form).
"use strict";
(function () {
  const treeEl = document.getElementById("tree");
  const summaryEl = document.getElementById("summary");

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function tokens(usage) {
    return usage && usage.total_tokens ? usage.total_tokens : 0;
  }
  function cost(usage) {
    return usage && usage.cost_usd ? usage.cost_usd : 0;
  }
  function fmtTokens(n) {
    return n ? n.toLocaleString("en-US") + " tok" : "";
  }
  function fmtCost(c) {
    return c ? "$" + c.toFixed(c < 0.01 ? 4 : 3) : "";
  }
  function fmtTime(s) {
    if (s === undefined || s === null) return "";
    return s < 60 ? s.toFixed(s < 10 ? 2 : 1) + " s" : Math.floor(s / 60) + "m" + Math.round(s % 60) + "s";
  }
  function firstLine(text, max) {
    const line = String(text || "").split("\n").find((l) => l.trim()) || "";
    return line.length > max ? line.slice(0, max) + "…" : line;
  }

  // Index events by id and attach each to its parent; run_end/sandbox_ready decorate runs.
  function buildTree(events) {
    const nodes = new Map();
    for (const ev of events) nodes.set(ev.id, { ev: ev, children: [], end: null, ready: null });
    const roots = [];
    for (const node of nodes.values()) {
      const ev = node.ev;
      const parent = ev.parent_id !== null && ev.parent_id !== undefined ? nodes.get(ev.parent_id) : null;
      if (ev.type === "run_end" && parent) { parent.end = ev; continue; }
      if (ev.type === "sandbox_ready" && parent) { parent.ready = ev; continue; }
      if (parent) parent.children.push(node); else roots.push(node);
    }
    for (const node of nodes.values()) node.children.sort((a, b) => a.ev.id - b.ev.id);
    return roots;
  }

  // Tokens and cost of a subtree (turns and sub-calls carry usage; runs report totals).
  function subtreeUsage(node) {
    let t = 0, c = 0;
    if (node.ev.type === "turn" || node.ev.type === "sub_call") {
      t += tokens(node.ev.usage); c += cost(node.ev.usage);
    }
    for (const child of node.children) {
      const u = subtreeUsage(child); t += u.t; c += u.c;
    }
    return { t: t, c: c };
  }

  function countType(node, type) {
    let n = 0;
    for (const child of node.children) n += (child.ev.type === type ? 1 : 0) + countType(child, type);
    return n;
  }

  function row(kind, badgeText, label, text, tok, usd, seconds, open) {
    const details = el("details", "node node-" + kind);
    if (open) details.open = true;
    const summary = el("summary");
    const labelEl = el("span", "label");
    labelEl.appendChild(el("span", "badge badge-" + badgeText[0], badgeText[1]));
    labelEl.appendChild(document.createTextNode(label));
    summary.append(labelEl, el("span", "text", text), el("span", "num", fmtTokens(tok)),
                   el("span", "num", fmtCost(usd)), el("span", "num", fmtTime(seconds)));
    details.appendChild(summary);
    const body = el("div", "body");
    details.appendChild(body);
    return { details: details, body: body };
  }

  function block(body, caption, text, cls) {
    if (text === undefined || text === null || text === "") return;
    body.appendChild(el("div", "caption", caption));
    body.appendChild(el("pre", cls || "", text));
  }

  function renderNode(node, depth) {
    const ev = node.ev;
    const u = subtreeUsage(node);
    if (ev.type === "run_start") {
      const end = node.end || {};
      const r = row("run", ["run", "run"], "depth " + ev.depth + " · " + (ev.model || ""),
                    firstLine(ev.query, 160) + (end.stop_reason ? "  → " + end.stop_reason : ""),
                    tokens(end.usage) || u.t, cost(end.usage) || u.c, end.wall_s, depth <= 1);
      block(r.body, "query", ev.query);
      if (node.ready && node.ready.context && node.ready.context.kind !== "none") {
        const cx = node.ready.context;
        r.body.appendChild(el("div", "caption", "context: " + cx.type_name + ", " +
          (cx.length_chars || 0).toLocaleString("en-US") + " chars · sandbox ready in " +
          fmtTime(node.ready.startup_s)));
      }
      const head = el("div", "head");
      ["node", "detail", "tokens", "cost", "time"].forEach((h) => head.appendChild(el("span", "", h)));
      r.body.appendChild(head);
      for (const child of node.children) r.body.appendChild(renderNode(child, depth + 1));
      if (node.end) {
        block(r.body, "answer (" + end.stop_reason + (end.ready ? ", final" : "") + ")", end.answer);
        if (end.error) block(r.body, "error", end.error, "error");
      }
      return r.details;
    }
    if (ev.type === "turn") {
      const cells = node.children.filter((c) => c.ev.type === "cell");
      const failed = cells.filter((c) => c.ev.error || c.ev.timed_out).length;
      const subs = countType(node, "sub_call");
      const text = cells.length ? cells.length + " cell" + (cells.length > 1 ? "s" : "") +
        (failed ? " (" + failed + " failed)" : "") +
        (subs ? " · " + subs + " sub-call" + (subs > 1 ? "s" : "") : "") +
        " · " + firstLine(cells[0].ev.code, 120)
        : "no code · " + firstLine(ev.reply, 140);
      const r = row("turn", ["turn", "turn " + ev.iteration], "", text, u.t, u.c, ev.duration_s, false);
      block(r.body, "model reply", ev.reply);
      for (const child of node.children) r.body.appendChild(renderNode(child, depth + 1));
      return r.details;
    }
    if (ev.type === "cell") {
      const bad = ev.error || ev.timed_out;
      const status = ev.timed_out ? "timed out" : ev.error ? ev.error : ev.answer_ready ? "answer ready" : "ok";
      const r = row("cell", [bad ? "error" : "cell", "cell " + ev.index], "",
                    status + " · " + firstLine(ev.code, 120), u.t, u.c, ev.duration_s, false);
      block(r.body, "code", ev.code);
      block(r.body, "output", ev.output);
      for (const child of node.children) r.body.appendChild(renderNode(child, depth + 1));
      return r.details;
    }
    if (ev.type === "sub_call") {
      const r = row("sub", [ev.status === "ok" ? "sub" : "error", ev.kind === "rlm_query" ? "rlm" : "llm"],
                    "", (ev.model || "") + " · " + ev.status + " · " + firstLine(ev.prompt, 120),
                    u.t, u.c, ev.duration_s, false);
      block(r.body, "prompt (" + (ev.prompt_chars || 0).toLocaleString("en-US") + " chars)", ev.prompt);
      block(r.body, "response", ev.response);
      if (ev.error) block(r.body, "error", ev.error, "error");
      for (const child of node.children) r.body.appendChild(renderNode(child, depth + 1));
      return r.details;
    }
    if (ev.type === "tool_call") {
      const size = ev.result_chars == null ? "" : " · " + ev.result_chars.toLocaleString("en-US") + " chars";
      const r = row("tool", [ev.status === "ok" ? "sub" : "error", "tool"], "",
                    ev.name + " · " + ev.status + size, 0, 0, ev.duration_s, false);
      block(r.body, "arguments", ev.arguments);
      if (ev.error) block(r.body, "error", ev.error, "error");
      return r.details;
    }
    if (ev.type === "nudge") {
      const r = row("nudge", ["nudge", "nudge"], "", ev.reason + " · " + firstLine(ev.message, 120),
                    0, 0, null, false);
      block(r.body, "message", ev.message);
      return r.details;
    }
    const r = row("other", ["nudge", ev.type], "", "", 0, 0, null, false);
    block(r.body, "event", JSON.stringify(ev, null, 2));
    return r.details;
  }

  function renderSummary(events) {
    summaryEl.textContent = "";
    const top = events.find((e) => e.type === "run_end" && e.depth === 1);
    const start = events.find((e) => e.type === "run_start" && e.depth === 1);
    const turns = events.filter((e) => e.type === "turn" && e.depth === 1).length;
    const subs = events.filter((e) => e.type === "sub_call").length;
    const add = (label, value) => {
      const span = el("span");
      span.append(label + " ", el("b", "", value));
      summaryEl.appendChild(span);
    };
    if (start) add("model", start.model);
    add("turns", String(turns));
    add("sub-calls", String(subs));
    if (top) {
      add("stop", top.stop_reason);
      add("tokens", (tokens(top.usage) || 0).toLocaleString("en-US"));
      add("cost", fmtCost(cost(top.usage)) || "$0");
      add("time", fmtTime(top.wall_s));
      summaryEl.appendChild(el("div", "answer", "answer: " + (top.answer || "(none)")));
    } else {
      add("status", "running or interrupted");
    }
  }

  function render(events) {
    treeEl.textContent = "";
    renderSummary(events);
    for (const node of buildTree(events)) treeEl.appendChild(renderNode(node, 1));
    document.body.dataset.rendered = String(events.length);
  }

  function parseLines(text) {
    return text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
  }

  async function loadJob(job, key) {
    const headers = key ? { Authorization: "Bearer " + key } : {};
    const response = await fetch("/v1/jobs/" + encodeURIComponent(job) + "/trajectory", { headers: headers });
    if (!response.ok) {
      let message = "HTTP " + response.status;
      try { message = (await response.json()).error.message; } catch (e) { /* not JSON */ }
      throw new Error(message);
    }
    render(parseLines(await response.text()));
  }

  function showError(message) {
    treeEl.textContent = "";
    treeEl.appendChild(el("p", "error", message));
  }

  const embedded = document.getElementById("rlm-data");
  if (embedded) {
    render(JSON.parse(embedded.textContent));
    return;
  }
  const form = document.getElementById("load");
  const params = new URLSearchParams(location.hash.slice(1));
  const jobInput = document.getElementById("job");
  const keyInput = document.getElementById("key");
  jobInput.value = params.get("job") || "";
  keyInput.value = params.get("key") || sessionStorage.getItem("rlm-key") || "";
  form.hidden = false;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("rlm-key", keyInput.value);
    loadJob(jobInput.value.trim(), keyInput.value).catch((e) => showError(e.message));
  });
  if (jobInput.value && keyInput.value) {
    loadJob(jobInput.value, keyInput.value).catch((e) => showError(e.message));
  }
})();
