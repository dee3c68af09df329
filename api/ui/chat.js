// Chat: streamed answers over several turns. The finished answer's citation markers are buttons that open the cited
// chunk with its evidence span marked and, for a PDF or image, the rendered page with the chunk's box; the answer's
// mode, its unsupported claims and its removed citations are shown with it.

import { api, askStream } from "./api.js";
import { showError } from "./common.js";
import { append, clear, field, h } from "./dom.js";
import { t } from "./i18n.js";

const MARKER = /\[(\d+(?:\s*[,，]\s*\d+)*)\]/g;
const PAGE_WIDTH = 900;
const MAX_HISTORY = 50;

export async function chatView(root, kb) {
  const state = { kb, history: [], controller: null };
  const log = h("ol", { class: "messages", role: "log", "aria-live": "polite", "aria-label": t("nav.chat") });
  const input = h("textarea", {
    id: "chat-input",
    rows: "3",
    required: true,
    maxlength: "4000",
    placeholder: t("chat.placeholder"),
    "aria-describedby": "chat-hint",
  });
  const mode = h(
    "select",
    { id: "chat-mode" },
    h("option", { value: "" }, t("common.default")),
    ["auto", "generated", "extractive"].map((m) => h("option", { value: m }, t(`chat.mode.${m}`))),
  );
  const send = h("button", { type: "submit", class: "primary", id: "chat-send" }, t("chat.send"));
  const stop = h(
    "button",
    { type: "button", class: "ghost", hidden: true, onclick: () => state.controller?.abort() },
    t("chat.stop"),
  );
  const reset = h(
    "button",
    {
      type: "button",
      class: "ghost",
      onclick: () => {
        state.controller?.abort();
        state.history = [];
        log.replaceChildren();
        input.focus();
      },
    },
    t("chat.new"),
  );
  const form = h(
    "form",
    { class: "card ask" },
    h("label", { for: "chat-input", class: "visually-hidden" }, t("chat.placeholder")),
    input,
    h("small", { id: "chat-hint", class: "muted" }, t("chat.hint")),
    h(
      "div",
      { class: "row" },
      field("chat-mode", t("chat.answerMode"), mode),
      h("span", { class: "spacer" }),
      reset,
      stop,
      send,
    ),
  );
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const question = input.value.trim();
    if (!question || state.controller) return;
    input.value = "";
    append(log, h("li", { class: "message user" }, h("span", { class: "who" }, t("chat.you")), h("p", {}, question)));
    const text = h("p", { class: "answer streaming" });
    const reply = h(
      "li",
      { class: "message assistant", "aria-busy": "true" },
      h("span", { class: "who" }, t("chat.assistant")),
      text,
    );
    append(log, reply);
    reply.scrollIntoView({ block: "end" });
    state.controller = new AbortController();
    send.disabled = true;
    stop.hidden = false;
    let streamed = "";
    const body = { question, history: state.history.slice(-MAX_HISTORY) };
    if (mode.value) body.answer_mode = mode.value;
    try {
      await askStream(
        kb,
        body,
        (name, data) => {
          if (name === "delta") {
            streamed += data.content || "";
            text.textContent = streamed;
            reply.dataset.deltas = String(Number(reply.dataset.deltas || 0) + 1);
          } else if (name === "answer") {
            drawAnswer(state, reply, data);
            state.history.push({ role: "user", content: question }, { role: "assistant", content: data.answer });
          } else if (name === "error") {
            showError(new Error(data.error?.message || "error"), reply);
          }
        },
        state.controller.signal,
      );
    } catch (error) {
      if (error.name !== "AbortError") showError(error, reply);
    } finally {
      text.classList.remove("streaming");
      reply.removeAttribute("aria-busy");
      state.controller = null;
      send.disabled = false;
      stop.hidden = true;
      input.focus();
    }
  });
  append(root, h("div", { class: "chat" }, log, form));
  input.focus();
  return () => state.controller?.abort();
}

function drawAnswer(state, reply, answer) {
  const badges = h(
    "div",
    { class: "badges" },
    h("span", { class: `badge mode ${answer.mode}`, title: t("chat.answerMode") }, t(`chat.badge.${answer.mode}`)),
    answer.mode !== "no_sources" && !answer.refused
      ? h(
          "span",
          { class: `badge ${answer.verified ? "ok" : "warn"}` },
          answer.verified ? t("chat.verified") : t("chat.unverified"),
        )
      : null,
  );
  const body = h(
    "p",
    { class: "answer" },
    answerNodes(answer, (number, position) => openCitation(state.kb, answer, number, position)),
  );
  const notes = h(
    "ul",
    { class: "notes" },
    answer.refused ? h("li", {}, t("chat.refused")) : null,
    answer.llm_error ? h("li", { class: "warn" }, t("chat.llmError", { reason: answer.llm_error })) : null,
    answer.unsupported_claims.length
      ? h("li", { class: "warn" }, t("chat.unsupported", { count: answer.unsupported_claims.length }))
      : null,
    answer.removed_citations.length
      ? h("li", { class: "warn" }, t("chat.removed", { count: answer.removed_citations.length }))
      : null,
  );
  const sources = answer.sources.length
    ? h(
        "details",
        { class: "sources" },
        h("summary", {}, `${t("chat.sources")} (${answer.sources.length})`),
        h(
          "ol",
          {},
          answer.sources
            .slice()
            .sort((a, b) => a.number - b.number)
            .map((s) =>
              h(
                "li",
                {},
                h(
                  "button",
                  { type: "button", class: "link", onclick: () => openCitation(state.kb, answer, s.number, null) },
                  `[${s.number}] ${s.title || s.source}`,
                ),
                s.page ? ` · ${t("cite.page", { page: s.page })}` : "",
              ),
            ),
        ),
      )
    : null;
  clear(
    reply,
    h("span", { class: "who" }, t("chat.assistant")),
    badges,
    body,
    notes.children.length ? notes : null,
    sources,
  );
}

