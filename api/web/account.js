// The customer's page (GET /account): a reference front end for the credits API.
//
// No framework, no build step. The Content-Security-Policy admits only this origin and
// refuses HTML strings written into the page (Trusted Types), so every node is built with
// createElement/textContent and every style comes from account.css.
//
// The token lives in sessionStorage: this tab only, gone when it closes or on "Sign out";
// never in a cookie (the service keeps no session) and never in a URL.
"use strict";

(() => {
  const TOKEN_KEY = "ledger.credits-token";
  // The Checkout session a purchase just went to: on the way back the page watches it until
  // the payment is confirmed, because the views that answer /v1/credits follow a moment later.
  const CHECKOUT_KEY = "ledger.pending-checkout";
  const CHART_DAYS = 90;
  const DAY_MS = 24 * 3600 * 1000;
  const PAGE_LIMIT = 1000;
  const MAX_STATEMENT_PAGES = 50; // 50,000 lines; beyond that the chart says where it starts
  const PURCHASES_PAGE = 20;
  const WATCH_INTERVAL_MS = 1500;
  const WATCH_ROUNDS = 40; // about a minute
  const SVG = "http://www.w3.org/2000/svg";
  const CHART_W = 600;
  const CHART_H = 180;
  const BAR_W = 1000;
  const BAR_H = 28;

  const numbers = new Intl.NumberFormat();
  const dates = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });
  const times = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  const $ = (id) => document.getElementById(id);

  class ApiError extends Error {
    constructor(status, body) {
      super((body && typeof body.message === "string" && body.message) || describeStatus(status));
      this.status = status;
      this.errors = body && body.errors && typeof body.errors === "object" ? body.errors : {};
    }
  }

  function describeStatus(status) {
    if (status === 0) return "The service could not be reached. Check your connection and try again.";
    return `Something went wrong (HTTP ${status}). Try again in a moment.`;
  }

  /** One call to the API with the bearer token; the parsed JSON, or an ApiError. */
  async function api(token, path, options = {}) {
    const headers = { Accept: "application/json", Authorization: `Bearer ${token}` };
    let response;
    try {
      response = await fetch(path, {
        method: options.method || "GET",
        headers: { ...headers, ...(options.headers || {}) },
        body: options.body,
        credentials: "omit",
        cache: "no-store",
        referrerPolicy: "no-referrer",
      });
    } catch {
      throw new ApiError(0, null);
    }
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (!response.ok) throw new ApiError(response.status, body);
    return body;
  }

  // --- the token ---------------------------------------------------------------------------

  /** The token this page is signed in with (also in sessionStorage when it is available). */
  let signedIn = null;

  function storedToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch {
      return null; // storage disabled: the customer signs in again on each load
    }
  }

  function forget() {
    try {
      sessionStorage.removeItem(TOKEN_KEY);
      sessionStorage.removeItem(CHECKOUT_KEY);
    } catch {
      /* nothing was stored */
    }
  }

  function signInMessage(error) {
    if (error.status === 401) {
      return "This token was not accepted: it is unknown or has been revoked. Check it and try again.";
    }
    if (error.status === 403) {
      return "This token cannot read an account's credits. Use the customer (credits) token of your account.";
    }
    return error.message;
  }

  // --- small DOM helpers -------------------------------------------------------------------

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "text") node.textContent = value;
      else if (key === "className") node.className = value;
      else node.setAttribute(key, value);
    }
    node.append(...children);
    return node;
  }

  function svg(tag, attributes = {}) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
    return node;
  }

  /** Show an integer: grouped for reading, exact in data-value for scripts and tests. */
  function figure(id, value) {
    const node = $(id);
    node.textContent = numbers.format(value);
    node.dataset.value = String(value);
  }

  function status(text) {
    $("page-status").textContent = text;
  }

  function showError(id, text, field) {
    $(id).textContent = text;
    if (field) field.setAttribute("aria-invalid", text ? "true" : "false");
  }

  // --- the balance bar ---------------------------------------------------------------------

  function renderBalance(credits) {
    figure("balance", credits.balance);
    figure("available", credits.available);
    figure("allowance-remaining", credits.allowance_remaining);
    figure("monthly-allowance", credits.monthly_allowance);
    figure("granted", credits.granted);
    figure("topup", credits.topup_balance);
    figure("held", credits.held);
    $("period").textContent = credits.period;

    const total = credits.balance;
    const bar = svg("svg", {
      viewBox: `0 0 ${BAR_W} ${BAR_H}`,
      preserveAspectRatio: "none",
      role: "img",
      "aria-label":
        `Balance ${numbers.format(total)}: allowance ${numbers.format(credits.allowance_remaining)}, ` +
        `grants ${numbers.format(credits.granted)}, top-ups ${numbers.format(credits.topup_balance)}; ` +
        `${numbers.format(credits.held)} of it held.`,
    });
    bar.append(svg("rect", { class: "track", x: 0, y: 0, width: BAR_W, height: BAR_H }));
    let x = 0;
    const parts = [
      ["allowance", credits.allowance_remaining],
      ["granted", credits.granted],
      ["topup", credits.topup_balance],
    ];
    for (const [name, value] of parts) {
      if (total <= 0 || value <= 0) continue;
      const width = (value / total) * BAR_W;
      bar.append(svg("rect", { class: `segment ${name}`, "data-part": name, x, y: 0, width, height: BAR_H }));
      x += width;
    }
    // Holds take from the same buckets in the same order as spends (allowance, grants,
    // top-ups), so what is held sits at the start of the bar.
    if (total > 0 && credits.held > 0) {
      const width = (Math.min(credits.held, total) / total) * BAR_W;
      bar.append(svg("rect", { class: "segment held", "data-part": "held", x: 0, y: 0, width, height: BAR_H }));
    }
    $("balance-bar").replaceChildren(bar);
  }

  // --- the chart ---------------------------------------------------------------------------

  /** Statement lines of the last 90 days (newest first) and the last one before them. */
  async function loadStatement(token, since) {
    const lines = [];
    let before = null;
    let after = null;
    let truncated = false;
    for (let pages = 0; ; pages += 1) {
      if (pages === MAX_STATEMENT_PAGES) {
        truncated = true;
        break;
      }
      const query = new URLSearchParams({ limit: String(PAGE_LIMIT) });
      if (after !== null) query.set("after", String(after));
      const page = await api(token, `/v1/credits/transactions?${query}`);
      for (const line of page.data) {
        if (Date.parse(line.recorded_at) < since) {
          before = line;
          break;
        }
        lines.push(line);
      }
      if (before !== null || !page.has_more || page.next_after === null) break;
      after = page.next_after;
    }
    return { lines, before, truncated };
  }

  /** Points (time, balance), oldest first, from the window's start (or the first line) to now. */
  function balancePoints(statement, since, now) {
    const oldestFirst = statement.lines.slice().reverse();
    const points = [];
    if (statement.before !== null) points.push([since, statement.before.balance_after]);
    for (const line of oldestFirst) points.push([Date.parse(line.recorded_at), line.balance_after]);
    if (points.length > 0) points.push([now, points[points.length - 1][1]]);
    return points;
  }

  /** A step line: each balance holds until the next line changes it. */
  function stepPath(points, x, y) {
    let d = "";
    let lastX = null;
    for (const [time, balance] of points) {
      const px = x(time).toFixed(1);
      const py = y(balance).toFixed(1);
      if (lastX === null) d = `M${px} ${py}`;
      else if (px === lastX) d += ` V${py}`;
      else d += ` H${px} V${py}`;
      lastX = px;
    }
    return d;
  }

  function renderChart(statement, now) {
    const since = now - CHART_DAYS * DAY_MS;
    const points = balancePoints(statement, since, now);
    const plot = $("chart-plot");
    if (points.length === 0) {
      plot.replaceChildren();
      $("chart-max").textContent = "";
      $("chart-from").textContent = dates.format(new Date(since));
      $("chart-summary").textContent = "No ledger lines in the last 90 days.";
      return;
    }
    // The window's start; for a younger account its first line, so that its history is
    // drawn across the chart rather than squeezed against today.
    const start = points[0][0];
    $("chart-from").textContent = dates.format(new Date(start));
    const balances = points.map((p) => p[1]);
    const top = Math.max(1, ...balances);
    const low = Math.min(...balances);
    const x = (time) => ((Math.max(time, start) - start) / Math.max(1, now - start)) * CHART_W;
    const y = (balance) => CHART_H - (Math.max(0, balance) / top) * (CHART_H - 4);
    const line = stepPath(points, x, y);
    const first = points[0];
    const chart = svg("svg", {
      viewBox: `0 0 ${CHART_W} ${CHART_H}`,
      preserveAspectRatio: "none",
      role: "img",
      "aria-labelledby": "chart-title",
      "aria-describedby": "chart-summary",
    });
    for (const fraction of [0.25, 0.5, 0.75, 1]) {
      const gy = y(top * fraction).toFixed(1);
      chart.append(svg("line", { class: "grid", x1: 0, x2: CHART_W, y1: gy, y2: gy }));
    }
    const area = `${line} V${CHART_H} H0 Z`;
    chart.append(svg("path", { class: "area", d: area }));
    chart.append(svg("path", { class: "line", d: line, "data-points": points.length }));
    plot.replaceChildren(chart);
    figure("chart-max", top);
    const opened = statement.before === null && !statement.truncated;
    const from = `${opened ? "When the account opened on" : "On"} ${dates.format(new Date(start))}`;
    $("chart-summary").textContent =
      `${from}: ${numbers.format(first[1])} credits. Now: ${numbers.format(balances[balances.length - 1])} credits. ` +
      `Lowest ${numbers.format(low)}, highest ${numbers.format(Math.max(...balances))}.` +
      (statement.truncated ? " Older lines are left out: there are too many to draw." : "");
  }

  // --- purchases ---------------------------------------------------------------------------

  const STATUS = {
    pending: "Waiting for payment",
    paid: "Paid",
    expired: "Expired",
    failed: "Failed",
    refunded: "Refunded",
  };
  const UNDER_REVIEW = "Payment received, under review";

  // Stripe's decimals (ledger/domain/currencies.py), not the browser's: Intl gives ISK, HUF,
  // IDR, COP, PKR... none, where Stripe's amounts have two (ISK 10000 is 100 kr, not 10,000).
  const ZERO_DECIMAL = new Set("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split(" "));
  const THREE_DECIMAL = new Set(["bhd", "jod", "kwd", "omr", "tnd"]);

  function money(amount, currency) {
    const code = currency.toLowerCase();
    const digits = ZERO_DECIMAL.has(code) ? 0 : THREE_DECIMAL.has(code) ? 3 : 2;
    try {
      const style = { style: "currency", currency: code.toUpperCase() };
      const usual = new Intl.NumberFormat(undefined, style).resolvedOptions().minimumFractionDigits;
      const format = new Intl.NumberFormat(undefined, {
        ...style,
        minimumFractionDigits: Math.min(usual, digits),
        maximumFractionDigits: digits,
      });
      return format.format(amount / 10 ** digits);
    } catch {
      return `${numbers.format(amount)} ${currency}`;
    }
  }

  /** What the row says: a payment of another amount than asked is pending but not waited
   *  for; refunds (clawed back) and chargebacks (reversed) both take credits back. */
  function purchaseState(purchase) {
    if (purchase.status === "pending" && purchase.needs_review) return UNDER_REVIEW;
    return STATUS[purchase.status] || purchase.status;
  }

  function purchaseRow(purchase) {
    const state = purchaseState(purchase);
    const takenBack = purchase.credits_clawed_back + purchase.credits_reversed;
    const note = takenBack > 0 ? ` (${numbers.format(takenBack)} taken back)` : "";
    const row = el(
      "tr",
      { "data-session-id": purchase.session_id, "data-status": purchase.status },
      el("td", { text: times.format(new Date(purchase.created_at)) }),
      el("td", { className: "num", text: numbers.format(purchase.credits), "data-value": String(purchase.credits) }),
      el("td", { className: "num", text: money(purchase.amount, purchase.currency) }),
      el("td", { className: `status ${purchase.status}`, text: state + note }),
    );
    return row;
  }

  let purchasesAfter = null;

  async function loadPurchases(token, more) {
    const query = new URLSearchParams({ limit: String(PURCHASES_PAGE) });
    if (more && purchasesAfter !== null) query.set("after", String(purchasesAfter));
    const page = await api(token, `/v1/credits/purchases?${query}`);
    if (signedIn !== token) return [];
    const body = $("purchases").tBodies[0];
    const rows = page.data.map(purchaseRow);
    if (more) body.append(...rows);
    else body.replaceChildren(...rows);
    purchasesAfter = page.has_more ? page.next_after : null;
    $("more-purchases").hidden = purchasesAfter === null;
    $("purchases").hidden = body.rows.length === 0;
    $("purchases-empty").hidden = body.rows.length > 0;
    return page.data;
  }

  // --- loading the account -----------------------------------------------------------------

  let loading = null;

  async function loadAccount(token) {
    const now = Date.now();
    const [credits, statement, purchases] = await Promise.all([
      api(token, "/v1/credits"),
      loadStatement(token, now - CHART_DAYS * DAY_MS),
      loadPurchases(token, false),
    ]);
    if (signedIn !== token) return null; // signed out while it loaded: show nothing
    renderBalance(credits);
    renderChart(statement, now);
    return purchases;
  }

  /** Load (or reload) everything; signs out when the token stopped being valid. */
  async function refresh(token) {
    if (loading) return loading;
    loading = (async () => {
      try {
        return await loadAccount(token);
      } catch (error) {
        if (error.status === 401 || error.status === 403) {
          signOut(signInMessage(error));
        } else {
          status(error.message);
        }
        return null;
      } finally {
        loading = null;
      }
    })();
    return loading;
  }

  function outcome(purchase) {
    switch (purchase.status) {
      case "paid":
        return `${numbers.format(purchase.credits)} credits were added.`;
      case "expired":
        return "The payment page expired before it was paid: nothing was charged.";
      case "failed":
        return "The payment failed: nothing was charged.";
      default:
        return `Your purchase is ${purchaseState(purchase).toLowerCase()}.`;
    }
  }

  /** After Checkout: reload until the purchase is no longer pending, for about a minute. */
  async function watchCheckout(token, loaded) {
    let sessionId = null;
    try {
      sessionId = sessionStorage.getItem(CHECKOUT_KEY);
    } catch {
      return;
    }
    if (!sessionId) return;
    status("Checking your purchase…");
    for (let round = 0; round < WATCH_ROUNDS; round += 1) {
      const purchases = round === 0 && loaded ? loaded : await refresh(token);
      if (signedIn !== token) return; // signed out meanwhile
      const purchase = purchases && purchases.find((p) => p.session_id === sessionId);
      if (purchase && (purchase.status !== "pending" || purchase.needs_review)) {
        sessionStorage.removeItem(CHECKOUT_KEY);
        status(outcome(purchase));
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, WATCH_INTERVAL_MS));
    }
    sessionStorage.removeItem(CHECKOUT_KEY);
    status("Your purchase is not confirmed yet. Use Refresh to check again later.");
  }

  // --- signing in and out ------------------------------------------------------------------

  function showSignedIn() {
    $("sign-in-section").hidden = true;
    $("account").hidden = false;
    $("sign-out").hidden = false;
  }

  function clearAccount() {
    for (const id of ["balance", "available", "allowance-remaining", "monthly-allowance", "granted", "topup", "held", "period", "chart-max", "chart-from", "chart-summary", "credits-error", "buy-error"]) {
      const node = $(id);
      node.textContent = "";
      delete node.dataset.value;
    }
    $("balance-bar").replaceChildren();
    $("chart-plot").replaceChildren();
    $("purchases").tBodies[0].replaceChildren();
    $("purchases").hidden = true;
    $("purchases-empty").hidden = true;
    $("more-purchases").hidden = true;
    purchasesAfter = null;
  }

  function signOut(message) {
    signedIn = null;
    forget();
    clearAccount();
    $("account").hidden = true;
    $("sign-out").hidden = true;
    $("sign-in-section").hidden = false;
    $("token").value = "";
    status(message ? "" : "You are signed out.");
    showError("token-error", message || "", $("token"));
    $("token").focus();
  }

  async function signIn(event) {
    event.preventDefault();
    const field = $("token");
    const token = field.value.trim();
    showError("token-error", "", field);
    if (!token) {
      showError("token-error", "Enter your credits token.", field);
      field.focus();
      return;
    }
    const button = $("sign-in-button");
    button.disabled = true;
    try {
      await api(token, "/v1/credits"); // stored only once the service accepts it
    } catch (error) {
      showError("token-error", signInMessage(error), field);
      field.focus();
      return;
    } finally {
      button.disabled = false;
    }
    signedIn = token;
    try {
      sessionStorage.setItem(TOKEN_KEY, token);
    } catch {
      /* storage disabled: signed in until this page is left */
    }
    field.value = "";
    status("");
    showSignedIn();
    await refresh(token);
    $("balance-title").focus();
  }

  // --- buying ------------------------------------------------------------------------------

  function newIdempotencyKey() {
    if (crypto.randomUUID) return crypto.randomUUID();
    // randomUUID needs a secure context; getRandomValues does not (a UUID v4 all the same).
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const hex = Array.from(b, (v) => v.toString(16).padStart(2, "0")).join("");
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  /** What the customer typed, as JSON: the service checks it and words any refusal. */
  function purchaseBody(field) {
    // Text that is not a number reads as "" from a number input: "" is still not an integer.
    if (field.validity.badInput) return { credits: field.value };
    const trimmed = field.value.trim();
    if (trimmed === "") return {};
    const value = Number(trimmed);
    return { credits: Number.isFinite(value) ? value : trimmed };
  }

  async function buy(event) {
    event.preventDefault();
    const token = signedIn;
    if (!token) return;
    const field = $("credits");
    const button = $("buy-button");
    showError("credits-error", "", field);
    showError("buy-error", "");
    button.disabled = true;
    let answer;
    try {
      answer = await api(token, "/v1/credits/purchase", {
        method: "POST",
        headers: { "Content-Type": "application/json", "Idempotency-Key": newIdempotencyKey() },
        body: JSON.stringify(purchaseBody(field)),
      });
    } catch (error) {
      button.disabled = false;
      if (error.status === 401) {
        signOut(signInMessage(error));
        return;
      }
      const fieldErrors = error.errors.credits;
      if (Array.isArray(fieldErrors) && fieldErrors.length > 0) {
        showError("credits-error", fieldErrors.join(" "), field);
        field.focus();
      } else {
        showError("buy-error", error.message);
      }
      return;
    }
    let target;
    try {
      target = new URL(answer.checkout_url);
    } catch {
      target = null;
    }
    if (!target || (target.protocol !== "https:" && target.protocol !== "http:")) {
      button.disabled = false;
      showError("buy-error", "The payment page could not be opened. Try again in a moment.");
      return;
    }
    try {
      sessionStorage.setItem(CHECKOUT_KEY, answer.session_id);
    } catch {
      /* the page will not watch for this purchase; Refresh still shows it */
    }
    status("Taking you to the payment page…");
    window.location.assign(target.href);
  }

  // --- start -------------------------------------------------------------------------------

  function start() {
    $("sign-in").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", () => signOut(""));
    $("buy").addEventListener("submit", buy);
    $("refresh").addEventListener("click", () => {
      const token = signedIn;
      if (token) refresh(token).then((loaded) => loaded && status("Updated."));
    });
    $("more-purchases").addEventListener("click", () => {
      const token = signedIn;
      if (token) loadPurchases(token, true).catch((error) => status(error.message));
    });
    $("balance-title").tabIndex = -1;
    // Back from Checkout with the browser's Back button: the page comes from the back/forward
    // cache as it was left, its button still disabled.
    window.addEventListener("pageshow", (event) => {
      if (!event.persisted) return;
      $("buy-button").disabled = false;
      status("");
    });
    if (window.location.hash === "#cancelled") {
      // The link of /checkout/cancel: that Checkout will not be paid, so no need to watch it.
      try {
        sessionStorage.removeItem(CHECKOUT_KEY);
      } catch {
        /* nothing was stored */
      }
      history.replaceState(null, "", window.location.pathname);
      status("Purchase cancelled: nothing was charged.");
    }

    signedIn = storedToken();
    if (!signedIn) {
      $("sign-in-section").hidden = false;
      return;
    }
    showSignedIn();
    const token = signedIn;
    refresh(token).then((purchases) => watchCheckout(token, purchases));
  }

  start();
})();
