// The sandbox's page: renders what the bot posted (its own Block Kit) and sends what a person
// does to the sandbox's server, which turns it into the signed request Slack would send.
"use strict";

const EMOJI = {
  white_check_mark: "✅", x: "❌", warning: "⚠️", hourglass: "⏳", hourglass_flowing_sand: "⏳",
  rotating_light: "🚨", bell: "🔔", eyes: "👀", large_green_circle: "🟢", large_yellow_circle: "🟡",
  large_orange_circle: "🟠", red_circle: "🔴", leftwards_arrow_with_hook: "↩️", arrows_counterclockwise: "🔄",
  no_entry: "⛔", information_source: "ℹ️", tada: "🎉", lock: "🔒", memo: "📝",
};

const state = { user: null, version: -1, data: null, view: "channel", shown: {}, menu: null };
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "html") node.innerHTML = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// ---- names ------------------------------------------------------------------------------

function personName(id) {
  const data = state.data;
  if (!data) return id;
  if (data.bot && id === data.bot.id) return data.bot.name;
  const p = data.people.find((x) => x.id === id);
  return p ? p.name : id;
}

function channelName(id) {
  return state.data && state.data.channel.id === id ? state.data.channel.name : id;
}

// ---- mrkdwn -----------------------------------------------------------------------------

