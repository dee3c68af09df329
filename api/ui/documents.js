// Documents: drag-and-drop upload with each file's job followed to the end, the list (status filter, pages),
// download, replace, delete with its residue check, the knowledge base's audit, and its re-index.

import { api } from "./api.js";
import { dataTable, refreshSummary, reportError, showError } from "./common.js";
import { append, clear, confirmDialog, field, h, saveBlob, stacked, toast } from "./dom.js";
import { formatDate, formatNumber, t } from "./i18n.js";
import { reindexBox } from "./reindex.js";

const STAGES = ["queued", "parsing", "chunking", "embedding", "storing", "ready"];
const STATUSES = ["ready", "processing", "pending", "failed", "deleting"];
const PAGE = 20;
const POLL_MS = 500;
const PARALLEL_UPLOADS = 2;

export async function documentsView(root, kb) {
  const state = { kb, status: "", offset: 0, alive: true, timers: new Set() };
  const uploads = h("ul", { class: "uploads", "aria-live": "polite", "aria-label": t("docs.uploads") });
  const list = h("div", { class: "table-wrap" });
  const audit = h("div", { class: "audit", "aria-live": "polite" });
  state.list = list;
  append(
    root,
    uploadZone(state, uploads),
    uploads,
    listControls(state),
    list,
    auditBox(state, audit),
    audit,
    reindexBox(state),
  );
  await drawList(state);
  return () => {
    state.alive = false;
    for (const timer of state.timers) clearTimeout(timer);
  };
}

function uploadZone(state, uploads) {
  const input = h("input", {
    type: "file",
    multiple: true,
    id: "file-input",
    class: "visually-hidden",
    tabindex: "-1",
  });
  const choose = h("button", { type: "button", class: "primary", onclick: () => input.click() }, t("docs.choose"));
  const zone = h(
    "div",
    { class: "dropzone", id: "dropzone" },
    h("h2", {}, t("docs.upload")),
    h("p", {}, t("docs.dropHere"), " ", choose),
    input,
  );
  input.addEventListener("change", () => {
    uploadAll(state, uploads, [...input.files]);
    input.value = "";
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    uploadAll(state, uploads, [...event.dataTransfer.files]);
  });
  return zone;
}

// Each file is its own request, so one refused file (too large, an unknown type) does not refuse the others.
async function uploadAll(state, uploads, files) {
  const rows = files.map((file) => {
    const row = uploadRow(file.name);
    uploads.prepend(row.el);
    return { file, row };
  });
  const queue = [...rows];
  const worker = async () => {
    while (queue.length && state.alive) {
      const { file, row } = queue.shift();
      try {
        const { jobs } = await api.upload(state.kb, file);
        await Promise.all(jobs.map((job) => follow(state, job, row)));
      } catch (error) {
        row.fail(t("job.refused"), error.message);
      }
    }
  };
  await Promise.all(Array.from({ length: PARALLEL_UPLOADS }, worker));
  if (state.alive) {
    await drawList(state);
    refreshSummary(state.kb);
  }
}

function uploadRow(name, action = "job.sending") {
  const progress = h("progress", { max: String(STAGES.length - 1), value: "0", "aria-label": name });
  const stage = h("span", { class: "stage" }, t(action));
  const detail = h("span", { class: "detail" });
  const el = h(
    "li",
    { class: "upload", dataset: { name } },
    h("span", { class: "name" }, name),
    progress,
    stage,
    detail,
  );
  return {
    el,
    show(job) {
      el.dataset.status = job.status;
      progress.value = String(Math.max(0, STAGES.indexOf(job.status)));
      stage.textContent = t(`job.${job.status}`);
      if (job.status === "ready") detail.textContent = t(`job.${job.outcome}`, { count: job.chunks });
      if (job.status === "failed") this.fail(t("job.failed"), [job.reason, job.error].filter(Boolean).join(": "));
    },
    fail(label, message) {
      el.dataset.status = "failed";
      stage.textContent = label;
      detail.textContent = message;
      detail.setAttribute("role", "alert");
    },
  };
}

function follow(state, job, row) {
  return new Promise((resolve) => {
    const poll = async (current) => {
      row.show(current);
      if (current.status === "ready" || current.status === "failed" || !state.alive) {
        resolve(current);
        return;
      }
      const timer = setTimeout(async () => {
        state.timers.delete(timer);
        try {
          poll(await api.job(current.id));
        } catch (error) {
          row.fail(t("job.failed"), error.message);
          resolve(current);
        }
      }, POLL_MS);
      state.timers.add(timer);
    };
    poll(job);
  });
}

function listControls(state) {
  const select = h(
    "select",
    { id: "status-filter" },
    h("option", { value: "" }, t("docs.all")),
    STATUSES.map((s) => h("option", { value: s }, t(`status.${s}`))),
  );
  select.addEventListener("change", () => {
    state.status = select.value;
    state.offset = 0;
    drawList(state);
  });
  return h(
    "div",
    { class: "row controls" },
    h("h2", {}, t("docs.heading")),
    field("status-filter", t("docs.filter"), select),
    h("button", { type: "button", class: "ghost", onclick: () => drawList(state) }, t("common.refresh")),
  );
}

