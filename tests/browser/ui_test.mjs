// The web UI's browser tests: Playwright (tools/browser, from its lockfile) drives Debian's
// chromium against a real `deeplens serve` on a temp data dir, real photos (python3-skimage's), and
// for the failure test a remote model whose service is started only after the failure.
//
//   node tests/browser/ui_test.mjs --deeplens BIN --test NAME [--artifacts DIR]
//   node tests/browser/ui_test.mjs --deeplens BIN --list
//   node tests/browser/ui_test.mjs --deeplens BIN --screenshots docs/screenshots
//
// Each test saves a screenshot of where it ended (pass or fail) as DIR/NAME.png. Exit code 0 only
// when every check held.
import { spawn } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "../..");
const { chromium } = await import(path.join(repo, "tools/browser/node_modules/playwright-core/index.mjs"));

const args = process.argv.slice(2);
const opt = (name, fallback) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : fallback; };
const deeplens = opt("--deeplens", path.join(repo, "build/release/src/app/deeplens"));
const artifacts = opt("--artifacts", path.join(os.tmpdir(), "deeplens-browser-artifacts"));
const photosDir = "/usr/lib/python3/dist-packages/skimage/data";
const PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png"];
const TIMEOUT = 60_000;

function check(cond, message) { if (!cond) throw new Error("check failed: " + message); }

async function freePort() {
  const srv = net.createServer();
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  const port = srv.address().port;
  srv.close();
  await once(srv, "close");
  return port;
}

// `deeplens serve` on a temp data dir: resolves once it prints "Press Ctrl-C".
async function startServer(configText = "") {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "deeplens-browser-"));
  const extra = [];
  if (configText) {
    fs.writeFileSync(path.join(dir, "deeplens.toml"), configText);
    extra.push("--config", path.join(dir, "deeplens.toml"));
  }
  const log = fs.openSync(path.join(dir, "serve.log"), "a");
  const proc = spawn(deeplens, ["serve", "--data-dir", path.join(dir, "data"), "--listen", "127.0.0.1:0", ...extra],
    { stdio: ["ignore", "pipe", log] });
  const server = { dir, proc, url: null, key: null };
  let buffered = "";
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("deeplens serve did not start; see " + dir)), TIMEOUT);
    proc.on("exit", (code) => reject(new Error(`deeplens serve exited (${code}); see ${dir}/serve.log`)));
    proc.stdout.on("data", (chunk) => {
      buffered += chunk.toString();
      const url = buffered.match(/serving on (http:\/\/\S+)/);
      if (url) server.url = url[1];
      const key = buffered.match(/(dlk_[0-9a-f]+)/);
      if (key) server.key = key[1];
      if (/^Press Ctrl-C/m.test(buffered)) { clearTimeout(timer); resolve(); }
    });
  });
  proc.removeAllListeners("exit");
  server.stop = async () => {
    if (proc.exitCode === null) { proc.kill("SIGTERM"); await once(proc, "exit"); }
  };
  server.api = async (method, p, body, headers = {}) => {
    const res = await fetch(server.url + p, { method, body, headers: { Authorization: "Bearer " + server.key, ...headers } });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  };
  server.upload = async (name, bytes = fs.readFileSync(path.join(photosDir, name)), options = null) => {
    const form = new FormData();
    form.append("file", new Blob([bytes]), name);
    if (options) form.append("processingOptions", JSON.stringify(options));
    return server.api("POST", "/api/v1/images/upload", form);
  };
  server.waitStatus = async (id, wanted) => {
    const deadline = Date.now() + TIMEOUT;
    while (Date.now() < deadline) {
      const s = await server.api("GET", `/api/v1/images/${id}/status`);
      if (wanted.includes(s.body.status)) return s.body;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`image ${id} did not reach ${wanted}`);
  };
  return server;
}

