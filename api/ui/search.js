// Search playground: the query with its switches, the hits with every stage's score, and the trace (gated documents,
// candidates before and after rerank, timings) so a person can see why a hit ranks where it does.

import { api } from "./api.js";
import { dataTable, reportError } from "./common.js";
import { append, clear, field, h } from "./dom.js";
import { t } from "./i18n.js";

const score = (x) => (typeof x === "number" ? x.toFixed(3) : "");

export async function searchView(root, kb) {
  const query = h("input", {
    id: "search-query",
    type: "search",
    required: true,
    maxlength: "4000",
    autocomplete: "off",
  });
  const topK = h("input", { id: "search-top-k", type: "number", min: "1", max: "100", value: "5" });
  const mode = choice("search-mode", ["", "hybrid", "dense", "lexical"], (v) => v || t("common.default"));
  const gate = choice("search-gate", ["", "true", "false"], onOff);
  const rerank = choice("search-rerank", ["", "true", "false"], onOff);
  const filters = h("input", {
    id: "search-filters",
    autocomplete: "off",
    placeholder: '{"source": "manual.pdf"}',
    "aria-describedby": "search-filters-help",
  });
  const results = h("section", { class: "results", "aria-live": "polite", "aria-label": t("search.results") });
  const trace = h("section", { class: "trace" });
  const form = h(
    "form",
    { class: "card search", role: "search" },
    h(
      "div",
      { class: "row grow" },
      field("search-query", t("search.query"), query),
      h("button", { type: "submit", class: "primary" }, t("search.button")),
    ),
    h(
      "div",
      { class: "fields compact" },
      field("search-top-k", t("search.topK"), topK),
      field("search-mode", t("search.mode"), mode),
      field("search-gate", t("search.gate"), gate),
      field("search-rerank", t("search.rerank"), rerank),
      field("search-filters", t("search.filters"), filters, t("search.filtersHelp")),
    ),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { query: query.value, top_k: Number(topK.value) || undefined, trace: true };
    if (mode.value) body.mode = mode.value;
    if (gate.value) body.gate = gate.value === "true";
    if (rerank.value) body.rerank = rerank.value === "true";
    if (filters.value.trim()) {
      try {
        body.filters = JSON.parse(filters.value);
        if (typeof body.filters !== "object" || Array.isArray(body.filters) || body.filters === null) throw new Error();
      } catch {
        filters.setAttribute("aria-invalid", "true");
        reportError(new Error(t("search.filtersBad")));
        filters.focus();
        return;
      }
    }
    filters.removeAttribute("aria-invalid");
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    clear(results, h("p", { class: "muted" }, t("common.loading")));
    try {
      const response = await api.search(kb, body);
      drawResults(results, response);
      drawTrace(trace, response);
    } catch (error) {
      clear(results);
      clear(trace);
      reportError(error);
    } finally {
      button.disabled = false;
    }
  });
  append(root, form, results, trace);
  query.focus();
  return null;
}

function onOff(v) {
  return v === "" ? t("common.default") : v === "true" ? t("common.on") : t("common.off");
}

function choice(id, values, label) {
  return h(
    "select",
    { id },
    values.map((v) => h("option", { value: v }, label(v))),
  );
}

