// HQ's console in a real browser (Debian's Chromium, headless), driven step by step by
// tests/tests/console_browser.rs, which runs the cloud and a box beside it.
// Protocol: this script prints ONLINE, ENROLLED, SEEN, ERASED, OFFLINE, DONE as it gets
// there; the test writes ARRIVED (the box recognised the customer and a tablet recorded her
// feedback) and STOPPED (the box was stopped) on its stdin.
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { browser } from "./chromium.mjs";

const base = process.env.BASE_URL;
const shots = process.env.SCREENSHOT_DIR;
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const waitFor = async (word) => {
  const { value } = await lines.next();
  if (value !== word) throw new Error(`expected ${word} from the test, got ${value}`);
};

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, locale: "en-US", acceptDownloads: true });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));

  // Sign in.
  await page.goto(`${base}/`);
  await page.waitForSelector("#signin:not([hidden])");
  await page.fill("#email", process.env.EMAIL);
  await page.fill("#password", "not the password");
  await page.click("#signin-form button[type=submit]");
  await page.locator("#signin-error", { hasText: "wrong email or password" }).waitFor();
  await page.screenshot({ path: `${shots}/console-signin.png` });
  await page.fill("#password", process.env.PASSWORD);
  await page.click("#signin-form button[type=submit]");

  // The shops page: the box is online.
  const box = page.locator("section.shop[data-shop=seoul-1] tr.box");
  await box.locator(".pill.online").waitFor({ timeout: 10000 });
  await page.screenshot({ path: `${shots}/console-shops-online.png`, fullPage: true });
  console.log("ONLINE");

  // Enroll Minji with her tag for the shop.
  await page.click("nav a[data-page=customers]");
  await page.click("#enroll");
  const dialog = page.locator("#dialog");
  await dialog.locator("#new-ref").fill("M7");
  await dialog.getByLabel("Name", { exact: true }).fill("Minji Kim");
  await dialog.getByLabel("Notes (allergies…)").fill("allergic to peanuts");
  await dialog.getByLabel("Seoul Station").check();
  await dialog.getByLabel("Static tags (one per line)").fill("ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:4");
  await page.screenshot({ path: `${shots}/console-enroll.png` });
  await dialog.locator("button[type=submit]").click();
  await dialog.waitFor({ state: "hidden" });
  await page.locator("td", { hasText: "Minji Kim" }).waitFor();
  console.log("ENROLLED");

  // The box recognised her, and a tablet recorded her feedback.
  await waitFor("ARRIVED");
  await page.click("nav a[data-page=analytics]");
  const visits = page.locator("#figures .figure").first().locator(".value");
  await visits.filter({ hasText: /^1$/ }).waitFor({ timeout: 10000 });
  const satisfaction = await page.locator("#figures .figure").nth(3).innerText();
  if (!satisfaction.includes("100%")) throw new Error(`satisfaction: ${satisfaction}`);
  await page.waitForTimeout(300); // charts drawn
  await page.screenshot({ path: `${shots}/console-analytics.png`, fullPage: true });
  await page.click("nav a[data-page=feedback]");
  const card = page.locator(".card.feedback", { hasText: "Minji loved the new blend" });
  await card.waitFor();
  if (!(await card.innerText()).includes("Minji Kim (M7)")) throw new Error(await card.innerText());
  await page.screenshot({ path: `${shots}/console-feedback.png` });
  console.log("SEEN");

  // Export everything held about her, then erase her everywhere.
  await page.click("nav a[data-page=privacy]");
  await page.fill("#privacy-ref", "M7");
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#export")]);
  if (download.suggestedFilename() !== "customer-M7.json") throw new Error(download.suggestedFilename());
  const exported = JSON.parse(readFileSync(await download.path(), "utf8"));
  if (exported.hq_record.display_name !== "Minji Kim") throw new Error(JSON.stringify(exported));
  const kinds = exported.events.map((e) => e.kind);
  if (!kinds.includes("customer_arrived") || !kinds.includes("feedback_recorded")) throw new Error(kinds.join());
  if (!JSON.stringify(exported).includes("Minji loved the new blend")) throw new Error("the comment is not exported");
  await page.click("#erase");
  await page.fill("#erase-confirm", "M7");
  await page.locator("#dialog button[type=submit]").click();
  const erasure = page.locator("tr.erasure[data-ref=M7]");
  await erasure.waitFor();
  await erasure.locator(".pill.state.done").waitFor({ timeout: 20000 });
  await page.screenshot({ path: `${shots}/console-erased.png`, fullPage: true });
  await page.click("nav a[data-page=feedback]");
  await page.locator(".card.feedback", { hasText: "(erased)" }).waitFor();
  if (await page.locator(".card.feedback", { hasText: "Minji" }).count()) throw new Error("her comment is still shown");

  // The shops page in Korean.
  await page.click("nav a[data-page=shops]");
  await page.click("#lang");
  await box.locator(".pill.online", { hasText: "온라인" }).waitFor();
  await page.screenshot({ path: `${shots}/console-shops-ko.png`, fullPage: true });
  await page.click("#lang");
  console.log("ERASED");

  // The box stops and shows offline.
  await waitFor("STOPPED");
  await box.locator(".pill.offline").waitFor({ timeout: 30000 });
  await page.screenshot({ path: `${shots}/console-shops-offline.png`, fullPage: true });
  console.log("OFFLINE");
  if (errors.length) throw new Error(`errors on the page: ${errors.join("; ")}`);
  console.log("DONE");
} catch (e) {
  console.error(e);
  for (const page of browser.contexts().flatMap((c) => c.pages())) {
    await page.screenshot({ path: `${shots}/console-failure.png`, fullPage: true }).catch(() => {});
  }
  process.exitCode = 1;
} finally {
  await browser.close();
  process.exit(process.exitCode || 0);
}
