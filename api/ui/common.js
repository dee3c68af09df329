// What every view shares: the error shown in place or as a toast, and links between views.

import { ApiError, api } from "./api.js";
import { append, clear, h, toast } from "./dom.js";
import { formatNumber, t } from "./i18n.js";

function describe(error) {
  return error instanceof ApiError && error.status === 401
    ? t("key.needed")
    : t("common.error", { message: error.message });
}

// In place, where the thing that failed would have been.
export function showError(error, where) {
  if (error instanceof ApiError && error.status === 401) document.getElementById("key-input").focus();
  append(where, h("p", { class: "error", role: "alert" }, describe(error)));
}

// For an action (a button's): the page stays as it was.
export function reportError(error) {
  toast(describe(error), "error");
}

// To another view, or the same one drawn again.
export function go(hash) {
  if (location.hash === hash) window.dispatchEvent(new HashChangeEvent("hashchange"));
  else location.hash = hash;
}

export const kbHash = (kb, tab) => `#/kb/${encodeURIComponent(kb)}/${tab}`;

// The line under a knowledge base's name: its model and counts (drawn again after an upload or a delete).
export async function refreshSummary(kb) {
  const summary = document.getElementById("kb-summary");
  if (!summary) return;
  try {
    const info = await api.getKb(kb);
    summary.textContent = t("kbs.summary", {
      model: info.embedding_model,
      documents: formatNumber(info.documents),
      chunks: formatNumber(info.chunks),
    });
  } catch (error) {
    clear(summary);
    showError(error, summary);
  }
}

// A table with a heading row of translated column names over the given body rows (<tr> elements).
export function dataTable(className, headKeys, rows) {
  return h(
    "table",
    { class: className },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        headKeys.map((key) => h("th", { scope: "col" }, t(key))),
      ),
    ),
    h("tbody", {}, rows),
  );
}
