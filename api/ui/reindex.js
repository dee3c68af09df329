// Re-indexing a knowledge base with another embedding model (or chunking) while it serves: the form, the running
// re-index followed to its end (progress, cancel), and the knowledge base's line drawn again once it switched.

import { api } from "./api.js";
import { refreshSummary, reportError } from "./common.js";
import { clear, field, h, toast } from "./dom.js";
import { formatNumber, t } from "./i18n.js";

const POLL_MS = 1000;
const RUNNING = ["building", "switching"];

export function reindexBox(state) {
  const model = h("select", { id: "reindex-model", name: "embedding_model" });
  const size = h("input", { id: "reindex-size", type: "number", min: "16", max: "8192", inputmode: "numeric" });
  const overlap = h("input", { id: "reindex-overlap", type: "number", min: "0", max: "8192", inputmode: "numeric" });
  const status = h("div", { class: "reindex-status", id: "reindex-status", "aria-live": "polite" });
  const start = h("button", { type: "submit", class: "primary", id: "reindex-start" }, t("reindex.start"));
  const cancel = h(
    "button",
    { type: "button", class: "ghost", id: "reindex-cancel", hidden: true, onclick: () => stop(state, status, cancel) },
    t("reindex.cancel"),
  );
  Promise.all([api.models(), api.getKb(state.kb)])
    .then(async ([models, kb]) => {
      // A re-index started earlier (here, by another user or the CLI) is followed as well.
      if (kb.reindexing) follow(state, status, cancel, start, await api.reindex(state.kb));
      const names = models.data.filter((m) => m.kind === "embedding").map((m) => m.id);
      if (!names.includes(kb.embedding_model)) names.unshift(kb.embedding_model);
      const pick = names.find((id) => id !== kb.embedding_model) ?? kb.embedding_model; // another model, if any
      clear(
        model,
        names.map((id) => h("option", { value: id, selected: id === pick }, id)),
      );
    })
    .catch(reportError);
  const form = h(
    "form",
    { class: "card reindex", "aria-labelledby": "reindex-heading" },
    h("h2", { id: "reindex-heading" }, t("reindex.heading")),
    h("p", { class: "muted" }, t("reindex.intro")),
    h(
      "div",
      { class: "fields" },
      field("reindex-model", t("reindex.model"), model),
      field("reindex-size", t("reindex.chunkSize"), size),
      field("reindex-overlap", t("reindex.chunkOverlap"), overlap),
    ),
    h("div", { class: "row end" }, cancel, start),
    status,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    start.disabled = true;
    try {
      const body = { embedding_model: model.value };
      if (size.value) body.chunk_size = Number(size.value);
      if (overlap.value) body.chunk_overlap = Number(overlap.value);
      follow(state, status, cancel, start, await api.startReindex(state.kb, body));
    } catch (error) {
      reportError(error);
      start.disabled = false;
    }
  });
  return form;
}

function follow(state, out, cancel, start, status) {
  if (!state.alive) return;
  draw(out, status);
  const running = RUNNING.includes(status.state);
  cancel.hidden = !running;
  start.disabled = running;
  if (running) {
    const timer = setTimeout(async () => {
      state.timers.delete(timer);
      try {
        follow(state, out, cancel, start, await api.reindex(state.kb));
      } catch (error) {
        reportError(error);
      }
    }, POLL_MS);
    state.timers.add(timer);
  } else if (status.state === "ready" && out.dataset.seen === "running") {
    toast(t("reindex.done", { model: status.embedding_model }));
    refreshSummary(state.kb);
  }
  out.dataset.seen = running ? "running" : "done";
}

function draw(out, s) {
  const done = s.copied + s.kept;
  clear(
    out,
    h(
      "p",
      { class: s.state === "failed" ? "error" : "" },
      t("reindex.progress", {
        state: t(`reindex.state.${s.state}`),
        model: s.embedding_model,
        done: formatNumber(done),
        total: formatNumber(s.documents),
        chunks: formatNumber(s.chunks),
        seconds: s.seconds.toFixed(1),
      }),
    ),
    RUNNING.includes(s.state) ? h("progress", { max: Math.max(s.documents, 1), value: done }) : null,
    s.error ? h("p", { class: "muted" }, s.error) : null,
  );
}

async function stop(state, out, cancel) {
  cancel.disabled = true;
  try {
    draw(out, await api.cancelReindex(state.kb));
  } catch (error) {
    reportError(error);
  } finally {
    cancel.disabled = false;
  }
}
