// The README's screenshots: every page of the UI at 1280 px and 375 px wide, against a real
// `deeplens serve` with real photos, one image failed by a remote model that is down, and a
// webhook endpoint. Run through ui_test.mjs:
//
//   node tests/browser/ui_test.mjs --deeplens build/release/src/app/deeplens --screenshots docs/screenshots
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";

const MORE = ["motorcycle_right.png", "hubble_deep_field.jpg", "retina.jpg"];
const OPENCV = "/usr/share/doc/opencv-doc/examples/data";

async function closedPort() {
  const srv = net.createServer().listen(0, "127.0.0.1");
  await new Promise((r) => srv.once("listening", r));
  const port = srv.address().port;
  await new Promise((r) => srv.close(r));
  return port;
}

export async function takeScreenshots({ chromium, startServer, signIn, chooseFiles, photosDir, PHOTOS, out }) {
  fs.mkdirSync(out, { recursive: true });
  const port = await closedPort();
  const server = await startServer(`[webhooks]
allow_private_networks = true

[pipeline]
max_attempts = 2
backoff_ms = 300

[[models]]
name = "builtin"
kind = "builtin"
default = true

[[models]]
name = "remote_clip"
kind = "remote"
url = "http://127.0.0.1:${port}"
dimension = 512
timeout_ms = 1000
`);
  // A webhook receiver that acknowledges every delivery.
  const receiver = http.createServer((req, res) => { req.resume(); req.on("end", () => { res.writeHead(204); res.end(); }); });
  receiver.listen(0, "127.0.0.1");
  await new Promise((r) => receiver.once("listening", r));
  const hookUrl = `http://127.0.0.1:${receiver.address().port}/hooks/deeplens`;
  const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"] });
  try {
    const hook = await server.api("POST", "/api/v1/webhooks", JSON.stringify({ url: hookUrl, events: ["processing.completed", "processing.failed"] }),
      { "Content-Type": "application/json" });
    if (hook.status !== 201) throw new Error("creating the webhook: " + JSON.stringify(hook.body));
    const ids = {};
    for (const p of [...PHOTOS, ...MORE]) {
      const r = await server.upload(p, undefined, { models: ["builtin"] });
      ids[p] = r.body.imageId;
      await server.waitStatus(r.body.imageId, ["completed"]);
    }
    const failed = await server.upload("aloeL.jpg", fs.readFileSync(path.join(OPENCV, "aloeL.jpg")), { models: ["remote_clip"] });
    await server.waitStatus(failed.body.imageId, ["failed"]);

    for (const width of [1280, 375]) {
      const context = await browser.newContext({ viewport: { width, height: width > 500 ? 800 : 740 }, deviceScaleFactor: 1 });
      const page = await context.newPage();
      const shot = async (name) => {
        await page.waitForLoadState("networkidle");
        await page.waitForFunction(() => [...document.images].every((i) => i.complete));
        // JPEG: the pages are mostly photographs, which PNG would store at several times the size.
        await page.screenshot({ path: path.join(out, `${name}-${width}.jpg`), type: "jpeg", quality: 80, fullPage: name !== "gallery" });
      };
      await page.goto(server.url + "/");
      await page.getByLabel("API key").waitFor();
      await shot("sign-in");
      await signIn(page, server);
      // New photos for each width (opencv-doc's), and a file that is not an image.
      const fresh = width > 500 ? ["fruits.jpg", "baboon.jpg", "butterfly.jpg"] : ["apple.jpg", "HappyFish.jpg", "building.jpg"];
      const notes = path.join(server.dir, "notes.txt");
      fs.writeFileSync(notes, "not a photo\n");
      await chooseFiles(page, [...fresh.map((p) => path.join(OPENCV, p)), notes]);
      for (const p of fresh) await page.locator(`li[data-file="${p}"] .badge[data-status="completed"]`).waitFor();
      await shot("upload");
      await page.goto(server.url + "/#/gallery");
      await page.locator(".grid .tile").nth(5).waitFor();
      await shot("gallery");
      await page.goto(server.url + "/#/image/" + ids["chelsea.png"]);
      await page.locator("section[aria-labelledby=similar-title] .tile").first().waitFor();
      await shot("image");
      await page.goto(server.url + "/#/search?image=" + ids["motorcycle_left.png"]);
      await page.locator(".grid[aria-label=Results] .tile").first().waitFor();
      await shot("search");
      await page.goto(server.url + "/#/jobs");
      await page.locator('table[aria-label="Failed images"]').waitFor();
      await shot("jobs");
      await page.goto(server.url + "/#/webhooks");
      await page.getByRole("heading", { name: hookUrl }).waitFor();
      await shot("webhooks");
      await context.close();
    }
  } finally {
    await browser.close();
    await server.stop();
    receiver.close();
  }
  console.log("screenshots in " + out);
}
