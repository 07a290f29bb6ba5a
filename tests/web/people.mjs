// Drives Debian's chromium through login, acknowledgement, assessment and
// signature for tests/tests/people.rs, over HTTPS with the test's local
// certificate (accepted by name: ignoreHTTPSErrors).
// Input (environment): BASE (https://127.0.0.1:PORT), SHIPMENT, ALERT (id of
// an open alert of SHIPMENT), VIC_PW, LOU_PW, QUINN_PW (viewer, logistics,
// QA), OUT (directory for screenshots), CHROMIUM (executable).
// Output: one JSON line on stdout with what the pages showed.
import { join } from "node:path";
import { env, withBrowser } from "./browser.mjs";

const BASE = env("BASE"), SHIPMENT = env("SHIPMENT"), ALERT = env("ALERT"), OUT = env("OUT");
const out = { page_errors: [] };
const shipmentUrl = `${BASE}/shipments/${encodeURIComponent(SHIPMENT)}`;
const alertSel = `li.alert[data-alert="${ALERT}"]`;

await withBrowser(async (browser) => {
  const session = async (name, password) => {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 }, ignoreHTTPSErrors: true });
    const page = await ctx.newPage();
    page.on("pageerror", (e) => out.page_errors.push(String(e)));
    page.on("dialog", (d) => { out.page_errors.push(`unexpected dialog: ${d.message()}`); d.dismiss(); });
    await page.goto(`${BASE}/`);
    await page.waitForURL(/\/login/);
    out.first_url = out.first_url || page.url();
    await page.fill("#login-name", name);
    await page.fill("#login-password", password);
    await page.click("#login-submit");
    try {
      await page.waitForSelector("table.list tbody tr", { timeout: 15000 });
    } catch (e) {
      await page.screenshot({ path: join(OUT, `people-login-failed-${name}.png`), fullPage: true });
      throw new Error(`${name}: no shipment list after login at ${page.url()}: ` +
        `${await page.textContent("body")} ${out.page_errors.join("; ")}`);
    }
    await page.goto(shipmentUrl);
    await page.waitForSelector("svg.chart");
    return { ctx, page };
  };

  // Viewer: no acknowledge button; the API refuses the page's own request.
  {
    const { ctx, page } = await session("vic", env("VIC_PW"));
    out.viewer_ack_buttons = await page.locator("button.ack").count();
    out.viewer_who = await page.textContent("#who");
    out.viewer_ack_status = await page.evaluate(async (id) => {
      const csrf = document.querySelector('meta[name="csrf-token"]').getAttribute("content");
      const r = await fetch(`/api/v1/alerts/${id}/ack`, {
        method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify({ comment: "viewer tries" }),
      });
      return r.status;
    }, ALERT);
    out.local_storage_keys = await page.evaluate(() => Object.keys(localStorage));
    await page.screenshot({ path: join(OUT, "people-viewer.png"), fullPage: true });
    await ctx.close();
  }

  // Logistics: acknowledges with a comment; no assess or sign button.
  {
    const { ctx, page } = await session("lou", env("LOU_PW"));
    out.lou_ack_buttons = await page.locator(`button.ack[data-alert="${ALERT}"]`).count();
    out.lou_assess_buttons = await page.locator("button.assess").count();
    out.lou_sign_buttons = await page.locator("button.sign").count();
    await page.click(`button.ack[data-alert="${ALERT}"]`);
    await page.waitForSelector("#act-dialog[open]");
    await page.fill("#act-comment", "box closed, cooled again");
    await page.screenshot({ path: join(OUT, "people-logistics-ack.png") });
    await page.click("#act-submit");
    await page.waitForSelector(`${alertSel}:not([data-state="open"])`, { timeout: 15000 });
    out.alert_state_after_ack = await page.getAttribute(alertSel, "data-state");
    await page.screenshot({ path: join(OUT, "people-acknowledged.png"), fullPage: true });
    await ctx.close();
  }

  // QA: assesses, then signs; a wrong password first.
  {
    const { ctx, page } = await session("quinn", env("QUINN_PW"));
    await page.click(`button.assess[data-alert="${ALERT}"]`);
    await page.waitForSelector("#act-dialog[open]");
    await page.fill("#act-comment", "40 min at 9.5 °C within the product's stability data: no impact");
    await page.click("#act-submit");
    await page.waitForSelector(`${alertSel} .assess-info`, { timeout: 15000 });
    out.assessment_text = await page.textContent(`${alertSel} .assess-info`);
    await page.click("button.sign");
    await page.waitForSelector("#act-dialog[open]");
    out.signed_sha = await page.getAttribute("button.sign", "data-sha");
    out.sign_dialog_sha = await page.textContent("#act-sha");
    await page.selectOption("#act-decision", "accepted");
    await page.fill("#act-comment", "excursion assessed, product released");
    await page.fill("#act-password", "not my password");
    await page.click("#act-submit");
    await page.waitForSelector("#act-error:not(:empty)");
    out.wrong_password_error = await page.textContent("#act-error");
    await page.screenshot({ path: join(OUT, "people-sign-wrong-password.png") });
    await page.fill("#act-password", env("QUINN_PW"));
    await page.screenshot({ path: join(OUT, "people-sign-dialog.png") });
    await page.click("#act-submit");
    await page.waitForSelector("#disposition .signature", { timeout: 15000 });
    out.signed_text = await page.textContent("#disposition .signature");
    await page.screenshot({ path: join(OUT, "people-signed.png"), fullPage: true });
    await ctx.close();
  }
});
console.log(JSON.stringify(out));
