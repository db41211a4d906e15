// Debian's Chromium, headless, as every browser flow starts it: without the background
// networking that this machine's closed network refuses. `fail` prints why and exits 1.
import { chromium } from "playwright-core";

export const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});

export const fail = async (message) => {
  console.error(message);
  await browser.close();
  process.exit(1);
};