// A fake feature-extraction service (tests/support) on a fixed port, so a model configured
// before it started can reach it once it runs.
async function startExtractionService(port) {
  const proc = spawn("/usr/bin/python3", [path.join(repo, "tests/support/fake_extraction_service.py"), "--port", String(port)],
    { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  await new Promise((resolve, reject) => {
    proc.on("exit", (code) => reject(new Error("the extraction service exited " + code)));
    proc.stdout.on("data", (c) => { out += c; if (out.includes("PORT")) resolve(); });
  });
  proc.removeAllListeners("exit");
  return { stop: async () => { if (proc.exitCode === null) { proc.kill("SIGTERM"); await once(proc, "exit"); } } };
}

async function signIn(page, server) {
  await page.goto(server.url + "/");
  await page.getByLabel("API key").fill(server.key);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("navigation", { name: "Pages" }).waitFor();
}

async function chooseFiles(page, files) {
  const chooser = page.waitForEvent("filechooser");
  await page.getByText("choose files").click();
  await (await chooser).setFiles(files);
}

const badgeOf = (page, file) => page.locator(`li[data-file="${file}"] .badge`);

// ------------------------------------------------------------------------------------------------

const tests = {
  async sign_in({ page, server, requests }) {
    await page.goto(server.url + "/");
    await page.getByLabel("API key").fill("dlk_" + "0".repeat(64));
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("alert").filter({ hasText: /./ }).waitFor();
    check(await page.getByRole("navigation", { name: "Pages" }).isHidden(), "a wrong key does not sign in");
    await page.getByLabel("API key").fill(server.key);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: "Upload" }).waitFor();
    check(await page.evaluate(() => sessionStorage.getItem("deeplens.apiKey")) === server.key, "the key is kept in sessionStorage");
    check(requests.every((u) => !u.includes(server.key)), "the key never appears in a URL");
    // Signing out forgets the key.
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByLabel("API key").waitFor();
    check(await page.evaluate(() => sessionStorage.getItem("deeplens.apiKey")) === null, "sign out clears the key");
  },

  async upload_live({ page, server, requests }) {
    await signIn(page, server);
    await page.evaluate(() => { window.__sameDocument = true; });
    await chooseFiles(page, PHOTOS.map((p) => path.join(photosDir, p)));
    for (const p of PHOTOS) await badgeOf(page, p).and(page.locator('[data-status="completed"]')).waitFor({ timeout: TIMEOUT });
    check(await page.evaluate(() => window.__sameDocument === true), "no reload happened");
    for (const p of PHOTOS) {
      const bar = page.locator(`li[data-file="${p}"] progress`);
      const [value, max] = await bar.evaluate((b) => [b.value, b.max]);
      check(value === max && max === fs_size(p), `${p}: the progress bar reached its size (${value}/${max})`);
      const steps = await page.locator(`li[data-file="${p}"] .steps`).textContent();
      check(/feature extraction completed \d+ ms/.test(steps) && /vector indexing completed \d+ ms/.test(steps), `${p}: step durations shown (${steps})`);
    }
    check(requests.some((u) => u.endsWith("/api/v1/ws")), "live states came over the WebSocket");
    const listed = await server.api("GET", "/api/v1/images?status=completed");
    check(listed.body.images.length === PHOTOS.length, "the server has every photo completed");
  },

  async non_image_error({ page, server }) {
    const bytes = Buffer.from("these are notes, not a photo\n");
    const file = path.join(server.dir, "notes.txt");
    fs.writeFileSync(file, bytes);
    const direct = await server.upload("notes.txt", bytes);
    check(direct.status === 415, "the API refuses it with 415");
    await signIn(page, server);
    await chooseFiles(page, [file]);
    const message = page.locator('li[data-file="notes.txt"] .steps[role="alert"]');
    await message.waitFor();
    const shown = await message.textContent();
    check(shown === direct.body.error.message, `the API's own message is shown ("${shown}" vs "${direct.body.error.message}")`);
    check(await badgeOf(page, "notes.txt").getAttribute("data-status") === "failed", "the file is marked failed");
  },

  async gallery({ page, server }) {
    for (const p of PHOTOS) {
      const r = await server.upload(p);
      await server.waitStatus(r.body.imageId, ["completed"]);
    }
    await signIn(page, server);
    await page.getByRole("link", { name: "Gallery" }).click();
    const tiles = page.locator(".grid .tile");
    await tiles.nth(PHOTOS.length - 1).waitFor();
    check(await tiles.count() === PHOTOS.length, "the gallery shows every photo");
    await page.waitForFunction(() => [...document.querySelectorAll(".tile img")].every((i) => i.complete && i.naturalWidth > 0));
    for (const p of PHOTOS) check(await page.getByAltText(p).count() === 1, `${p} has its thumbnail, with alt text`);
    // Status filter: nothing failed.
    await page.getByLabel("Status").selectOption("failed");
    await page.getByText("No images.").waitFor();
    // Delete one (after confirming): the gallery and the API no longer have it.
    await page.getByLabel("Status").selectOption("");
    await tiles.nth(PHOTOS.length - 1).waitFor();
    const victim = await page.locator('.tile[data-image-id]').filter({ has: page.getByAltText("coffee.png") }).getAttribute("data-image-id");
    page.once("dialog", (d) => d.accept());
    await page.getByRole("button", { name: "Delete coffee.png" }).click();
    await page.locator(`.tile[data-image-id="${victim}"]`).waitFor({ state: "detached" });
    await tiles.nth(PHOTOS.length - 2).waitFor();
    check(await tiles.count() === PHOTOS.length - 1, "the deleted photo left the gallery");
    check((await server.api("GET", `/api/v1/images/${victim}`)).status === 404, "and the server");
  },

  async similar({ page, server }) {
    const ids = {};
    for (const p of PHOTOS) {
      const r = await server.upload(p);
      ids[p] = r.body.imageId;
      await server.waitStatus(r.body.imageId, ["completed"]);
    }
    await signIn(page, server);
    await page.getByRole("link", { name: "Gallery" }).click();
    await page.getByRole("link", { name: "Similar to chelsea.png" }).click();
    const first = page.locator(".grid[aria-label=Results] .tile").first();
    await first.waitFor();
    check(await first.getAttribute("data-image-id") === ids["chelsea.png"], "the photo itself comes first");
    const score = Number(await first.locator(".score").textContent());
    check(score > 0.99, "with a score of about 1 (" + score + ")");
    const scores = (await page.locator(".grid[aria-label=Results] .score").allTextContents()).map(Number);
    check(scores.length >= 2 && scores.every((v, i) => i === 0 || v <= scores[i - 1]), "other photos follow, best first: " + scores);
    check(scores[1] < 0.99, "no other photo looks like the same one");
    // The image page shows it first among its similar images too.
    await first.locator("a").click();
    await page.getByRole("heading", { name: "chelsea.png" }).waitFor();
    const similar = page.locator("section[aria-labelledby=similar-title] .tile").first();
    await similar.waitFor();
    check(await similar.getAttribute("data-image-id") === ids["chelsea.png"], "the image page's similar images start with it");
  },

  async keyboard_and_small_screen({ page, server }) {
    await page.setViewportSize({ width: 375, height: 740 });
    for (const p of PHOTOS.slice(0, 2)) await server.waitStatus((await server.upload(p)).body.imageId, ["completed"]);
    await page.goto(server.url + "/");
    await page.getByLabel("API key").waitFor();
    check(await page.evaluate(() => document.activeElement.id) === "apikey", "the key field has the focus");
    await page.keyboard.type(server.key);
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: "Upload" }).waitFor();
    // Tab through the page to the Gallery link and follow it, keyboard only.
    let reached = false;
    for (let i = 0; i < 30 && !reached; ++i) {
      await page.keyboard.press("Tab");
      reached = await page.evaluate(() => document.activeElement.textContent === "Gallery");
    }
    check(reached, "the Gallery link is reachable with Tab");
    const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
    check(outline !== "none", "the focused link shows a focus outline");
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: "Gallery" }).waitFor();
    await page.locator(".grid .tile").nth(1).waitFor();
    for (const hash of ["#/gallery", "#/upload", "#/search", "#/jobs", "#/webhooks"]) {
      await page.goto(server.url + "/" + hash);
      await page.waitForLoadState("networkidle");
      const wide = await page.evaluate(() => document.documentElement.scrollWidth);
      check(wide <= 375, `${hash} fits 375 px without scrolling sideways (${wide} px)`);
      const unlabelled = await page.evaluate(() => [...document.querySelectorAll("input, select")].filter(
        (i) => !(i.labels && i.labels.length) && !i.getAttribute("aria-label")).map((i) => i.outerHTML));
      check(unlabelled.length === 0, `${hash}: every control has a label: ${unlabelled}`);
      const noAlt = await page.evaluate(() => [...document.images].filter((i) => !i.hasAttribute("alt")).length);
      check(noAlt === 0, `${hash}: every image has alt text`);
    }
  },

  async failed_then_retried({ page, server: _unused, extraction }) {
    const { server, port } = extraction;
    await signIn(page, server);
    await chooseFiles(page, [path.join(photosDir, "coffee.png")]);
    const row = page.locator('li[data-file="coffee.png"]');
    await row.locator('.badge[data-status="failed"]').waitFor({ timeout: TIMEOUT });
    const imageId = await row.getAttribute("data-image-id");
    await page.getByRole("link", { name: "Jobs" }).click();
    const failed = page.locator(`table[aria-label="Failed images"] tr[data-image-id="${imageId}"]`);
    await failed.waitFor({ timeout: TIMEOUT });
    const text = await failed.textContent();
    check(/connection refused|unavailable|is the service running/i.test(text), "the failure shows the model's error: " + text);
    check(await page.locator('tr[data-stage="extract"]').count() === 1, "the stages table lists extraction");
    // Fix the cause: the model's service comes up. Then retry from the page.
    const service = await startExtractionService(port);
    try {
      await failed.getByRole("button", { name: "Retry " + imageId }).click();
      await page.locator("#replay-result").filter({ hasText: "replayed " + imageId }).waitFor();
      await failed.waitFor({ state: "detached" });
      const status = await server.waitStatus(imageId, ["completed", "failed"]);
      check(status.status === "completed", "after the retry the image completes (" + status.status + ")");
      await page.goto(server.url + "/#/image/" + imageId);
      await page.locator("td", { hasText: /^completed$/ }).first().waitFor();
    } finally {
      await service.stop();
    }
  },
};