function escapeLoose(text) {
  return text.replace(/&(?!(amp|lt|gt|quot|#\d+);)/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

function special(inner) {
  const [target, label] = inner.split("|", 2);
  if (target.startsWith("@")) return `<span class="mention">@${escapeLoose(personName(target.slice(1)))}</span>`;
  if (target.startsWith("#")) return `<span class="mention">#${escapeLoose(label || channelName(target.slice(1)))}</span>`;
  if (target.startsWith("!subteam^")) return `<span class="mention">@${escapeLoose(label || "group")}</span>`;
  if (target.startsWith("!date^")) return escapeLoose(label || target);
  if (target.startsWith("!")) return `<span class="mention">@${escapeLoose(target.slice(1))}</span>`;
  if (/^(https?:|mailto:)/.test(target)) {
    return `<a href="${escapeLoose(target)}" target="_blank" rel="noopener">${escapeLoose(label || target)}</a>`;
  }
  return escapeLoose(`<${inner}>`);
}

function emojify(html) {
  return html.replace(/:([a-z0-9_+-]+):/g, (m, name) => EMOJI[name] || m);
}

function mrkdwn(text) {
  const tokens = [];
  let s = String(text || "").replace(/<([^<>\n]+)>/g, (_m, inner) => {
    tokens.push(special(inner));
    return `\u0000${tokens.length - 1}\u0000`;
  });
  s = escapeLoose(s);
  const blocks = [];
  s = s.replace(/```([\s\S]*?)```/g, (_m, code) => { blocks.push(`<pre>${code}</pre>`); return `\u0001${blocks.length - 1}\u0001`; });
  s = s.replace(/`([^`\n]+)`/g, (_m, code) => { blocks.push(`<code>${code}</code>`); return `\u0001${blocks.length - 1}\u0001`; });
  s = s.replace(/(^|[^\w*])\*(?!\s)([^*\n]+?)\*(?!\w)/g, "$1<b>$2</b>");
  s = s.replace(/(^|[^\w_])_(?!\s)([^_\n]+?)_(?!\w)/g, "$1<i>$2</i>");
  s = s.replace(/(^|[^\w~])~(?!\s)([^~\n]+?)~(?!\w)/g, "$1<s>$2</s>");
  s = s.split("\n").map((line) => line.startsWith("&gt; ") ? `<blockquote>${line.slice(5)}</blockquote>` : line).join("\n");
  s = emojify(s).replace(/\n/g, "<br>").replace(/<\/blockquote><br>/g, "</blockquote>");
  s = s.replace(/\u0001(\d+)\u0001/g, (_m, i) => blocks[Number(i)]);
  s = s.replace(/\u0000(\d+)\u0000/g, (_m, i) => tokens[Number(i)]);
  return s;
}

function textObject(obj) {
  if (!obj) return el("span");
  if (obj.type === "mrkdwn") return el("span", { class: "mrkdwn", html: mrkdwn(obj.text) });
  return el("span", {}, emojify(obj.text || ""));  // plain_text: shown as written
}

function plain(obj) {
  return obj && typeof obj.text === "string" ? obj.text : "";
}

// ---- Block Kit --------------------------------------------------------------------------

// where: {where: "message"|"ephemeral"|"home"|"modal", channel, ts, ephemeral, view_id}
function renderBlocks(blocks, where) {
  const box = el("div", { class: "blocks" });
  for (const block of blocks || []) box.append(renderBlock(block, where));
  return box;
}

function unsupported(kind, what) {
  return el("div", { class: "bk-unsupported" }, `unsupported ${what || "block"}: ${kind}`);
}

function renderBlock(block, where) {
  switch (block.type) {
    case "header":
      return el("h3", { class: "bk-header" }, textObject(block.text));
    case "section": {
      const body = el("div", { class: "bk-body" });
      if (block.text) body.append(textObject(block.text));
      if (block.fields && block.fields.length) {
        body.append(el("div", { class: "bk-fields" }, block.fields.map((f) => el("div", {}, textObject(f)))));
      }
      const section = el("div", { class: "bk-section" }, body);
      if (block.accessory) section.append(renderElement(block.accessory, block, where));
      return section;
    }
    case "context":
      return el("div", { class: "bk-context" }, (block.elements || []).map((e) =>
        e.type === "image" ? el("img", { src: e.image_url, alt: e.alt_text || "", width: 16, height: 16 }) : textObject(e)));
    case "divider":
      return el("hr", { class: "bk-divider" });
    case "actions":
      return el("div", { class: "bk-actions", role: "group", "aria-label": "Actions" },
        (block.elements || []).map((e) => renderElement(e, block, where)));
    case "rich_text":
      return el("div", { class: "bk-rich" }, (block.elements || []).map(richElement));
    case "image":
      return el("img", { src: block.image_url, alt: block.alt_text || "", style: "max-width: 360px" });
    case "input":
      return renderInput(block, where);
    default:
      return unsupported(block.type);
  }
}

function richText(items) {
  return (items || []).map((item) => {
    let node;
    if (item.type === "text") node = document.createTextNode(item.text || "");
    else if (item.type === "link") node = el("a", { href: item.url, target: "_blank", rel: "noopener" }, item.text || item.url);
    else if (item.type === "user") node = el("span", { class: "mention" }, `@${personName(item.user_id)}`);
    else if (item.type === "channel") node = el("span", { class: "mention" }, `#${item.channel_id}`);
    else if (item.type === "emoji") node = document.createTextNode(item.unicode ? String.fromCodePoint(...item.unicode.split("-").map((h) => parseInt(h, 16))) : (EMOJI[item.name] || `:${item.name}:`));
    else if (item.type === "usergroup") node = el("span", { class: "mention" }, "@group");
    else if (item.type === "broadcast") node = el("span", { class: "mention" }, `@${item.range}`);
    else if (item.type === "date") node = document.createTextNode(item.fallback || "");
    else return unsupported(item.type, "element");
    const style = item.style || {};
    if (style.code) node = el("code", {}, node);
    if (style.bold) node = el("b", {}, node);
    if (style.italic) node = el("i", {}, node);
    if (style.strike) node = el("s", {}, node);
    return node;
  });
}

function richElement(part) {
  switch (part.type) {
    case "rich_text_section":
      return el("div", {}, richText(part.elements));
    case "rich_text_list":
      return el(part.style === "ordered" ? "ol" : "ul", {}, (part.elements || []).map((s) => el("li", {}, richText(s.elements))));
    case "rich_text_quote":
      return el("blockquote", {}, richText(part.elements));
    case "rich_text_preformatted":
      return el("pre", {}, richText(part.elements));
    default:
      return unsupported(part.type, "element");
  }
}

function renderElement(element, block, where) {
  if (element.type === "button") {
    const label = plain(element.text);
    return el("button", {
      type: "button", class: `bk-button ${element.style || ""}`,
      onclick: () => withConfirm(element.confirm, () => {
        if (element.url && /^https?:\/\//.test(element.url)) window.open(element.url, "_blank", "noopener");
        return click(where, block, element);
      }),
    }, label);
  }
  if (element.type === "overflow") {
    const wrap = el("span", { class: "bk-overflow" });
    const toggle = el("button", {
      type: "button", class: "bk-button", "aria-label": "More actions", "aria-haspopup": "menu", "aria-expanded": "false",
      onclick: () => {
        const open = wrap.querySelector(".bk-menu");
        if (open) { open.remove(); toggle.setAttribute("aria-expanded", "false"); return; }
        toggle.setAttribute("aria-expanded", "true");
        wrap.append(el("div", { class: "bk-menu", role: "menu" }, (element.options || []).map((option) =>
          el("button", {
            type: "button", role: "menuitem",
            onclick: () => {
              wrap.querySelector(".bk-menu")?.remove();
              toggle.setAttribute("aria-expanded", "false");
              withConfirm(element.confirm, () => click(where, block, element, option));
            },
          }, plain(option.text)))));
      },
    }, "⋯");
    wrap.append(toggle);
    return wrap;
  }
  if (element.type === "image") return el("img", { src: element.image_url, alt: element.alt_text || "", width: 48, height: 48 });
  return unsupported(element.type, "element");
}

function renderInput(block, where) {
  const element = block.element || {};
  const id = `in-${block.block_id}-${element.action_id}`;
  const errors = (where && where.errors) || {};
  const error = errors[block.block_id];
  const wrap = el("div", { class: `bk-input${error ? " invalid" : ""}` });
  const label = plain(block.label);
  const saysOptional = /optional/i.test(label);
  wrap.append(el("label", { for: id }, label, block.optional && !saysOptional ? el("span", { class: "muted" }, " (optional)") : null));
  const common = {
    id, "data-block": block.block_id, "data-action": element.action_id, "aria-invalid": error ? "true" : null,
    "aria-describedby": error ? `${id}-error` : null,
  };
  let control;
  if (element.type === "plain_text_input") {
    const attrs = { ...common, placeholder: plain(element.placeholder) || null, maxlength: element.max_length || null };
    control = element.multiline ? el("textarea", { ...attrs, rows: 3 }) : el("input", { ...attrs, type: "text" });
    if (element.initial_value) control.value = element.initial_value;
  } else if (element.type === "static_select" || element.type === "radio_buttons") {
    control = el("select", common, el("option", { value: "" }, plain(element.placeholder) || "Choose…"),
      (element.options || []).map((o) => el("option", { value: o.value }, plain(o.text))));
  } else {
    control = unsupported(element.type, "element");
  }
  wrap.append(control);
  if (block.hint) wrap.append(el("span", { class: "hint" }, plain(block.hint)));
  if (error) wrap.append(el("span", { class: "field-error", id: `${id}-error`, role: "alert" }, error));
  return wrap;
}

// ---- confirm dialogs --------------------------------------------------------------------

function withConfirm(confirm, go) {
  if (!confirm) { go(); return; }
  const layer = $("confirm-layer");
  const close = () => { layer.hidden = true; layer.replaceChildren(); };
  const dialog = el("div", { class: "dialog", role: "alertdialog", "aria-modal": "true", "aria-labelledby": "confirm-title" },
    el("h2", { class: "dialog-title", id: "confirm-title" }, plain(confirm.title) || "Are you sure?"),
    el("div", { class: "dialog-body" }, textObject(confirm.text)),
    el("div", { class: "dialog-footer" },
      el("button", { type: "button", class: "secondary", onclick: close }, plain(confirm.deny) || "Cancel"),
      el("button", { type: "button", onclick: () => { close(); go(); } }, plain(confirm.confirm) || "Yes")));
  layer.replaceChildren(dialog);
  layer.hidden = false;
  dialog.querySelector(".dialog-footer button:last-child").focus();
}

// ---- talking to the sandbox ---------------------------------------------------------------

async function post(path, body) {
  const r = await fetch(`/sandbox/${path}`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ user: state.user, ...body }),
  });
  const answer = await r.json().catch(() => ({ ok: false, error: `HTTP ${r.status}` }));
  refresh();
  return answer;
}

