// DeepLens web UI: plain ES modules, no build step, no framework, nothing fetched from elsewhere.
// Routing by hash (#/gallery, #/image/img_...), so the server serves one static page. Every page
// is built with DOM calls (textContent, never innerHTML with data), which the strict CSP needs too.
import { api, ApiError, imageUrl, session, uploadFile } from "./api.js";
import { disconnect, onStatus } from "./live.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");

// el("tag.class", {attr: v, onclick: f}, child, "text", ...)
function el(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const node = document.createElement(tag);
  if (classes.length) node.className = classes.join(" ");
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v === true) node.setAttribute(k, "");
    else if (v !== false && v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  return node;
}

function toast(text) {
  const t = document.getElementById("toast");
  t.textContent = text;
  t.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove("show"), 4000);
}

const badge = (status) => el("span.badge." + status, { "data-status": status }, status);

// The pipeline phase an image is in, from its status and steps: uploaded -> extracting -> indexing
// -> completed / failed.
function phase(s) {
  if (s.status !== "processing") return s.status;
  const steps = s.processingSteps || [];
  const open = (name) => steps.some((x) => x.step === name && x.status !== "completed");
  if (open("feature_extraction") || !steps.length) return "extracting";
  if (open("vector_indexing")) return "indexing";
  return "processing";
}
const errorText = (e) => (e instanceof ApiError ? e.message : String(e));

function page(title, ...content) {
  main.replaceChildren(el("h1", {}, title), ...content);
  document.title = title + " · DeepLens";
  main.focus();
}

// ---------------------------------------------------------------------------------------------
// Sign in

function signIn() {
  nav.hidden = true;
  const input = el("input", { type: "password", id: "apikey", autocomplete: "off", required: true });
  const message = el("p.error", { role: "alert" });
  const form = el("form.card", {
    onsubmit: async (e) => {
      e.preventDefault();
      session.set(input.value.trim());
      try {
        await api("GET", "/api/v1/images?limit=1");
        location.hash = "#/upload";
      } catch (err) {
        session.clear();
        message.textContent = errorText(err);
      }
    },
  }, el("label", { for: "apikey" }, "API key"), input, el("p", {}, el("button", { type: "submit" }, "Sign in")), message);
  page("Sign in", el("p", {}, "The key stays in this tab (sessionStorage) and is sent as a header, never in a URL."), form);
  input.focus();
}

// ---------------------------------------------------------------------------------------------
// Upload: many files, bytes-sent progress, then each file's live pipeline state

function stepsText(status) {
  return (status.processingSteps || [])
    .map((s) => `${s.step.replace("_", " ")} ${s.status}` + (s.duration !== undefined ? ` ${s.duration} ms` : "") +
      (s.lastError ? ` (${s.lastError})` : ""))
    .join(" · ");
}

function uploadPage() {
  const list = el("ul.files", { "aria-label": "Uploads" });
  const rows = new Map();  // imageId -> row elements
  const stop = onStatus((d) => {
    const row = rows.get(d.imageId);
    if (!row) return;
    row.state.replaceWith(row.state = badge(phase(d)));
    row.steps.textContent = stepsText(d);
  });
  const chooser = el("input", { type: "file", id: "files", multiple: true, accept: "image/*", class: "sr" });
  const start = (files) => {
    for (const file of files) {
      const bar = el("progress", { max: file.size || 1, value: 0, "aria-label": "Upload of " + file.name });
      const state = badge("sending");
      const steps = el("span.steps");
      const li = el("li", { "data-file": file.name }, el("span", {}, file.name), state, bar, steps);
      list.append(li);
      uploadFile(file, (sent) => { bar.value = sent; })
        .then((r) => {
          bar.value = bar.max;
          li.dataset.imageId = r.imageId;
          const row = { state, steps };
          rows.set(r.imageId, row);
          row.state.replaceWith(row.state = badge(r.status));
          // The event may have come before the upload answered: read the status once.
          api("GET", `/api/v1/images/${r.imageId}/status`).then((s) => {
            if (row.state.dataset.status === "completed" || row.state.dataset.status === "failed") return;
            row.state.replaceWith(row.state = badge(phase(s)));
            row.steps.textContent = stepsText(s);
          }).catch(() => {});
        })
        .catch((err) => {
          state.replaceWith(badge("failed"));
          steps.textContent = errorText(err);
          steps.classList.add("error");
          steps.setAttribute("role", "alert");
        });
    }
  };
  chooser.addEventListener("change", () => { start(chooser.files); chooser.value = ""; });
  const drop = el("div.drop", {
    ondragover: (e) => { e.preventDefault(); drop.classList.add("over"); },
    ondragleave: () => drop.classList.remove("over"),
    ondrop: (e) => { e.preventDefault(); drop.classList.remove("over"); start(e.dataTransfer.files); },
  }, el("p", {}, "Drop photos here, or"), chooser,
  el("label", { for: "files", class: "button-like" }, el("span", {}, "choose files")));
  page("Upload", drop, el("div.card", {}, list));
  return stop;
}