// The answer's text with [n] markers as buttons and unsupported claims marked.
function answerNodes(answer, onCite) {
  const text = answer.answer;
  const spans = answer.unsupported_claims.map((c) => [c.start, c.end]);
  const nodes = [];
  let last = 0;
  const plain = (from, to) => {
    const cuts = new Set([from, to]);
    for (const [s, e] of spans) for (const p of [s, e]) if (p > from && p < to) cuts.add(p);
    const points = [...cuts].sort((a, b) => a - b);
    for (let i = 0; i + 1 < points.length; i++) {
      const [a, b] = [points[i], points[i + 1]];
      const piece = text.slice(a, b);
      const unsupported = spans.some(([s, e]) => a >= s && a < e);
      nodes.push(unsupported ? h("mark", { class: "unsupported", title: t("chat.unsupportedTitle") }, piece) : piece);
    }
  };
  for (const match of text.matchAll(MARKER)) {
    if (match.index > last) plain(last, match.index);
    for (const n of match[1].split(/[,，]/).map((x) => Number(x.trim()))) {
      const known = answer.citations.some((c) => c.number === n) || answer.sources.some((s) => s.number === n);
      const source = answer.sources.find((s) => s.number === n);
      nodes.push(
        known
          ? h(
              "button",
              {
                type: "button",
                class: "cite",
                dataset: { number: String(n) },
                "aria-label": `${t("chat.citation", { number: n })}: ${source ? source.title || source.source : ""}`,
                onclick: () => onCite(n, match.index),
              },
              `[${n}]`,
            )
          : h("span", { class: "cite invalid", title: t("chat.citationMissing") }, `[${n}]`),
      );
    }
    last = match.index + match[0].length;
  }
  if (last < text.length) plain(last, text.length);
  return nodes;
}

// Of the citations with this number, the one whose claim ends closest before the marker.
function pickCitation(answer, number, position) {
  const candidates = answer.citations.filter((c) => c.number === number);
  if (position === null || candidates.length < 2) return candidates[0] || null;
  let best = candidates[0];
  let bestEnd = -1;
  for (const c of candidates) {
    const at = answer.answer.lastIndexOf(c.claim, position);
    const end = at >= 0 ? at + c.claim.length : -1;
    if (end > bestEnd) [best, bestEnd] = [c, end];
  }
  return best;
}

function openCitation(kb, answer, number, position) {
  const citation = pickCitation(answer, number, position);
  const source = answer.sources.find((s) => s.number === number);
  const where = citation || source;
  if (!where) return;
  const text = source ? source.text : citation.snippet;
  const start = citation && source ? Math.min(citation.evidence_start, text.length) : 0;
  const end = citation && source ? Math.min(citation.evidence_end, text.length) : 0;
  const evidence = h(
    "blockquote",
    { class: "evidence", tabindex: "0" },
    text.slice(0, start),
    end > start ? h("mark", {}, text.slice(start, end)) : null,
    text.slice(end),
  );
  const pageBox = where.page ? h("figure", { class: "page" }) : null;
  let blobUrl = null;
  const dialog = h(
    "dialog",
    { class: "citation", id: "citation", "aria-labelledby": "citation-title" },
    h(
      "div",
      { class: "citation-head" },
      h("h2", { id: "citation-title" }, `[${number}] ${where.title || where.source}`),
      h("button", { type: "button", class: "ghost", onclick: () => dialog.close() }, t("common.close")),
    ),
    h(
      "p",
      { class: "muted" },
      where.source,
      where.page ? ` · ${t("cite.page", { page: where.page })}` : "",
      where.section ? ` · ${t("cite.section", { section: where.section })}` : "",
    ),
    citation
      ? h(
          "p",
          { class: "badges" },
          h(
            "span",
            { class: `badge ${citation.status === "verified" ? "ok" : "warn"}` },
            t(`cite.status.${citation.status}`),
          ),
          h("span", { class: "badge" }, t("cite.support", { support: Math.round(citation.support * 100) })),
        )
      : null,
    citation ? [h("h3", {}, t("cite.claim")), h("p", { class: "claim" }, citation.claim)] : null,
    h("h3", {}, t("cite.evidence")),
    evidence,
    pageBox,
  );
  dialog.addEventListener("close", () => {
    dialog.remove();
    if (blobUrl) URL.revokeObjectURL(blobUrl);
  });
  document.body.append(dialog);
  dialog.showModal();
  evidence.querySelector("mark")?.scrollIntoView({ block: "center" });
  if (pageBox) {
    api
      .pageImage(kb, where.doc_id, where.page, PAGE_WIDTH)
      .then((blob) => {
        blobUrl = URL.createObjectURL(blob);
        const img = h("img", { src: blobUrl, alt: t("cite.pageAlt", { page: where.page, source: where.source }) });
        const frame = h("div", { class: "page-frame" }, img);
        if (where.bbox) {
          const [x0, top, x1, bottom] = where.bbox;
          const box = h("div", { class: "bbox", "aria-hidden": "true" });
          Object.assign(box.style, {
            left: `${x0 * 100}%`,
            top: `${top * 100}%`,
            width: `${(x1 - x0) * 100}%`,
            height: `${(bottom - top) * 100}%`,
          });
          frame.append(box);
        }
        append(pageBox, h("figcaption", {}, t("cite.page", { page: where.page })), frame);
      })
      .catch(() => pageBox.remove()); // no page to show (a document without its original): the text says it all
  }
}
