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
    .map((s) => `${s.step} ${s.status}` + (s.duration !== undefined ? ` ${s.duration} ms` : "") +
      (s.lastError ? ` (${s.lastError})` : ""))
    .join(" · ");
}

function uploadPage() {
  const list = el("ul.files", { "aria-label": "Uploads" });
  const rows = new Map();  // imageId -> row elements
  const stop = onStatus((d) => {
    const row = rows.get(d.imageId);
    if (!row) return;
    row.state.replaceWith(row.state = badge(d.status));
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
            row.state.replaceWith(row.state = badge(s.status));
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
  }, el("p", {}, "Drop photos here, or"),
  el("label", { for: "files", class: "button-like" }, el("span", {}, "choose files")), chooser);
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
    el("div.meta", {}, del));
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
  page("Image " + id);
  try {
    const [img, status] = await Promise.all([api("GET", `/api/v1/images/${id}`), api("GET", `/api/v1/images/${id}/status`)]);
    const pic = el("img.picture", { alt: img.fileName });
    imageUrl(img.contentUrl).then((u) => { pic.src = u; }).catch(() => {});
    const meta = el("table", {}, el("tbody", {}, ...[
      ["File", img.fileName], ["Status", status.status], ["Size", `${img.width} × ${img.height}, ${img.fileSize} bytes`],
      ["Format", img.format], ["Models", img.models.join(", ")], ["Uploaded", img.createdAt],
      ["Searchable since", img.searchableAfter || "—"]].map(([k, v]) => el("tr", {}, el("th", { scope: "row" }, k), el("td", {}, v)))));
    const steps = el("table", {}, el("thead", {}, el("tr", {}, ...["Step", "Model", "Status", "Attempts", "Duration", "Error"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, ...status.processingSteps.map((s) => el("tr", {}, el("td", {}, s.step), el("td", {}, s.modelName || ""),
        el("td", {}, s.status), el("td", {}, s.attempts), el("td", {}, s.duration !== undefined ? s.duration + " ms" : ""),
        el("td", {}, s.lastError || "")))));
    const similar = el("section", { "aria-label": "Similar images" }, el("h2", {}, "Similar images"));
    main.append(el("div.card", {}, pic, meta), el("div.card.table-wrap", {}, el("h2", {}, "Processing steps"), steps), el("div.card", {}, similar));
    if (status.status === "completed") {
      const r = await api("POST", "/api/v1/search", { imageId: id, topK: 12 });
      similar.append(results(r.results));
    } else {
      similar.append(el("p", {}, "Searchable once processing has completed."));
    }
  } catch (e) { main.append(el("p.error", { role: "alert" }, errorText(e))); }
}

// ---------------------------------------------------------------------------------------------
// Search by an image file

function searchPage() {
  const file = el("input", { type: "file", id: "query", accept: "image/*" });
  const model = el("input", { type: "text", id: "model", placeholder: "default" });
  const topK = el("input", { type: "number", id: "topk", min: "1", max: "100", value: "12" });
  const out = el("div", { "aria-live": "polite" });
  const form = el("form.card", {
    onsubmit: async (e) => {
      e.preventDefault();
      if (!file.files.length) return;
      const f = new FormData();
      f.append("file", file.files[0], file.files[0].name);
      f.append("topK", topK.value);
      if (model.value.trim()) f.append("model", model.value.trim());
      out.replaceChildren(el("p", {}, "Searching…"));
      try {
        const r = await api("POST", "/api/v1/search", f);
        out.replaceChildren(el("p", {}, `${r.results.length} results (model ${r.model})`), results(r.results));
      } catch (err) { out.replaceChildren(el("p.error", { role: "alert" }, errorText(err))); }
    },
  }, el("label", { for: "query" }, "Image"), file, el("div.row", {},
    el("div", {}, el("label", { for: "model" }, "Model"), model),
    el("div", {}, el("label", { for: "topk" }, "Results"), topK)), el("p", {}, el("button", { type: "submit" }, "Search")));
  page("Search", form, out);
}

// ---------------------------------------------------------------------------------------------
// Jobs: stage and lane stats (live), dead letters with retry

async function jobsPage() {
  const stats = el("div.card.table-wrap", { "aria-live": "polite" });
  const letters = el("div.card.table-wrap");
  const retryAll = el("button", {
    type: "button",
    onclick: async () => {
      try {
        const r = await api("POST", "/api/v1/dead-letters/replay");
        toast(`${r.replayed} replayed`);
        await loadLetters();
      } catch (e) { toast(errorText(e)); }
    },
  }, "Retry all failed");
  page("Jobs", stats, el("div.row", {}, retryAll), letters);
  async function loadStats() {
    try {
      const r = await api("GET", "/api/v1/jobs");
      stats.replaceChildren(el("h2", {}, "Stages"), el("table", {},
        el("thead", {}, el("tr", {}, ...["Stage", "Lane", "Queued", "In flight", "Per second", "Consumer lag"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, ...r.stages.map((s) => el("tr", {}, el("td", {}, s.stage), el("td", {}, s.lane || "—"),
          el("td", {}, s.queued ?? "?"), el("td", {}, s.inFlight ?? "?"), el("td", {}, s.throughput?.toFixed?.(1) ?? "?"),
          el("td", {}, s.lag ?? "?"))))));
    } catch (e) { stats.replaceChildren(el("p.error", { role: "alert" }, errorText(e))); }
  }
  async function loadLetters() {
    try {
      const r = await api("GET", "/api/v1/dead-letters");
      const rows = r.deadLetters.map((d) => {
        const retry = el("button.secondary", {
          type: "button", "aria-label": "Retry " + d.imageId,
          onclick: async () => {
            try {
              await api("POST", `/api/v1/dead-letters/${d.id}/replay`);
              toast("replayed " + d.imageId);
              await loadLetters();
            } catch (e) { toast(errorText(e)); }
          },
        }, "Retry");
        return el("tr", { "data-image-id": d.imageId }, el("td", {}, el("a", { href: `#/image/${d.imageId}` }, d.imageId)),
          el("td", {}, d.stage), el("td", {}, `${d.errorCode}: ${d.errorMessage}`), el("td", {}, d.attempts),
          el("td", {}, d.nextAttemptAt || "—"), el("td", {}, retry));
      });
      letters.replaceChildren(el("h2", {}, "Failed and retrying images"), rows.length ? el("table", {},
        el("thead", {}, el("tr", {}, ...["Image", "Stage", "Error", "Attempts", "Next attempt", ""].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, ...rows)) : el("p", {}, "Nothing failed."));
    } catch (e) { letters.replaceChildren(el("p.error", { role: "alert" }, errorText(e))); }
  }
  await Promise.all([loadStats(), loadLetters()]);
  const timer = setInterval(loadStats, 2000);
  return () => clearInterval(timer);
}

// ---------------------------------------------------------------------------------------------
// Webhooks: endpoints, their deliveries, redeliver

async function webhooksPage() {
  const box = el("div.card.table-wrap");
  page("Webhooks", box);
  try {
    const r = await api("GET", "/api/v1/webhooks");
    const endpoints = r.webhooks || r.endpoints || [];
    if (!endpoints.length) { box.append(el("p", {}, "No endpoints. Create one with `deeplens webhooks create`.")); return; }
    for (const w of endpoints) {
      const deliveries = el("div");
      box.append(el("h2", {}, w.url), el("p", {}, `events: ${(w.events || []).join(", ")} · ${w.enabled ? "enabled" : "disabled"}`), deliveries);
      const d = await api("GET", `/api/v1/webhooks/${w.id}/deliveries?limit=20`);
      deliveries.append(el("table", {},
        el("thead", {}, el("tr", {}, ...["Delivery", "Event", "Status", "Attempts", ""].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, ...(d.deliveries || []).map((x) => el("tr", {}, el("td", {}, x.id), el("td", {}, x.eventType),
          el("td", {}, x.status), el("td", {}, (x.attempts || []).length),
          el("td", {}, el("button.secondary", {
            type: "button",
            onclick: async () => {
              try { await api("POST", `/api/v1/webhooks/${w.id}/deliveries/${x.id}/redeliver`); toast("redelivery queued"); }
              catch (e) { toast(errorText(e)); }
            },
          }, "Redeliver")))))));
    }
  } catch (e) { box.append(el("p.error", { role: "alert" }, errorText(e))); }
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
    case "search": searchPage(); break;
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