// ---------------------------------------------------------------------------------------------
// Gallery

async function tile(img, onDelete) {
  const pic = el("img", { alt: img.fileName, loading: "lazy" });
  if (img.thumbnailUrl) imageUrl(img.thumbnailUrl).then((u) => { pic.src = u; }).catch(() => {});
  const del = el("button.secondary", {
    type: "button", "aria-label": "Delete " + img.fileName,
    onclick: async () => {
      if (!confirm(`Delete ${img.fileName}?`)) return;
      try { await api("DELETE", `/api/v1/images/${img.imageId}`); onDelete(); } catch (e) { toast(errorText(e)); }
    },
  }, "Delete");
  return el("div.tile", { "data-image-id": img.imageId },
    el("a", { href: `#/image/${img.imageId}` }, pic),
    el("div.meta", {}, el("span.name", {}, img.fileName), badge(img.status)),
    el("div.meta", {}, el("a.button-like.secondary", { href: `#/search?image=${img.imageId}`, "aria-label": "Similar to " + img.fileName }, "Similar"), del));
}

async function galleryPage(params) {
  const status = params.get("status") || "";
  const cursor = params.get("cursor") || "";
  const select = el("select", { id: "status-filter", onchange: () => { location.hash = "#/gallery?status=" + select.value; } },
    ...["", "uploaded", "processing", "completed", "failed"].map((s) => el("option", { value: s, selected: s === status }, s || "all")));
  const grid = el("div.grid", { "aria-label": "Images" });
  page("Gallery", el("div.row", {}, el("div", {}, el("label", { for: "status-filter" }, "Status"), select)), grid);
  const q = new URLSearchParams({ limit: "24" });
  if (status) q.set("status", status);
  if (cursor) q.set("cursor", cursor);
  try {
    const r = await api("GET", "/api/v1/images?" + q);
    for (const img of r.images) grid.append(await tile(img, () => galleryPage(params)));
    if (!r.images.length) grid.append(el("p", {}, "No images."));
    if (r.nextCursor) {
      const next = new URLSearchParams(params);
      next.set("cursor", r.nextCursor);
      main.append(el("p", {}, el("a", { href: "#/gallery?" + next }, "Next page")));
    }
  } catch (e) { grid.append(el("p.error", { role: "alert" }, errorText(e))); }
}

// ---------------------------------------------------------------------------------------------
// Image page: the picture, metadata, steps, similar images

function results(hits) {
  const grid = el("div.grid", { "aria-label": "Results" });
  for (const h of hits) {
    const pic = el("img", { alt: h.fileName || h.imageId, loading: "lazy" });
    if (h.thumbnailUrl) imageUrl(h.thumbnailUrl).then((u) => { pic.src = u; }).catch(() => {});
    grid.append(el("div.tile", { "data-image-id": h.imageId },
      el("a", { href: `#/image/${h.imageId}` }, pic),
      el("div.meta", {}, el("span.name", {}, h.fileName || h.imageId), el("span.score", {}, h.score.toFixed(3)))));
  }
  if (!hits.length) grid.append(el("p", {}, "No results."));
  return grid;
}

