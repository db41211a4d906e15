// The owner's floor map in a real browser (Debian's Chromium, headless): the owner uploads a
// plan, places the zones "counter" and "door" and the box's own scanner on it, and sees a
// customer at the counter, then at the door, with the door's visits today.
//
// Driven by tests/tests/floor_map.rs, which runs the box and makes the customer arrive and
// move. Protocol on stdout: "READY" when the marks are placed (then the test makes C1
// arrive at the counter), "AT_COUNTER" when the page shows them there (then the test moves
// them to the door), "DONE" at the end. A tablet page open meanwhile shows the move as well.
import { browser, fail } from "./chromium.mjs";

const base = process.env.BASE_URL;
const shots = process.env.SCREENSHOT_DIR;
const pin = process.env.OWNER_PIN;
const name = process.env.CUSTOMER_NAME;
const tabletToken = process.env.DEVICE_TOKEN;


try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, locale: "en-US" });
  const owner = await context.newPage();
  const errors = [];
  owner.on("pageerror", (e) => errors.push(String(e)));
  // Failed requests by their address (the console's message names none); the browser's own
  // favicon request is not the page's.
  owner.on("response", (r) => {
    if (r.status() >= 400 && !r.url().endsWith("/favicon.ico")) errors.push(`${r.status()} ${r.url()}`);
  });
  // A tablet, live all along: the customer's zone follows them there too.
  // (in its own window: a page in a background tab polls slowly)
  const tablet = await (await browser.newContext({ viewport: { width: 1180, height: 820 }, locale: "en-US" })).newPage();
  await tablet.goto(`${base}/pos#token=${tabletToken}`);
  await tablet.waitForSelector("#status.live", { timeout: 10000 });
  await owner.goto(`${base}/owner`);
  await owner.waitForSelector("#login:not([hidden])");
  await owner.fill("#pin", pin);
  await owner.click("#login-button");
  await owner.waitForSelector("#dashboard:not([hidden])");
  await owner.locator("#floor-help", { hasText: "Upload a picture" }).waitFor({ timeout: 5000 });

  // A plan drawn by the page's own canvas: walls, the door's gap, the counter, tables.
  const dataUrl = await owner.evaluate(() => {
    const c = document.createElement("canvas");
    c.width = 800; c.height = 450;
    const g = c.getContext("2d");
    g.fillStyle = "#fbf8f3"; g.fillRect(0, 0, 800, 450);
    g.strokeStyle = "#3b3029"; g.lineWidth = 10;
    g.beginPath(); g.moveTo(20, 20); g.lineTo(780, 20); g.lineTo(780, 430); g.lineTo(140, 430);
    g.moveTo(40, 430); g.lineTo(20, 430); g.lineTo(20, 20); g.stroke();
    g.fillStyle = "#c9a27e"; g.fillRect(560, 60, 180, 70);
    g.fillStyle = "#d8cbbd";
    for (const [x, y] of [[200, 150], [330, 150], [200, 280], [330, 280], [600, 300]]) {
      g.beginPath(); g.arc(x, y, 34, 0, 2 * Math.PI); g.fill();
    }
    g.fillStyle = "#6b6560"; g.font = "22px sans-serif";
    g.fillText("COUNTER", 600, 100); g.fillText("DOOR", 60, 415);
    return c.toDataURL("image/png");
  });
  await owner.setInputFiles("#floor-file", {
    name: "plan.png", mimeType: "image/png", buffer: Buffer.from(dataUrl.split(",")[1], "base64"),
  });
  await owner.waitForSelector("#floor-plan:not([hidden])", { timeout: 5000 });

  // Place a mark: choose it, then click on the plan at (fx, fy) of its size.
  const plan = owner.locator("#floor-plan");
  const clickAt = async (fx, fy) => {
    const box = await owner.locator("#floor-image").boundingBox();
    await plan.click({ position: { x: box.width * fx, y: box.height * fy } });
  };
  for (const [zone, fx, fy] of [["counter", 0.81, 0.2], ["door", 0.12, 0.86]]) {
    await owner.fill("#zone-name", zone);
    await owner.click("#place-zone");
    await owner.locator("#floor-help", { hasText: zone }).waitFor({ timeout: 2000 });
    await clickAt(fx, fy);
    await owner.waitForSelector(`.mark.zone[data-name="${zone}"]`, { timeout: 5000 });
  }
  await owner.locator("#scanner-name option[value='local']").waitFor({ state: "attached", timeout: 10000 });
  await owner.selectOption("#scanner-name", "local");
  await owner.click("#place-scanner");
  await clickAt(0.72, 0.34);
  const scanner = owner.locator(".mark.scanner[data-name='local']");
  await scanner.waitFor({ timeout: 5000 });
  if (!(await scanner.innerText()).includes("heard in the last minute")) {
    await fail(`the box's radio is not shown as heard: ${await scanner.innerText()}`);
  }
  // A mark placed by mistake is removed.
  await owner.fill("#zone-name", "terrace");
  await owner.click("#place-zone");
  await clickAt(0.5, 0.5);
  await owner.locator(".mark.zone[data-name='terrace'] button.remove").click();
  await owner.locator(".mark.zone[data-name='terrace']").waitFor({ state: "detached", timeout: 5000 });
  await owner.screenshot({ path: `${shots}/floor-placed.png`, fullPage: true });
  console.log("READY");

  // C1 arrives at the counter: their name shows on the counter's mark.
  const counter = owner.locator(".mark.zone[data-name='counter']");
  await counter.locator("li", { hasText: name }).waitFor({ timeout: 15000 });
  await owner.locator("#floor").screenshot({ path: `${shots}/floor-counter.png` });
  console.log("AT_COUNTER");

  // Then at the door: shown there, gone from the counter, and the door has a visit today.
  const door = owner.locator(".mark.zone[data-name='door']");
  await door.locator("li", { hasText: name }).waitFor({ timeout: 40000 });
  if (await counter.locator("li", { hasText: name }).count()) await fail("still shown at the counter");
  await door.locator(".figures", { hasText: "visits today: 1" }).waitFor({ timeout: 10000 });
  const counterText = await counter.innerText();
  if (!counterText.includes("visits today: 1") || !counterText.includes("avg")) {
    await fail(`the counter's figures: ${counterText}`);
  }
  await owner.locator("#floor").screenshot({ path: `${shots}/floor-door.png` });

  await tablet.locator("article.alert .meta", { hasText: "door" }).waitFor({ timeout: 5000 });
  await tablet.screenshot({ path: `${shots}/floor-tablet-door.png` });

  // In Korean.
  await owner.click("#lang");
  await owner.locator(".mark.zone[data-name='door'] .figures", { hasText: "오늘 방문 1회" }).waitFor({ timeout: 5000 });
  await owner.screenshot({ path: `${shots}/floor-korean.png`, fullPage: true });
  if (errors.length) await fail(`the page logged errors: ${errors.join("\n")}`);
  console.log("DONE");
} catch (e) {
  await fail(String(e && e.stack || e));
}
await browser.close();