async function drawList(state) {
  const { list } = state;
  let page;
  try {
    page = await api.listDocuments(state.kb, { status: state.status, offset: state.offset, limit: PAGE });
  } catch (error) {
    clear(list);
    showError(error, list);
    return;
  }
  if (!state.alive) return;
  if (!page.documents.length) {
    clear(list, h("p", { class: "muted" }, t("docs.empty")));
    return;
  }
  const head = [
    "docs.title",
    "docs.format",
    "docs.status",
    "docs.chunks",
    "docs.chars",
    "docs.updated",
    "docs.actions",
  ];
  const table = stacked(
    dataTable(
      "documents",
      head,
      page.documents.map((doc) => documentRow(state, doc)),
    ),
  );
  const last = Math.min(page.offset + page.documents.length, page.total);
  const pager = h(
    "div",
    { class: "row pager" },
    h(
      "span",
      {},
      t("docs.range", { from: formatNumber(page.offset + 1), to: formatNumber(last), total: formatNumber(page.total) }),
    ),
    h(
      "button",
      { type: "button", class: "ghost", disabled: page.offset === 0, onclick: () => turn(state, -PAGE) },
      t("docs.previous"),
    ),
    h(
      "button",
      { type: "button", class: "ghost", disabled: last >= page.total, onclick: () => turn(state, PAGE) },
      t("docs.next"),
    ),
  );
  clear(list, table, pager);
}

function turn(state, by) {
  state.offset = Math.max(0, state.offset + by);
  drawList(state);
}

function documentRow(state, doc) {
  const name = doc.title || doc.source;
  const replaceInput = h("input", { type: "file", class: "visually-hidden", tabindex: "-1" });
  replaceInput.addEventListener("change", () => replace(state, doc, replaceInput));
  return h(
    "tr",
    { dataset: { doc: doc.id, source: doc.source } },
    h(
      "th",
      { scope: "row" },
      h("span", { class: "title" }, name),
      doc.title && doc.title !== doc.source ? h("small", { class: "muted block" }, doc.source) : null,
      doc.error ? h("small", { class: "error block" }, doc.error) : null,
    ),
    h("td", {}, doc.format),
    h("td", {}, h("span", { class: `status ${doc.status}` }, t(`status.${doc.status}`))),
    h("td", { class: "num" }, formatNumber(doc.chunk_count)),
    h("td", { class: "num" }, formatNumber(doc.n_chars)),
    h("td", {}, formatDate(doc.updated_at)),
    h(
      "td",
      {},
      h(
        "div",
        { class: "actions" },
        h(
          "button",
          {
            type: "button",
            class: "ghost",
            onclick: () => download(state, doc),
            "aria-label": `${t("docs.download")} ${doc.source}`,
          },
          t("docs.download"),
        ),
        h(
          "button",
          {
            type: "button",
            class: "ghost",
            onclick: () => replaceInput.click(),
            "aria-label": `${t("docs.replace")} ${doc.source}`,
          },
          t("docs.replace"),
        ),
        replaceInput,
        h(
          "button",
          {
            type: "button",
            class: "danger",
            onclick: () => remove(state, doc),
            "aria-label": `${t("docs.delete")} ${doc.source}`,
          },
          t("docs.delete"),
        ),
      ),
    ),
  );
}

async function download(state, doc) {
  try {
    saveBlob(await api.download(state.kb, doc.id), doc.source.split("/").pop());
  } catch (error) {
    reportError(error);
  }
}

async function replace(state, doc, input) {
  const file = input.files[0];
  input.value = "";
  if (!file) return;
  const uploads = document.querySelector(".uploads");
  const row = uploadRow(`${doc.source} ← ${file.name}`);
  uploads.prepend(row.el);
  try {
    const { jobs } = await api.replace(state.kb, doc.id, file);
    await Promise.all(jobs.map((job) => follow(state, job, row)));
  } catch (error) {
    row.fail(t("job.refused"), error.message);
  }
  if (state.alive) {
    await drawList(state);
    refreshSummary(state.kb);
  }
}

async function remove(state, doc) {
  const sure = await confirmDialog({
    title: t("docs.deleteTitle", { name: doc.source }),
    text: t("docs.deleteText"),
    confirm: t("docs.deleteConfirm"),
    cancel: t("common.cancel"),
  });
  if (!sure) return;
  try {
    await api.deleteDocument(state.kb, doc.id);
    const left = await api.residue(state.kb, doc.id);
    if (left.clean) toast(t("docs.deleted", { name: doc.source }));
    else
      toast(
        t("docs.residue", {
          name: doc.source,
          chunks: left.chunks,
          lexical: left.lexical_entries,
          files: left.original_files,
        }),
        "error",
      );
  } catch (error) {
    reportError(error);
  }
  await drawList(state);
  refreshSummary(state.kb);
}

function auditBox(state, out) {
  return h(
    "div",
    { class: "row" },
    h(
      "button",
      {
        type: "button",
        class: "ghost",
        id: "audit",
        onclick: async () => {
          clear(out, t("common.loading"));
          try {
            drawAudit(out, await api.audit(state.kb));
          } catch (error) {
            clear(out);
            showError(error, out);
          }
        },
      },
      t("docs.audit"),
    ),
  );
}

function drawAudit(out, audit) {
  const counts = [
    "chunks",
    "chunks_of_ready",
    "leftover_chunks",
    "incomplete_documents",
    "originals",
    "orphan_originals",
  ];
  const byStatus = Object.entries(audit.documents)
    .map(([status, n]) => `${t(`status.${status}`)}: ${formatNumber(n)}`)
    .join(", ");
  clear(
    out,
    h(
      "p",
      { class: audit.clean ? "ok" : "error", role: "status" },
      audit.clean ? t("docs.auditClean") : t("docs.auditDirty"),
    ),
    h(
      "dl",
      { class: "counts" },
      h("dt", {}, t("audit.documents")),
      h("dd", {}, byStatus || t("common.none")),
      counts.map((key) => [
        h("dt", {}, t(`audit.${key}`)),
        h(
          "dd",
          { class: audit[key] && /leftover|incomplete|orphan/.test(key) ? "error" : "" },
          formatNumber(audit[key]),
        ),
      ]),
    ),
  );
}