function click(where, block, element, option) {
  const body = { ...where, block_id: block.block_id || "", element };
  delete body.errors;
  if (option) body.selected_option = option;
  if (where.where === "modal") body.values = modalValues();
  return post("click", body);
}

function modalValues() {
  const values = {};
  for (const input of $("modal-layer").querySelectorAll("[data-block]")) {
    const block = input.getAttribute("data-block");
    values[block] = values[block] || {};
    values[block][input.getAttribute("data-action")] = input.value;
  }
  return values;
}

// ---- rendering the page -----------------------------------------------------------------

function messageItem(m, where, extra) {
  const name = m.bot ? "Signoff" : personName(m.user);
  const item = el("li", { class: `message${extra ? " " + extra : ""}`, "data-ts": m.ts || m.id, "aria-label": `Message from ${name}` },
    el("div", { class: `avatar${m.bot ? "" : " person"}`, "aria-hidden": "true" }, name.slice(0, 1)),
    el("div", { class: "content" },
      el("div", {}, el("span", { class: "who" }, name), m.bot ? el("span", { class: "app-tag" }, "APP") : null,
        m.edited ? el("span", { class: "edited" }, " (edited)") : null),
      m.blocks && m.blocks.length ? renderBlocks(m.blocks, where) : el("div", { class: "mrkdwn", html: mrkdwn(m.text) })));
  return item;
}

