// A staff member and the owner in a real browser (Debian's Chromium, headless):
// the tablet shows an arrival as it happens, staff acknowledge it, record an order and
// feedback, and the owner page shows the satisfaction figure.
//
// Driven by tests/tests/browser.rs, which runs the box and injects the advertisements.
// Protocol on stdout: "READY" when the tablet page is live (then the test injects an
// arrival), "SHOWN <unix ms>" when the alert appears, "DONE" at the end.
import { browser, fail } from "./chromium.mjs";

const base = process.env.BASE_URL;
const token = process.env.DEVICE_TOKEN;
const shots = process.env.SCREENSHOT_DIR;
const name = process.env.CUSTOMER_NAME;
const setupCode = process.env.SETUP_CODE;


try {
  const context = await browser.newContext({ viewport: { width: 1180, height: 820 }, locale: "en-US" });
  const tablet = await context.newPage();
  await tablet.goto(`${base}/pos#token=${token}`);
  await tablet.waitForSelector("#status.live", { timeout: 10000 });
  await tablet.screenshot({ path: `${shots}/pos-waiting.png` });
  console.log("READY");

  const card = tablet.locator("article.alert.new", { hasText: `${name} is here` });
  await card.waitFor({ timeout: 10000 });
  console.log(`SHOWN ${Date.now()}`);
  const text = await card.innerText();
  for (const expected of ["allergic to peanuts", "oat latte", "gold"]) {
    if (!text.toLowerCase().includes(expected)) await fail(`the alert lacks "${expected}": ${text}`);
  }
  if ((await tablet.locator("#present-count").innerText()) !== "1") await fail("in-the-shop count is not 1");
  await tablet.screenshot({ path: `${shots}/pos-alert.png` });

  // Staff handle it.
  await card.locator("button.ack").click();
  await tablet.locator("article.alert.handled .handled-by", { hasText: "Browser tablet" }).waitFor({ timeout: 5000 });
  const handled = tablet.locator("article.alert.handled");
  await handled.locator("button.order").click();
  await tablet.fill("#order-items", "oat latte, almond croissant");
  await tablet.click("#order-dialog button[value=save]");
  await tablet.locator("#order-dialog").waitFor({ state: "hidden" });
  await handled.locator("button.feedback").click();
  await tablet.click("#stars button[data-score='5']");
  await tablet.fill("#feedback-comment", "Loved the new blend");
  await tablet.click("#feedback-save");
  await tablet.locator("#feedback-dialog").waitFor({ state: "hidden" });
  await tablet.screenshot({ path: `${shots}/pos-handled.png` });

  // The same page in Korean.
  await tablet.click("#lang");
  const korean = await tablet.locator("article.alert").first().innerText();
  if (!korean.includes("방문") || !korean.includes("주의")) await fail(`no Korean text: ${korean}`);
  await tablet.screenshot({ path: `${shots}/pos-korean.png` });

  // The owner sets a PIN and sees today's satisfaction.
  const owner = await context.newPage();
  await owner.goto(`${base}/owner`);
  await owner.waitForSelector("#login:not([hidden])");
  // This box belongs to no shop yet: the owner is told to claim it.
  await owner.waitForSelector("#login-unclaimed:not([hidden])");
  // From the shop's network, setting the PIN takes the code on the box's label: a weak PIN is
  // refused with the reason, then a good one is set.
  await owner.waitForSelector("#setup-code-field:not([hidden])");
  await owner.fill("#setup-code", setupCode);
  await owner.fill("#pin", "123456");
  await owner.click("#login-button");
  await owner.locator("#login-error", { hasText: "run of digits" }).waitFor({ timeout: 5000 });
  await owner.screenshot({ path: `${shots}/owner-setup.png` });
  await owner.fill("#pin", "246813");
  await owner.click("#login-button");
  await owner.waitForSelector("#dashboard:not([hidden])");
  await owner.locator("#f-satisfaction", { hasText: "100%" }).waitFor({ timeout: 10000 });
  const visits = await owner.locator("#f-visits").innerText();
  if (visits !== "1") await fail(`owner page says ${visits} visits today`);
  const devices = await owner.locator("#devices").innerText();
  if (!devices.includes("Browser tablet")) await fail(`owner page lacks the tablet: ${devices}`);
  await owner.screenshot({ path: `${shots}/owner.png`, fullPage: true });

  // "Claim this box", with its id (in the language the tablet chose: Korean); this test box
  // knows no cloud, and says so.
  const claim = owner.locator("#claim");
  await claim.waitFor({ state: "visible" });
  if (!(await claim.innerText()).includes("이 장치 등록하기")) await fail("no claim card");
  const boxCard = await owner.locator("#box").innerText();
  if (!boxCard.includes("tsb-") || !boxCard.includes("등록 안 됨")) await fail(`box card: ${boxCard}`);
  await owner.fill("#claim-code", "7KQM-X3PA-9RTD");
  await owner.click("#claim-button");
  await owner.locator("#claim-error", { hasText: "no cloud address is configured" }).waitFor({ timeout: 5000 });
  await owner.screenshot({ path: `${shots}/owner-claim.png`, fullPage: true });

  // The owner changes the PIN with the current one; the page keeps working.
  await owner.fill("#current-pin", "246813");
  await owner.fill("#new-pin", "975318");
  await owner.click("#pin-button");
  await owner.locator("#pin-error", { hasText: "PIN이 변경되었습니다" }).waitFor({ timeout: 10000 });
  await owner.locator("#f-visits", { hasText: "1" }).waitFor({ timeout: 10000 });
  await owner.screenshot({ path: `${shots}/owner-pin-changed.png`, fullPage: true });
  console.log("DONE");
} catch (e) {
  await fail(String(e && e.stack || e));
}
await browser.close();