async function imagePage(id) {
  page("Image");
  try {
    const [img, status] = await Promise.all([api("GET", `/api/v1/images/${id}`), api("GET", `/api/v1/images/${id}/status`)]);
    main.querySelector("h1").textContent = img.fileName;
    const pic = el("img.picture", { alt: img.fileName });
    imageUrl(img.contentUrl).then((u) => { pic.src = u; }).catch(() => {});
    const meta = el("table", {}, el("tbody", {}, ...[
      ["Image id", img.imageId], ["Status", status.status], ["Size", `${img.width} × ${img.height}, ${img.fileSize} bytes`],
      ["Format", img.format], ["Models", img.models.join(", ")], ["Uploaded", img.createdAt],
      ["Searchable since", img.searchableAfter || "—"],
      ["Near-duplicate of", img.duplicateOf
        ? el("span", {}, el("a", { href: `#/image/${img.duplicateOf.imageId}` }, img.duplicateOf.imageId),
          ` (${img.duplicateOf.modelName}, score ${img.duplicateOf.score.toFixed(3)})`)
        : "—"]].map(([k, v]) => el("tr", {}, el("th", { scope: "row" }, k), el("td", {}, v)))));
    const steps = el("table", {}, el("thead", {}, el("tr", {}, ...["Step", "Model", "Status", "Attempts", "Duration", "Error"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, ...status.processingSteps.map((s) => el("tr", {}, el("td", {}, s.step), el("td", {}, s.modelName || ""),
        el("td", {}, s.status), el("td", {}, s.attempts), el("td", {}, s.duration !== undefined ? s.duration + " ms" : ""),
        el("td", {}, s.lastError || "")))));
    const similar = el("section", { "aria-labelledby": "similar-title" }, el("h2", { id: "similar-title" }, "Similar images"));
    main.append(el("div.card", {}, pic, meta), el("div.card.table-wrap", {}, el("h2", {}, "Processing steps"), steps), el("div.card", {}, similar));
    if (status.status === "completed") {
      const r = await similarTo(id);
      similar.append(results(r.results));
    } else {
      similar.append(el("p", {}, "Searchable once processing has completed."));
    }
  } catch (e) { main.append(el("p.error", { role: "alert" }, errorText(e))); }
}

// Images like one of the tenant's own: its picture is the query, so it comes first (score 1).
async function similarTo(id, topK = 12, model = "") {
  const content = await fetch(`/api/v1/images/${id}/content`, { headers: { Authorization: "Bearer " + session.key() } });
  if (!content.ok) throw new ApiError(content.status, null);
  const f = new FormData();
  f.append("file", await content.blob(), id);
  f.append("topK", String(topK));
  if (model) f.append("model", model);
  return api("POST", "/api/v1/search", f);
}

// ---------------------------------------------------------------------------------------------
// Search by an image file

function searchPage(params) {
  const picked = params.get("image");
  const file = el("input", { type: "file", id: "query", accept: "image/*" });
  const model = el("input", { type: "text", id: "model", placeholder: "the default model" });
  const topK = el("input", { type: "number", id: "topk", min: "1", max: "100", value: "12" });
  const out = el("div", { "aria-live": "polite" });
  const show = (r) => out.replaceChildren(el("p", {}, `${r.results.length} results (model ${r.model}, ${r.searchMs} ms)`), results(r.results));
  const fail = (err) => out.replaceChildren(el("p.error", { role: "alert" }, errorText(err)));
  const run = async (query) => {
    out.replaceChildren(el("p", {}, "Searching…"));
    try { show(await query()); } catch (err) { fail(err); }
  };
  const form = el("form.card", {
    onsubmit: (e) => {
      e.preventDefault();
      if (file.files.length) {
        const f = new FormData();
        f.append("file", file.files[0], file.files[0].name);
        f.append("topK", topK.value);
        if (model.value.trim()) f.append("model", model.value.trim());
        run(() => api("POST", "/api/v1/search", f));
      } else if (picked) {
        run(() => similarTo(picked, Number(topK.value), model.value.trim()));
      }
    },
  }, el("label", { for: "query" }, "Image (drop a file here or pick one; or use “Similar” in the gallery)"), file, el("div.row", {},
    el("div", {}, el("label", { for: "model" }, "Model"), model),
    el("div", {}, el("label", { for: "topk" }, "Results"), topK)), el("p", {}, el("button", { type: "submit" }, "Search")));
  form.addEventListener("dragover", (e) => e.preventDefault());
  form.addEventListener("drop", (e) => {
    e.preventDefault();
    if (e.dataTransfer.files.length) { file.files = e.dataTransfer.files; form.requestSubmit(); }
  });
  page("Search", form, out);
  if (picked) {
    const pic = el("img.query", { alt: "Query image" });
    imageUrl(`/api/v1/images/${picked}/thumbnail`).then((u) => { pic.src = u; }).catch(() => {});
    const link = el("a", { href: `#/image/${picked}` }, picked);
    api("GET", `/api/v1/images/${picked}`).then((img) => { link.textContent = img.fileName; }).catch(() => {});
    form.prepend(el("p", {}, pic, " Similar to ", link));
    run(() => similarTo(picked, Number(topK.value)));
  }
}

// ---------------------------------------------------------------------------------------------
// Jobs: stage and lane stats (live), dead letters with retry

async function jobsPage() {
  const stats = el("div.card.table-wrap");
  const letters = el("div.card.table-wrap");
  const retrying = el("div.card.table-wrap");
  const result = el("p", { role: "status", id: "replay-result" });
  const retryAll = el("button", {
    type: "button",
    onclick: async () => {
      try {
        const r = await api("POST", "/api/v1/dead-letters/replay");
        result.textContent = `${r.replayed} replayed` + (r.failed.length ? `, ${r.failed.length} could not be: ` + r.failed.map((f) => `${f.id} (${f.error})`).join(", ") : "");
        await loadLetters();
      } catch (e) { result.textContent = errorText(e); }
    },
  }, "Retry all failed");
  page("Jobs", stats, el("div.row", {}, retryAll, result), letters, retrying);
  const cell = (v) => el("td", {}, v === null || v === undefined ? "—" : v);
  async function loadStats() {
    try {
      const r = await api("GET", "/api/v1/jobs");
      const rows = [];
      for (const s of r.stages) {
        const lanes = (s.lanes || []).map((l) => `${l.lane} ${l.queued ?? "?"}`).join(" · ");
        rows.push(el("tr", { "data-stage": s.stage }, el("th", { scope: "row" }, s.stage), cell(s.queued), cell(lanes || null),
          cell(s.inFlight), cell(s.perSecond === undefined ? null : s.perSecond.toFixed(2))));
      }
      stats.replaceChildren(el("h2", {}, "Stages"), el("table", {},
        el("thead", {}, el("tr", {}, ...["Stage", "Queued (consumer lag)", "Per lane", "In flight", `Per second (last ${r.throughputWindowSeconds} s)`].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, ...rows)),
        el("p", {}, `${r.deadLetters} failed, ${r.retrying} waiting for a retry`));
    } catch (e) { stats.replaceChildren(el("p.error", { role: "alert" }, errorText(e))); }
  }
  async function loadLetters() {
    try {
      const r = await api("GET", "/api/v1/dead-letters");
      const rows = r.deadLetters.map((d) => {
        const retry = el("button.secondary", {
          type: "button", "aria-label": "Retry " + (d.imageId || d.id),
          onclick: async () => {
            try {
              await api("POST", `/api/v1/dead-letters/${d.id}/replay`);
              result.textContent = "replayed " + (d.imageId || d.id);
              await loadLetters();
            } catch (e) { result.textContent = errorText(e); }
          },
        }, "Retry");
        return el("tr", { "data-image-id": d.imageId || "" },
          el("td", {}, d.imageId ? el("a", { href: `#/image/${d.imageId}` }, d.imageId) : "(undecodable)"),
          cell(d.stage), el("td", {}, badge("failed"), " ", `${d.errorCode}: ${d.errorMessage}`), cell(d.attempts), cell(d.createdAt), el("td", {}, retry));
      });
      letters.replaceChildren(el("h2", {}, "Failed images"), rows.length ? el("table", { "aria-label": "Failed images" },
        el("thead", {}, el("tr", {}, ...["Image", "Stage", "Error", "Attempts", "Failed at", ""].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, ...rows)) : el("p", {}, "Nothing failed."));
      const waiting = r.retrying.map((x) => el("tr", { "data-image-id": x.imageId },
        el("td", {}, el("a", { href: `#/image/${x.imageId}` }, x.imageId)), cell(x.stage + (x.model ? ` (${x.model})` : "")),
        cell(x.lastError), cell(`${x.attempt} of ${x.maxAttempts}`), cell(x.nextAttemptAt)));
      retrying.replaceChildren(el("h2", {}, "Waiting for a retry"), waiting.length ? el("table", { "aria-label": "Retrying images" },
        el("thead", {}, el("tr", {}, ...["Image", "Stage", "Last error", "Next attempt", "Due at"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, ...waiting)) : el("p", {}, "Nothing is waiting."));
    } catch (e) { letters.replaceChildren(el("p.error", { role: "alert" }, errorText(e))); }
  }
  await Promise.all([loadStats(), loadLetters()]);
  const timer = setInterval(() => { loadStats(); loadLetters(); }, 2000);
  return () => clearInterval(timer);
}

// ---------------------------------------------------------------------------------------------
// Webhooks: endpoints, their deliveries, redeliver

async function webhooksPage() {
  const box = el("div");
  const url = el("input", { type: "url", id: "hook-url", required: true, placeholder: "https://example.com/hooks/deeplens" });
  const created = el("p", { role: "status" });
  const form = el("form.card", {
    onsubmit: async (e) => {
      e.preventDefault();
      try {
        const w = await api("POST", "/api/v1/webhooks", { url: url.value.trim(), events: ["image.uploaded", "processing.completed", "processing.failed", "image.deleted"] });
        created.textContent = `Created. Signing secret (shown once, keep it): ${w.secret}`;
        url.value = "";
        await load();
      } catch (err) { created.textContent = errorText(err); }
    },
  }, el("h2", {}, "Add an endpoint"), el("label", { for: "hook-url" }, "URL (every event type)"), url,
  el("p", {}, el("button", { type: "submit" }, "Add")), created);
  page("Webhooks", form, box);
  async function load() {
    try {
      const r = await api("GET", "/api/v1/webhooks");
      const parts = [];
      if (!r.webhooks.length) parts.push(el("p.card", {}, "No endpoints yet."));
      for (const w of r.webhooks) {
        const d = await api("GET", `/api/v1/webhooks/${w.id}/deliveries?limit=20`);
        const rows = d.deliveries.map((x) => {
          const last = x.attempts.length ? x.attempts[x.attempts.length - 1] : null;
          return el("tr", {}, el("td", {}, x.eventType), el("td", {}, badge(x.status === "succeeded" ? "completed" : x.status === "failed" ? "failed" : "processing")),
            el("td", {}, x.attemptCount), el("td", {}, last ? (last.httpStatus ? "HTTP " + last.httpStatus : last.error || "") : "—"),
            el("td", {}, x.nextAttemptAt || "—"), el("td", {}, x.createdAt),
            el("td", {}, el("button.secondary", {
              type: "button", "aria-label": "Redeliver " + x.id,
              onclick: async () => {
                try { await api("POST", `/api/v1/webhooks/${w.id}/deliveries/${x.id}/redeliver`); toast("redelivery queued"); await load(); }
                catch (e) { toast(errorText(e)); }
              },
            }, "Redeliver")));
        });
        parts.push(el("div.card.table-wrap", {}, el("h2", {}, w.url),
          el("p", {}, `${w.enabled ? "enabled" : "disabled" + (w.disabledReason ? " (" + w.disabledReason + ")" : "")} · events: ${w.events.join(", ")}`),
          rows.length ? el("table", { "aria-label": "Deliveries to " + w.url },
            el("thead", {}, el("tr", {}, ...["Event", "Status", "Attempts", "Last answer", "Next attempt", "Created", ""].map((h) => el("th", { scope: "col" }, h)))),
            el("tbody", {}, ...rows)) : el("p", {}, "No deliveries yet.")));
      }
      box.replaceChildren(...parts);
    } catch (e) { box.replaceChildren(el("p.error", { role: "alert" }, errorText(e))); }
  }
  await load();
}

// ---------------------------------------------------------------------------------------------
// Router

let leave = null;

async function route() {
  if (leave) { leave(); leave = null; }
  const [path, query] = (location.hash.slice(1) || "/upload").split("?");
  const params = new URLSearchParams(query || "");
  if (!session.key()) return signIn();
  nav.hidden = false;
  for (const a of nav.querySelectorAll("a")) a.toggleAttribute("aria-current", path.startsWith(a.getAttribute("href").slice(1)));
  for (const a of nav.querySelectorAll("a[aria-current]")) a.setAttribute("aria-current", "page");
  const parts = path.split("/").filter(Boolean);
  switch (parts[0]) {
    case "upload": leave = uploadPage(); break;
    case "gallery": await galleryPage(params); break;
    case "image": await imagePage(parts[1]); break;
    case "search": searchPage(params); break;
    case "jobs": leave = await jobsPage(); break;
    case "webhooks": await webhooksPage(); break;
    default: location.hash = "#/upload";
  }
}

document.getElementById("signout").addEventListener("click", () => {
  session.clear();
  disconnect();
  location.hash = "#/signin";
  route();
});
window.addEventListener("hashchange", route);
route();