function renderChannel(data) {
  const list = $("messages");
  const items = [];
  for (const m of data.messages) {
    const item = messageItem(m, { where: "message", channel: data.channel.id, ts: m.ts });
    if (m.replies.length) {
      const content = item.querySelector(".content");
      content.append(el("div", { class: "thread-label" }, `${m.replies.length} ${m.replies.length === 1 ? "reply" : "replies"}`));
      content.append(el("ol", { class: "thread", "aria-label": "Thread" },
        m.replies.map((r) => messageItem(r, { where: "message", channel: data.channel.id, ts: r.ts }))));
    }
    items.push(item);
  }
  for (const e of data.ephemerals) {
    const item = messageItem({ ...e, bot: true }, { where: "ephemeral", channel: data.channel.id, ephemeral: e.id }, "ephemeral");
    item.querySelector(".content").prepend(el("div", { class: "ephemeral-note" }, "Only visible to you"));
    items.push(item);
  }
  list.replaceChildren(...items);
  const direct = data.direct.map((m) => messageItem(m, { where: "message", channel: `D${data.user.slice(1)}`, ts: m.ts }));
  $("direct").replaceChildren(...direct);
  $("direct-wrap").hidden = direct.length === 0;
}

function renderHome(data) {
  const box = $("home-view");
  if (!data.home) { box.replaceChildren(el("p", { class: "muted" }, "Opening the App Home…")); return; }
  box.replaceChildren(renderBlocks(data.home.blocks, { where: "home", view_id: data.home.id }));
}

function renderModal(data) {
  const layer = $("modal-layer");
  const modal = data.modal;
  if (!modal) { layer.hidden = true; layer.replaceChildren(); return; }
  const typed = layer.querySelector("[data-block]") ? modalValues() : {};
  const view = modal.view;
  const where = { where: "modal", view_id: modal.view_id, errors: modal.errors };
  const general = modal.errors[""];
  const dialog = el("form", { class: "dialog", role: "dialog", "aria-modal": "true", "aria-labelledby": "modal-title", "data-view": modal.view_id,
    onsubmit: async (ev) => {
      ev.preventDefault();
      const submit = dialog.querySelector("button[type=submit]");
      if (submit) submit.disabled = true;
      await post("submit", { view_id: modal.view_id, values: modalValues() });
      if (submit) submit.disabled = false;
    } },
  el("h2", { class: "dialog-title", id: "modal-title" }, plain(view.title)),
  el("div", { class: "dialog-body" }, renderBlocks(view.blocks, where),
    general ? el("p", { class: "field-error", role: "alert" }, general) : null),
  el("div", { class: "dialog-footer" },
    el("button", { type: "button", class: "secondary", onclick: () => post("close", { view_id: modal.view_id }) }, plain(view.close) || "Cancel"),
    view.submit ? el("button", { type: "submit" }, plain(view.submit)) : null));
  layer.replaceChildren(dialog);
  layer.hidden = false;
  for (const input of dialog.querySelectorAll("[data-block]")) {
    const v = (typed[input.getAttribute("data-block")] || {})[input.getAttribute("data-action")];
    if (v !== undefined) input.value = v;
  }
  const first = dialog.querySelector("[aria-invalid=true]") || dialog.querySelector("input, textarea, select");
  if (first) first.focus();
}

