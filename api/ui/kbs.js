// Knowledge bases: the list with counts, create (choosing the embedding model), drop after typing the name.

import { api } from "./api.js";
import { dataTable, go, kbHash, reportError, showError } from "./common.js";
import { append, clear, confirmDialog, field, h, stacked, toast } from "./dom.js";
import { formatDate, formatNumber, t } from "./i18n.js";

export async function kbsView(root) {
  const list = h("div", { class: "table-wrap", "aria-live": "polite" }, t("common.loading"));
  append(root, h("h1", {}, t("kbs.heading")), list, createForm());
  await drawList(list);
  return null;
}

async function drawList(list) {
  let kbs;
  try {
    kbs = await api.listKbs();
  } catch (error) {
    clear(list);
    showError(error, list);
    return;
  }
  if (!kbs.length) {
    clear(list, h("p", { class: "muted" }, t("kbs.empty")));
    return;
  }
  const head = [
    "kbs.name",
    "kbs.description",
    "kbs.model",
    "kbs.documents",
    "kbs.chunks",
    "kbs.created",
    "kbs.actions",
  ];
  clear(
    list,
    stacked(
      dataTable(
        "kbs",
        head,
        kbs.map((kb) =>
          h(
            "tr",
            { dataset: { kb: kb.name } },
            h("th", { scope: "row" }, h("a", { href: kbHash(kb.name, "documents") }, kb.name)),
            h("td", {}, kb.description),
            h("td", { class: "mono" }, kb.embedding_model),
            h("td", { class: "num" }, formatNumber(kb.documents)),
            h("td", { class: "num" }, formatNumber(kb.chunks)),
            h("td", {}, formatDate(kb.created_at)),
            h(
              "td",
              {},
              h(
                "div",
                { class: "actions" },
                h("a", { href: kbHash(kb.name, "search"), class: "button ghost" }, t("nav.search")),
                h("a", { href: kbHash(kb.name, "chat"), class: "button ghost" }, t("nav.chat")),
                h(
                  "button",
                  {
                    type: "button",
                    class: "danger",
                    onclick: () => drop(kb, list),
                    "aria-label": `${t("kbs.drop")} ${kb.name}`,
                  },
                  t("kbs.drop"),
                ),
              ),
            ),
          ),
        ),
      ),
    ),
  );
}

async function drop(kb, list) {
  const sure = await confirmDialog({
    title: t("kbs.dropTitle", { name: kb.name }),
    text: t("kbs.dropText", { documents: formatNumber(kb.documents), chunks: formatNumber(kb.chunks) }),
    confirm: t("kbs.dropConfirm"),
    cancel: t("common.cancel"),
    typeToConfirm: kb.name,
  });
  if (!sure) return;
  try {
    await api.dropKb(kb.name);
    toast(t("kbs.dropped", { name: kb.name }));
  } catch (error) {
    reportError(error);
  }
  await drawList(list);
}

function createForm() {
  const name = h("input", { id: "kb-name", name: "name", required: true, maxlength: "128", autocomplete: "off" });
  const description = h("input", { id: "kb-description", name: "description", maxlength: "2000" });
  const model = h("select", { id: "kb-model", name: "embedding_model" });
  api
    .models()
    .then((models) => {
      const names = models.data.filter((m) => m.kind === "embedding").map((m) => m.id);
      clear(
        model,
        names.map((id, i) => h("option", { value: id, selected: i === 0 }, id)),
      );
    })
    .catch(() => clear(model, h("option", { value: "" }, t("common.default"))));
  const form = h(
    "form",
    { class: "card create", "aria-labelledby": "create-heading" },
    h("h2", { id: "create-heading" }, t("kbs.create")),
    h(
      "div",
      { class: "fields" },
      field("kb-name", t("kbs.name"), name),
      field("kb-description", t("kbs.description"), description),
      field("kb-model", t("kbs.model"), model),
    ),
    h("div", { class: "row end" }, h("button", { type: "submit", class: "primary" }, t("kbs.createButton"))),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const created = await api.createKb({
        name: name.value.trim(),
        description: description.value.trim(),
        embedding_model: model.value || null,
      });
      toast(t("kbs.created.toast", { name: created.name }));
      go(kbHash(created.name, "documents"));
    } catch (error) {
      reportError(error);
    } finally {
      button.disabled = false;
    }
  });
  return form;
}
