// A person launching a SMART app in Chromium (headless, Debian's build, driven by playwright-core):
// open the app's launch page, sign in on the FHIR server's login page, allow access on its consent
// page, and wait for the app to show the patient's name. Prints one JSON line; exits non-zero on failure.
//
//   node smart_launch.mjs '{"launchUrl": "...", "username": "...", "password": "...",
//                           "patient": "<id to type on the consent page, optional>",
//                           "locale": "fr-FR", "chromium": "/usr/bin/chromium", "timeoutMs": 30000}'
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const config = JSON.parse(process.argv[2] || "{}");
const timeout = config.timeoutMs || 30000;
const profile = mkdtempSync(join(tmpdir(), "smart-chromium-"));
const seen = { authorize: null, token: null, console: [], pageErrors: [], navigations: [] };
const pending = [];  // header look-ups finished before the result is printed
let context;

function formOf(body) {
  return Object.fromEntries(new URLSearchParams(body || ""));
}

async function run() {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: config.chromium || "/usr/bin/chromium",
    headless: true,
    locale: config.locale || "fr-FR",
    timeout,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run"],
  });
  context.setDefaultTimeout(timeout);
  context.on("request", request => {
    const url = new URL(request.url());
    if (url.pathname.endsWith("/auth/authorize") && request.method() === "GET" && !seen.authorize) {
      seen.authorize = Object.fromEntries(url.searchParams);
    }
    if (url.pathname.endsWith("/auth/token") && request.method() === "POST") {
      seen.token = { form: formOf(request.postData()) };
      pending.push(request.allHeaders().then(headers => { seen.token.origin = headers["origin"] || null; }));
      pending.push(request.response().then(async response => {
        seen.token.status = response ? response.status() : null;
        seen.token.allowOrigin = response ? await response.headerValue("access-control-allow-origin") : null;
      }));
    }
  });
  const page = context.pages()[0] || await context.newPage();
  page.on("console", message => seen.console.push(`${message.type()}: ${message.text()}`));
  page.on("pageerror", error => seen.pageErrors.push(String(error)));
  page.on("framenavigated", frame => { if (frame === page.mainFrame()) seen.navigations.push(frame.url()); });

  await page.goto(config.launchUrl);
  // the FHIR server's sign-in page
  await page.getByLabel(/^(Identifiant|Username)$/).fill(config.username);
  await page.getByLabel(/^(Mot de passe|Password)$/).fill(config.password);
  await page.getByRole("button", { name: /^(Se connecter|Sign in)$/ }).click();
  // its consent page (a practitioner also names the patient)
  const allow = page.getByRole("button", { name: /^(Autoriser|Allow)$/ });
  await allow.waitFor();
  if (config.patient) {
    await page.getByLabel(/^Patient/).fill(config.patient);
  }
  await allow.click();
  // back in the app: it exchanges the code, reads the patient and writes the name, or an error
  await page.waitForFunction(() => ["ready", "failed"].includes(document.getElementById("status")?.textContent));
  const text = async selector => (await page.locator(selector).textContent()) || "";
  const status = await text("#status");
  await Promise.allSettled(pending);
  const result = status === "ready" ? JSON.parse(await text("#result")) : null;
  return { ok: status === "ready", status, name: await text("#patient-name"), result, error: await text("#error"),
           url: page.url(), ...seen };
}

let output;
try {
  output = await run();
} catch (error) {
  let pageText = null;
  try {
    const page = context && context.pages()[0];
    pageText = page ? `${page.url()}\n${(await page.content()).slice(0, 3000)}` : null;
  } catch { /* the browser is gone */ }
  output = { ok: false, error: String(error && error.stack || error), page: pageText, ...seen };
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(output) + "\n");
process.exit(output.ok ? 0 : 1);