function renderPanel(data) {
  const types = $("p-type");
  if (types.options.length !== data.types.length) {
    types.replaceChildren(...data.types.map((t) => el("option", { value: t.action_type }, `${t.action_type} — ${t.summary}`)));
    const refund = data.types.find((t) => t.action_type === "refund_order");
    if (refund) types.value = "refund_order";
    fillPayload();
  }
  $("metric-list").replaceChildren(...data.metrics.map((m) => el("div", { class: "metric-row" }, el("span", {}, m.metric), el("span", {}, String(m.value)))));
}

function fillPayload() {
  const t = (state.data ? state.data.types : []).find((x) => x.action_type === $("p-type").value);
  if (t) $("p-payload").value = JSON.stringify(t.example_payload || {}, null, 1);
}

function renderPeople(data) {
  const select = $("person");
  if (select.options.length) return;
  select.replaceChildren(...data.people.map((p) => el("option", { value: p.id }, `${p.name} — ${p.part}`)));
  select.value = state.user || data.user;
}

function render(data) {
  state.data = data;
  renderPeople(data);
  const parts = {
    channel: JSON.stringify([data.messages, data.ephemerals, data.direct, data.people]),
    home: JSON.stringify(data.home), modal: JSON.stringify(data.modal), panel: JSON.stringify([data.types, data.metrics]),
  };
  if (parts.channel !== state.shown.channel) renderChannel(data);
  if (parts.home !== state.shown.home) renderHome(data);
  if (parts.modal !== state.shown.modal) renderModal(data);
  if (parts.panel !== state.shown.panel) renderPanel(data);
  state.shown = parts;
}

// ---- updates ----------------------------------------------------------------------------

let polling = 0;

async function fetchState(since) {
  const user = state.user;
  const r = await fetch(`/sandbox/state?user=${encodeURIComponent(user)}&since=${since}`);
  const data = await r.json();
  if (user !== state.user) return;
  if (!state.user) state.user = data.user;
  if (data.version >= state.version || since < 0) {
    state.version = data.version;
    render(data);
  }
}

async function poll() {
  const mine = ++polling;
  while (mine === polling) {
    try {
      await fetchState(state.version);
    } catch (e) {
      await new Promise((done) => setTimeout(done, 1000));
    }
  }
}

function refresh() {
  fetchState(-1).catch(() => {});
}

function show(view) {
  state.view = view;
  $("channel").hidden = view !== "channel";
  $("home").hidden = view !== "home";
  $("to-channel").classList.toggle("current", view === "channel");
  $("to-home").classList.toggle("current", view === "home");
  $("to-channel").setAttribute("aria-pressed", String(view === "channel"));
  $("to-home").setAttribute("aria-pressed", String(view === "home"));
  if (view === "home") post("home", {});
}

function start() {
  const params = new URLSearchParams(location.search);
  // Unset: the sandbox's answer names its approver, whom the page then acts as.
  state.user = params.get("as") || localStorage.getItem("signoff-sandbox-user") || "";
  $("person").addEventListener("change", (ev) => {
    state.user = ev.target.value;
    localStorage.setItem("signoff-sandbox-user", state.user);
    state.version = -1;
    state.shown = {};
    $("modal-layer").hidden = true;
    if (state.view === "home") post("home", {}); else refresh();
    poll();
  });
  $("to-channel").addEventListener("click", () => show("channel"));
  $("to-home").addEventListener("click", () => show("home"));
  $("composer").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = $("composer-text").value.trim();
    if (!text) return;
    $("composer-text").value = "";
    await post("command", { text });
  });
  $("p-type").addEventListener("change", fillPayload);
  $("propose").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = new FormData(ev.target);
    const answer = await post("propose", Object.fromEntries(form.entries()));
    $("propose-result").textContent = answer.created
      ? `Proposed: ${answer.action.action_id} (${answer.action.status})`
      : `Refused: ${answer.message || answer.error}`;
  });
  $("metrics").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = new FormData(ev.target);
    const answer = await post("metrics", { metric: form.get("metric"), value: form.get("value") });
    if (!answer.ok) alert(answer.error);
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.key !== "Escape") return;
    if (!$("confirm-layer").hidden) { $("confirm-layer").hidden = true; return; }
    const modal = state.data && state.data.modal;
    if (modal) post("close", { view_id: modal.view_id });
  });
  refresh();
  poll();
}

start();
