// The page's shell: header (API key, language), routes by the URL's hash, and the error every view shares.
//   #/                       knowledge bases
//   #/kb/<name>/documents    upload, watch, list, delete, audit
//   #/kb/<name>/search       search playground with the trace
//   #/kb/<name>/chat         streamed, cited answers

import { apiKey, setApiKey } from "./api.js";
import { chatView } from "./chat.js";
import { kbHash, refreshSummary } from "./common.js";
import { documentsView } from "./documents.js";
import { append, clear, h, toast } from "./dom.js";
import { currentLanguage, setLanguage, t } from "./i18n.js";
import { kbsView } from "./kbs.js";
import { searchView } from "./search.js";

const main = document.getElementById("main");
const TABS = { documents: documentsView, search: searchView, chat: chatView };
let leaving = null; // the current view's clean-up (stops polling, aborts a stream)

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "kb" && parts[1]) return { kb: parts[1], tab: TABS[parts[2]] ? parts[2] : "documents" };
  return { kb: null, tab: null };
}

async function render() {
  if (leaving) leaving();
  leaving = null;
  const { kb, tab } = route();
  document.querySelector("#toast .toast.error")?.remove(); // an error belongs to the view it happened in
  renderHeader();
  clear(main);
  if (!kb) {
    document.title = `${t("app.title")} · kb-service`;
    leaving = await kbsView(main);
    return;
  }
  document.title = `${kb} · ${t(`nav.${tab}`)} · kb-service`;
  const heading = h("h1", {}, kb);
  const summary = h("p", { class: "muted", id: "kb-summary" }, t("common.loading"));
  const tabs = h(
    "nav",
    { class: "tabs", "aria-label": kb },
    Object.keys(TABS).map((name) =>
      h("a", { href: kbHash(kb, name), "aria-current": name === tab ? "page" : false, class: "tab" }, t(`nav.${name}`)),
    ),
  );
  const body = h("section", { class: "tab-body" });
  append(main, h("div", { class: "kb-head" }, heading, summary), tabs, body);
  refreshSummary(kb);
  leaving = await TABS[tab](body, kb);
}

function renderHeader() {
  const { kb } = route();
  const crumbs = document.getElementById("crumbs");
  clear(
    crumbs,
    h("a", { href: "#/" }, t("nav.home")),
    kb
      ? [
          h("span", { "aria-hidden": "true" }, " / "),
          h("a", { href: kbHash(kb, "documents"), "aria-current": "page" }, kb),
        ]
      : null,
  );
  document.getElementById("key-label").textContent = t("key.label");
  const input = document.getElementById("key-input");
  input.placeholder = t("key.placeholder");
  document.getElementById("key-save").textContent = t("key.save");
  const lang = document.getElementById("lang");
  lang.textContent = t("lang.switch");
  lang.setAttribute("aria-label", t("lang.label"));
  document.getElementById("skip").textContent = t("app.skip");
}

function start() {
  setLanguage(currentLanguage());
  const input = document.getElementById("key-input");
  input.value = apiKey();
  document.getElementById("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setApiKey(input.value.trim());
    toast(t("key.saved"));
    render();
  });
  document.getElementById("lang").addEventListener("click", () => {
    setLanguage(currentLanguage() === "zh" ? "en" : "zh");
    render();
  });
  // The skip link moves the focus to the content; it must not change the hash, which names the view.
  document.getElementById("skip").addEventListener("click", (event) => {
    event.preventDefault();
    main.focus();
  });
  window.addEventListener("hashchange", render);
  render();
}

start();