function drawResults(out, response) {
  const { hits, trace } = response;
  if (!hits.length) {
    clear(out, h("h2", {}, t("search.results")), h("p", { class: "muted" }, t("search.noHits")));
    return;
  }
  const before = new Map((trace?.candidates || []).map((c, i) => [c.chunk_id, i + 1]));
  clear(
    out,
    h("h2", {}, t("search.results")),
    h(
      "ol",
      { class: "hits" },
      hits.map((hit, i) => {
        const was = before.get(hit.chunk_id);
        return h(
          "li",
          { class: "hit", dataset: { chunk: hit.chunk_id } },
          h(
            "div",
            { class: "hit-head" },
            h("span", { class: "rank" }, `#${i + 1}`),
            h("strong", {}, hit.title || hit.source),
            hit.page ? h("span", { class: "muted" }, t("search.page", { page: hit.page })) : null,
            hit.section ? h("span", { class: "muted" }, hit.section) : null,
            h("span", { class: "score" }, t("search.score", { score: score(hit.score) })),
          ),
          stageChips(hit.stages),
          trace
            ? h(
                "p",
                { class: "muted small" },
                was ? t("search.ranks", { before: was, after: i + 1 }) : t("search.newRank", { after: i + 1 }),
              )
            : null,
          h("p", { class: "hit-text" }, hit.text),
        );
      }),
    ),
  );
}

function stageChips(stages) {
  return h(
    "ul",
    { class: "chips", "aria-label": t("trace.scores") },
    Object.entries(stages || {}).map(([stage, value]) =>
      h("li", { class: "chip" }, h("span", {}, stage), " ", h("b", {}, score(value))),
    ),
  );
}

function drawTrace(out, response) {
  const trace = response.trace;
  if (!trace) {
    clear(out);
    return;
  }
  // Where each candidate ended: its place after reranking, or among the hits when reranking was off.
  const final = trace.reranked.length ? trace.reranked : response.hits;
  const after = new Map(final.map((c, i) => [c.chunk_id, i + 1]));
  const total = trace.timings_ms.total || Math.max(1, ...Object.values(trace.timings_ms));
  const details = h(
    "details",
    { id: "trace" },
    h("summary", {}, t("trace.heading")),
    h("h3", {}, t("trace.timings")),
    h(
      "ul",
      { class: "timings" },
      Object.entries(trace.timings_ms).map(([stage, ms]) => {
        const bar = h("span", { class: "bar" });
        bar.style.width = `${Math.min(100, (ms / total) * 100)}%`;
        return h(
          "li",
          {},
          h("span", { class: "stage" }, stage),
          h("span", { class: "track" }, bar),
          h("span", { class: "ms" }, ms.toFixed(1)),
        );
      }),
    ),
    h("h3", {}, t("trace.gated")),
    trace.gated.length
      ? table(
          ["trace.rank", "trace.document", "trace.scores"],
          trace.gated.map((d, i) => [`#${i + 1}`, d.title || d.source, score(d.score)]),
          "gated",
        )
      : h("p", { class: "muted" }, t("trace.gatedNone")),
    h("h3", {}, t("trace.candidates")),
    table(
      ["trace.rank", "trace.chunk", "trace.scores", "trace.after"],
      trace.candidates.map((c, i) => [
        `#${i + 1}`,
        chunkCell(c),
        stageChips(c.stages),
        after.has(c.chunk_id) ? `#${after.get(c.chunk_id)}` : t("trace.dropped"),
      ]),
      "candidates",
    ),
    h("h3", {}, t("trace.reranked")),
    trace.reranked.length
      ? table(
          ["trace.rank", "trace.chunk", "trace.scores"],
          trace.reranked.map((c, i) => [`#${i + 1}`, chunkCell(c), stageChips(c.stages)]),
          "reranked",
        )
      : h("p", { class: "muted" }, t("trace.rerankOff")),
  );
  clear(out, details);
}

function chunkCell(c) {
  const text = c.text.length > 160 ? `${c.text.slice(0, 160)}…` : c.text;
  return h(
    "div",
    {},
    h("strong", {}, c.title || c.source),
    c.page ? ` · ${t("search.page", { page: c.page })}` : "",
    h("br"),
    h("span", { class: "muted small" }, text),
  );
}

function table(head, rows, name) {
  return h(
    "div",
    { class: "table-wrap" },
    dataTable(
      `trace-table ${name}`,
      head,
      rows.map((cells) =>
        h(
          "tr",
          {},
          cells.map((cell) => h("td", {}, cell)),
        ),
      ),
    ),
  );
}
