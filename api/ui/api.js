// The service's public REST API, called with the user's key: the page can do nothing a client with that key cannot.

export class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

export function apiKey() {
  return localStorage.getItem("kb.key") || "";
}

export function setApiKey(key) {
  if (key) localStorage.setItem("kb.key", key);
  else localStorage.removeItem("kb.key");
}

function headers(extra = {}) {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}`, ...extra } : extra;
}

async function failure(response) {
  let type = "HTTPError";
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    const error = body.error || {};
    type = error.type || type;
    if (error.message) message = error.message;
    else if (Array.isArray(body.detail))
      message = body.detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
    else if (body.detail) message = String(body.detail);
  } catch {
    // not JSON: the status line says it
  }
  return new ApiError(response.status, type, message);
}

export async function request(method, path, { json, body, signal } = {}) {
  const init = { method, headers: headers(), signal };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.body = body;
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  if (response.status === 204) return null;
  const kind = response.headers.get("content-type") || "";
  return kind.includes("application/json") ? response.json() : response.blob();
}

export const kbPath = (kb) => `/v1/knowledge-bases/${encodeURIComponent(kb)}`;
export const docPath = (kb, id) => `${kbPath(kb)}/documents/${encodeURIComponent(id)}`;

export const api = {
  listKbs: () => request("GET", "/v1/knowledge-bases"),
  getKb: (kb) => request("GET", kbPath(kb)),
  createKb: (fields) => request("POST", "/v1/knowledge-bases", { json: fields }),
  dropKb: (kb) => request("DELETE", kbPath(kb)),
  models: () => request("GET", "/v1/models"),
  listDocuments: (kb, { status, offset, limit }) => {
    const query = new URLSearchParams({ offset, limit });
    if (status) query.set("status", status);
    return request("GET", `${kbPath(kb)}/documents?${query}`);
  },
  upload: (kb, file) => {
    const form = new FormData();
    form.append("files", file, file.name);
    return request("POST", `${kbPath(kb)}/documents`, { body: form });
  },
  replace: (kb, id, file) => {
    const form = new FormData();
    form.append("files", file, file.name);
    return request("PUT", docPath(kb, id), { body: form });
  },
  job: (id) => request("GET", `/v1/jobs/${encodeURIComponent(id)}`),
  deleteDocument: (kb, id) => request("DELETE", docPath(kb, id)),
  residue: (kb, id) => request("GET", `${docPath(kb, id)}/residue`),
  audit: (kb) => request("GET", `${kbPath(kb)}/audit`),
  download: (kb, id) => request("GET", `${docPath(kb, id)}/file`),
  pageImage: (kb, id, page, width) => request("GET", `${docPath(kb, id)}/pages/${page}.png?width=${width}`),
  search: (kb, body) => request("POST", `${kbPath(kb)}/search`, { json: body }),
  reindex: (kb) => request("GET", `${kbPath(kb)}/reindex`),
  startReindex: (kb, body) => request("POST", `${kbPath(kb)}/reindex`, { json: body }),
  cancelReindex: (kb) => request("DELETE", `${kbPath(kb)}/reindex`),
};

// POST …/ask with stream: true, read as server-sent events: onEvent(name, data) for each `delta`, the final `answer`
// and an `error`. An answer that fails before streaming starts is an ApiError, like any request.
export async function askStream(kb, body, onEvent, signal) {
  const response = await fetch(`${kbPath(kb)}/ask`, {
    method: "POST",
    headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
    body: JSON.stringify({ ...body, stream: true }),
    signal,
  });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(name, JSON.parse(data.join("\n")));
    }
  }
}
