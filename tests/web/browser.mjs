// Shared by the browser drivers of tests/tests/dashboard.rs: environment
// input, and Debian's chromium started headless by playwright-core.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/// An environment variable the driver needs.
export const env = (k) => {
  const v = process.env[k];
  if (!v) { throw new Error(`missing environment variable ${k}`); }
  return v;
};

/// Runs `f(browser)` with a headless chromium (CHROMIUM, else
/// /usr/bin/chromium), then closes it and removes its temporary files.
export async function withBrowser(f) {
  const profile = mkdtempSync(join(tmpdir(), "coldchain-chromium-"));
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    // playwright starts chromium with a new, empty --user-data-dir of its own
    // (it refuses the flag here); temporary files go to this directory.
    tracesDir: profile,
  });
  try {
    return await f(browser);
  } finally {
    await browser.close();
    rmSync(profile, { recursive: true, force: true });
  }
}