function fs_size(name) { return fs.statSync(path.join(photosDir, name)).size; }

// The remote model of failed_then_retried: its port is free (nothing listens) until the test
// starts the service there. Two quick attempts, then a dead letter.
async function extractionSetup() {
  const port = await freePort();
  const server = await startServer(`[pipeline]
max_attempts = 2
backoff_ms = 200

[[models]]
name = "remote"
kind = "remote"
url = "http://127.0.0.1:${port}/ok/dim/16"
dimension = 16
timeout_ms = 2000
default = true
`);
  return { server, port };
}

async function runTest(name) {
  fs.mkdirSync(artifacts, { recursive: true });
  const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"] });
  const extraction = name === "failed_then_retried" ? await extractionSetup() : null;
  const server = extraction ? extraction.server : await startServer();
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  const requests = [];
  const problems = [];
  page.on("request", (r) => requests.push(r.url()));
  page.on("websocket", (w) => requests.push(w.url()));
  page.on("pageerror", (e) => problems.push("page error: " + e.message));
  page.on("console", (m) => { if (m.type() === "error" && /Content Security Policy|Refused/.test(m.text())) problems.push("CSP: " + m.text()); });
  let ok = false;
  try {
    await tests[name]({ page, server, requests, extraction });
    check(problems.length === 0, "no script errors or CSP violations: " + problems.join("; "));
    ok = true;
  } catch (e) {
    console.error(`${name}: ${e.stack || e}`);
    console.error(`server log: ${server.dir}/serve.log`);
  } finally {
    await page.screenshot({ path: path.join(artifacts, name + ".png"), fullPage: true }).catch(() => {});
    await browser.close();
    await server.stop();
    if (ok) fs.rmSync(server.dir, { recursive: true, force: true });
  }
  console.log(`${ok ? "PASS" : "FAIL"} ${name} (screenshot ${path.join(artifacts, name + ".png")})`);
  return ok;
}

if (args.includes("--list")) {
  console.log(Object.keys(tests).join("\n"));
} else if (opt("--screenshots")) {
  const { takeScreenshots } = await import("./screenshots.mjs");
  await takeScreenshots({ chromium, startServer, signIn, chooseFiles, photosDir, PHOTOS, out: opt("--screenshots") });
} else {
  const name = opt("--test");
  if (!tests[name]) { console.error("unknown test: " + name + "; --list names them"); process.exit(2); }
  process.exit((await runTest(name)) ? 0 : 1);
}
