// After an admin's forced reset, for tests/tests/people.rs: the person logs
// in with the temporary password, is asked for a new one, sets it, and logs
// in with it. Input (environment): BASE, NAME, TEMP_PW, NEW_PW, OUT, CHROMIUM.
// Output: one JSON line on stdout.
import { join } from "node:path";
import { env, withBrowser } from "./browser.mjs";

const BASE = env("BASE"), OUT = env("OUT");
const out = { page_errors: [] };
await withBrowser(async (browser) => {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 }, ignoreHTTPSErrors: true });
  const page = await ctx.newPage();
  page.on("pageerror", (e) => out.page_errors.push(String(e)));
  await page.goto(`${BASE}/login`);
  await page.fill("#login-name", env("NAME"));
  await page.fill("#login-password", env("TEMP_PW"));
  await page.click("#login-submit");
  await page.waitForSelector("#newpw-form:not([hidden])");
  out.asked_for_new_password = true;
  await page.fill("#newpw", env("NEW_PW"));
  await page.screenshot({ path: join(OUT, "people-new-password.png") });
  await page.click("#newpw-submit");
  await page.waitForSelector("#login-form:not([hidden])");
  out.after_change = await page.textContent("#login-error");
  await page.fill("#login-password", env("NEW_PW"));
  await page.click("#login-submit");
  await page.waitForSelector("table.list tbody tr");
  out.rows = await page.$$eval("table.list tbody tr", (rs) => rs.length);
  await ctx.close();
});
console.log(JSON.stringify(out));
