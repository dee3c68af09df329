// Building the page from data: every text goes in as a text node, never as HTML (documents are user content).

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name in el && typeof value !== "string") el[name] = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  return append(el, ...children);
}

export function append(el, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  return append(el, ...children);
}

let toastTimer;

// A short message for assistive technology and eyes alike (the region is aria-live).
export function toast(message, kind = "info") {
  const region = document.getElementById("toast");
  clear(region, h("p", { class: `toast ${kind}` }, message));
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => region.replaceChildren(), kind === "error" ? 12000 : 6000);
}

// A modal dialog (the browser's <dialog>: focus moves in, Escape closes). Resolves true when confirmed.
export function confirmDialog({ title, text, confirm, cancel, typeToConfirm, danger = true }) {
  return new Promise((resolve) => {
    const input = typeToConfirm
      ? h("input", { type: "text", autocomplete: "off", "aria-label": typeToConfirm, class: "confirm-input" })
      : null;
    const ok = h("button", { type: "submit", class: danger ? "danger" : "primary", disabled: Boolean(input) }, confirm);
    const dialog = h(
      "dialog",
      { class: "confirm", "aria-labelledby": "confirm-title" },
      h(
        "form",
        { method: "dialog" },
        h("h2", { id: "confirm-title" }, title),
        h("p", {}, text),
        input,
        h("div", { class: "row end" }, h("button", { type: "button", value: "cancel", class: "ghost" }, cancel), ok),
      ),
    );
    if (input) input.addEventListener("input", () => (ok.disabled = input.value !== typeToConfirm));
    dialog.querySelector('button[value="cancel"]').addEventListener("click", () => dialog.close("cancel"));
    ok.addEventListener("click", (event) => {
      event.preventDefault();
      dialog.close("ok");
    });
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(dialog.returnValue === "ok");
    });
    document.body.append(dialog);
    dialog.showModal();
    (input || ok).focus();
  });
}

// Save a blob under a file name (a download the user started).
export function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = h("a", { href: url, download: name, class: "hidden" });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// A labelled form control, with an optional help line.
export function field(id, label, control, help) {
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    control,
    help ? h("small", { id: `${id}-help`, class: "muted" }, help) : null,
  );
}

// A table that a phone shows as one card per row: each cell labelled with its column's heading.
export function stacked(table) {
  const heads = [...table.querySelectorAll("thead th")].map((th) => th.textContent);
  for (const row of table.querySelectorAll("tbody tr")) {
    [...row.children].forEach((cell, i) => {
      if (i > 0 && i < heads.length && !cell.querySelector(".actions")) cell.dataset.label = heads[i];
    });
  }
  table.classList.add("stack");
  return table;
}
