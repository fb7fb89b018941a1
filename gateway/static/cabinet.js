// The customer cabinet: plain JavaScript against the gateway's /v1 API, no build step.
// Money is integer kopecks throughout (formatted with integer arithmetic, never floats);
// the server decides every number (limits, the points cap, what is earned).
"use strict";

(() => {
  const TOKEN_KEY = "loyalty.token";
  const LANG_KEY = "loyalty.lang";
  const CARDS = ["tok_ok", "tok_mastercard", "tok_declined", "tok_timeout", "tok_timeout_declined"];
  const VIEWS = ["wallet", "calculator", "points", "shop", "orders"];

  const $ = (selector) => document.querySelector(selector);
  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || "",
    lang: localStorage.getItem(LANG_KEY) || ((navigator.language || "en").toLowerCase().startsWith("ru") ? "ru" : "en"),
    view: "wallet",
    wallet: null,
    statement: [],
    yield: null,
    points: null,
    history: [],
    historyToken: "",
    products: [],
    category: "",
    cart: new Map(), // sku -> quantity
    quote: null,
    pointsToUse: 0,
    orders: [],
    keys: {}, // operation -> {fingerprint, key}: the Idempotency-Key reused while a retry is due
  };

  // --- text ------------------------------------------------------------------------------------

  function t(key, values = {}) {
    const table = window.STRINGS[state.lang] || window.STRINGS.en;
    const text = table[key] ?? window.STRINGS.en[key] ?? key;
    return text.replace(/\{(\w+)\}/g, (_, name) => (name in values ? String(values[name]) : `{${name}}`));
  }

  function group(digits) {
    const separator = state.lang === "ru" ? "\u00a0" : ",";
    return digits.replace(/\B(?=(\d{3})+(?!\d))/g, separator);
  }

  // Kopecks to text, exactly: the remainder first, then an exact division of what is left.
  function money(minor) {
    const negative = minor < 0;
    const absolute = Math.abs(minor);
    const kopecks = absolute % 100;
    const roubles = (absolute - kopecks) / 100;
    const text = `${group(String(roubles))}${state.lang === "ru" ? "," : "."}${String(kopecks).padStart(2, "0")}`;
    return `${negative ? "\u2212" : ""}${text}\u00a0₽`;
  }

  function points(value) {
    return (value < 0 ? "\u2212" : "") + group(String(Math.abs(value)));
  }

  function signedPoints(value) {
    return (value > 0 ? "+" : "") + points(value);
  }

  // "1 234,50" or "1234.5" roubles to kopecks, by string arithmetic; null when not an amount.
  function parseRoubles(text) {
    const match = /^(\d{1,10})(?:[.,](\d{1,2}))?$/.exec(text.replace(/[\s\u00a0]/g, ""));
    if (!match) return null;
    return Number(match[1]) * 100 + Number((match[2] || "0").padEnd(2, "0"));
  }

  function percent(bps) {
    const whole = Math.trunc(bps / 100);
    const rest = bps % 100;
    return rest ? `${whole}${state.lang === "ru" ? "," : "."}${String(rest).padStart(2, "0")}` : String(whole);
  }

  function date(iso, withTime = true) {
    if (!iso) return "";
    const options = withTime ? { dateStyle: "medium", timeStyle: "short" } : { dateStyle: "medium" };
    return new Intl.DateTimeFormat(state.lang === "ru" ? "ru-RU" : "en-GB", options).format(new Date(iso));
  }

  function monthName(yyyyMm) {
    const [year, month] = yyyyMm.split("-").map(Number);
    return new Intl.DateTimeFormat(state.lang === "ru" ? "ru-RU" : "en-GB", { month: "long", year: "numeric" })
      .format(new Date(Date.UTC(year, month - 1, 15)));
  }

  function mechanicText(mechanic) {
    if (!mechanic || mechanic.kind === "NONE") return t("mechanic.none");
    if (mechanic.kind === "INTEREST") return t("mechanic.interest", { rate: percent(mechanic.apr_bps || 0) });
    return t("mechanic.cashback");
  }

  // --- DOM -------------------------------------------------------------------------------------

  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value === false || value === null || value === undefined) continue;
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child !== null && child !== undefined && child !== false) node.append(child);
    }
    return node;
  }

  function figures(target, rows) {
    target.replaceChildren(...rows.flatMap(([label, value, help]) => [
      el("div", { class: "figure" },
        el("dt", { text: label }),
        el("dd", { text: value }),
        help ? el("dd", { class: "help", text: help }) : null),
    ]));
  }

  function say(target, text, kind = "ok") {
    target.textContent = text;
    target.dataset.kind = kind;
  }

  function translate() {
    document.documentElement.lang = state.lang;
    document.title = t("title");
    for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
    for (const button of document.querySelectorAll("[data-lang]")) {
      button.setAttribute("aria-pressed", String(button.dataset.lang === state.lang));
    }
    $("#tabs").setAttribute("aria-label", state.lang === "ru" ? "Разделы" : "Sections");
    for (const select of [$("#top-up-card"), $("#order-card")]) {
      const chosen = select.value || "tok_ok";
      select.replaceChildren(...CARDS.map((card) => el("option", { value: card, text: t(`card.${card}`) })));
      select.value = chosen;
    }
    renderAll();
  }

  // --- the API ---------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, problem) {
      super(problem?.detail || `HTTP ${status}`);
      this.status = status;
      this.problem = problem || {};
      this.reason = this.problem.reason || (status === 0 ? "NETWORK" : `HTTP_${status}`);
    }

    get retryable() {
      return this.status === 0 || this.status === 503 || this.status === 429;
    }

    explain() {
      if (this.status === 0) return t("error.network");
      const known = window.STRINGS[state.lang][`reason.${this.reason}`];
      return known || t("error.generic", { reason: this.reason, detail: this.problem.detail || this.message });
    }
  }

  async function api(method, path, body, key) {
    const headers = { Authorization: `Bearer ${state.token}`, Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (key) headers["Idempotency-Key"] = key;
    let response;
    try {
      response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch {
      throw new ApiError(0, null);
    }
    const json = (response.headers.get("content-type") || "").includes("json") ? await response.json() : null;
    if (response.status === 401) {
      signOut(t("signIn.expired"));
      throw new ApiError(401, json);
    }
    if (!response.ok) throw new ApiError(response.status, json);
    return json;
  }

  // The Idempotency-Key of an operation: kept while the same request may be retried (a 503 or a
  // lost answer), a new one once the previous request had a definite answer.
  function keyFor(operation, fingerprint) {
    const kept = state.keys[operation];
    if (kept && kept.fingerprint === fingerprint) return kept.key;
    const key = `cab-${crypto.randomUUID()}`;
    state.keys[operation] = { fingerprint, key };
    return key;
  }

  function settled(operation, error) {
    if (!error || !error.retryable) delete state.keys[operation];
  }

  // --- session ---------------------------------------------------------------------------------

  function subject(token) {
    try {
      const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(payload)).sub || "";
    } catch {
      return "";
    }
  }

  async function signIn(token) {
    state.token = token.trim();
    try {
      await api("GET", "/v1/points");
    } catch (error) {
      const message = error.status === 403 || error.status === 401 ? t("signIn.bad", { detail: error.problem.detail || error.reason }) : error.explain();
      state.token = "";
      say($("#sign-in-message"), message, "error");
      $("#sign-in").hidden = false;
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, state.token);
    $("#sign-in").hidden = true;
    $("#tabs").hidden = false;
    $("#sign-out").hidden = false;
    const who = $("#who");
    who.hidden = false;
    who.textContent = t("signedInAs", { sub: subject(state.token) });
    show(state.view, false);
  }

  function signOut(message = "") {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = "";
    $("#tabs").hidden = true;
    $("#sign-out").hidden = true;
    $("#who").hidden = true;
    for (const view of VIEWS) $(`#${view}`).hidden = true;
    $("#sign-in").hidden = false;
    say($("#sign-in-message"), message, "error");
  }

  // --- views -----------------------------------------------------------------------------------

  const loaders = {
    wallet: loadWallet,
    calculator: async () => {},
    points: loadPoints,
    shop: loadShop,
    orders: loadOrders,
  };

  function show(view, focus = true) {
    state.view = view;
    for (const name of VIEWS) $(`#${name}`).hidden = name !== view;
    for (const button of document.querySelectorAll("[data-view]")) {
      if (button.dataset.view === view) button.setAttribute("aria-current", "page");
      else button.removeAttribute("aria-current");
    }
    if (focus) $(`#${view}-title`).focus();
    say($("#page-message"), "");
    loaders[view]().catch((error) => {
      if (error.status !== 401) say($("#page-message"), error.explain(), "error");
    });
  }

  function renderAll() {
    if (!state.token) return;
    const who = $("#who");
    if (!who.hidden) who.textContent = t("signedInAs", { sub: subject(state.token) });
    renderWallet();
    renderYield();
    renderPoints();
    renderShop();
    renderOrders();
  }

  // Wallet ---------------------------------------------------------------------------------------

  async function loadWallet() {
    try {
      state.wallet = await api("GET", "/v1/wallet");
      state.statement = (await api("GET", "/v1/wallet/statement?page_size=50")).entries;
    } catch (error) {
      if (error.reason !== "WALLET_NOT_FOUND") throw error;
      state.wallet = null;
      state.statement = [];
    }
    renderWallet();
  }

  function renderWallet() {
    const wallet = state.wallet;
    if (wallet) {
      figures($("#wallet-figures"), [
        [t("wallet.balance"), money(wallet.balance_minor)],
        [t("wallet.available"), money(wallet.available_minor)],
        [t("wallet.held"), money(wallet.held_minor)],
      ]);
      $("#wallet-mechanic").textContent = t("wallet.mechanic", { name: mechanicText(wallet.mechanic) });
    } else {
      $("#wallet-figures").replaceChildren();
      $("#wallet-mechanic").textContent = t("wallet.none");
    }
    const body = $("#statement tbody");
    body.replaceChildren(...state.statement.map((entry) => el("tr", {},
      el("td", { text: date(entry.created_at) }),
      el("td", {}, t(`entry.${entry.type}`), entry.description ? el("span", { class: "help", text: ` — ${entry.description}` }) : null),
      el("td", { class: `num ${entry.amount_minor < 0 ? "minus" : "plus"}`, text: money(entry.amount_minor) }),
      el("td", { class: "num", text: money(entry.balance_after_minor) }))));
    if (!state.statement.length) body.append(el("tr", {}, el("td", { colspan: "4", class: "help", text: t("statement.empty") })));
  }

  async function topUp(event) {
    event.preventDefault();
    const message = $("#top-up-message");
    const amount = parseRoubles($("#top-up-amount").value);
    const card = $("#top-up-card").value;
    if (amount === null || amount <= 0) {
      $("#top-up-amount").setAttribute("aria-invalid", "true");
      say(message, t("topUp.badAmount"), "error");
      return;
    }
    $("#top-up-amount").removeAttribute("aria-invalid");
    const key = keyFor("top-up", `${amount}|${card}`);
    busy(event.submitter, true);
    try {
      const answer = await api("POST", "/v1/wallet/top-ups", { amount_minor: amount, card_token: card }, key);
      settled("top-up");
      if (answer.status === "PENDING") {
        state.keys["top-up"] = { fingerprint: `${amount}|${card}`, key };
        say(message, t("topUp.pending"), "warning");
      } else {
        say(message, t("topUp.done", {
          amount: money(answer.amount_minor),
          card: `${answer.card_brand} •${answer.card_last4}`,
          balance: money(answer.balance_minor),
        }));
      }
      await loadWallet();
    } catch (error) {
      settled("top-up", error);
      say(message, error.explain(), "error");
    } finally {
      busy(event.submitter, false);
    }
  }

  function busy(button, on) {
    if (!button) return;
    button.disabled = on;
    button.setAttribute("aria-busy", String(on));
  }

  // Yield calculator -----------------------------------------------------------------------------

  async function calculate(event) {
    event.preventDefault();
    const message = $("#yield-message");
    const amount = parseRoubles($("#yield-amount").value);
    const months = Number($("#yield-months").value);
    if (amount === null || amount <= 0) {
      say(message, t("topUp.badAmount"), "error");
      return;
    }
    if (!Number.isInteger(months) || months < 1 || months > 120) {
      say(message, t("calc.badMonths"), "error");
      return;
    }
    busy(event.submitter, true);
    try {
      const answer = await api("GET", `/v1/wallet/yield?amount_minor=${amount}&months=${months}`);
      state.yield = { amount, term: months, answer };
      say(message, "");
      renderYield();
    } catch (error) {
      say(message, error.explain(), "error");
    } finally {
      busy(event.submitter, false);
    }
  }

  function renderYield() {
    $("#yield-result").hidden = !state.yield;
    if (!state.yield) return;
    const result = state.yield.answer;
    $("#yield-summary").textContent = t("calc.summary", {
      amount: money(state.yield.amount),
      months: state.yield.term,
      points: points(result.total_points),
      mechanic: mechanicText(result.mechanic),
    });
    let total = 0;
    $("#yield-table tbody").replaceChildren(...result.months.map((month) => {
      total += month.points;
      return el("tr", {},
        el("td", { class: "num", text: String(month.month_number) }),
        el("td", { text: monthName(month.month) }),
        el("td", { class: "num", text: points(month.points) }),
        el("td", { class: "num", text: points(total) }));
    }));
    $("#yield-chart").replaceChildren(chart(result));
  }

  // An SVG bar chart of the points per month; the table above is its text alternative.
  function chart(result) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = (tag, attributes = {}, text = "") => {
      const node = document.createElementNS(ns, tag);
      for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
      if (text) node.textContent = text;
      return node;
    };
    const months = result.months;
    const width = 640;
    const height = 220;
    const left = 48;
    const bottom = 28;
    const top = 12;
    const highest = Math.max(1, ...months.map((m) => m.points));
    const step = (width - left - 8) / months.length;
    const barWidth = Math.max(2, step * 0.7);
    const label = t("calc.chartLabel", { months: months.length, points: points(result.total_points) });
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label, class: "bars" });
    root.append(svg("title", {}, label));
    const scale = (value) => ((height - bottom - top) * value) / highest;
    root.append(svg("line", { x1: left, y1: height - bottom, x2: width - 4, y2: height - bottom, class: "axis" }));
    root.append(svg("text", { x: left - 6, y: top + 4, "text-anchor": "end", class: "tick" }, points(highest)));
    root.append(svg("text", { x: left - 6, y: height - bottom, "text-anchor": "end", class: "tick" }, "0"));
    const every = Math.ceil(months.length / 12);
    months.forEach((month, index) => {
      const x = left + index * step + (step - barWidth) / 2;
      const barHeight = scale(month.points);
      const bar = svg("rect", { x, y: height - bottom - barHeight, width: barWidth, height: barHeight, class: "bar" });
      bar.append(svg("title", {}, `${monthName(month.month)}: ${points(month.points)}`));
      root.append(bar);
      if (index % every === 0) {
        root.append(svg("text", { x: x + barWidth / 2, y: height - bottom + 16, "text-anchor": "middle", class: "tick" },
          String(month.month_number)));
      }
    });
    return root;
  }

  // Points ---------------------------------------------------------------------------------------

  async function loadPoints() {
    state.points = await api("GET", "/v1/points?expiring_within_days=365");
    const page = await api("GET", "/v1/points/history?page_size=25");
    state.history = page.entries;
    state.historyToken = page.next_page_token;
    renderPoints();
  }

  async function moreHistory() {
    const page = await api("GET", `/v1/points/history?page_size=25&page_token=${encodeURIComponent(state.historyToken)}`);
    state.history = state.history.concat(page.entries);
    state.historyToken = page.next_page_token;
    renderPoints();
  }

  function renderPoints() {
    const balance = state.points;
    if (!balance) return;
    figures($("#points-figures"), [
      [t("points.available"), points(balance.available)],
      [t("points.pending"), points(balance.pending), t("points.pendingHelp")],
      [t("points.held"), points(balance.held)],
    ]);
    $("#expiring-empty").hidden = balance.expiring.length > 0;
    $("#expiring").hidden = balance.expiring.length === 0;
    $("#expiring tbody").replaceChildren(...balance.expiring.map((lot) => el("tr", {},
      el("td", { text: date(lot.expires_at, false) }),
      el("td", { class: "num", text: points(lot.points) }))));
    $("#history tbody").replaceChildren(...state.history.map((entry) => {
      const change = entry.available_delta || entry.pending_delta || entry.held_delta;
      const where = !entry.available_delta && entry.pending_delta ? ` (${t("points.pending").toLowerCase()})` : "";
      const source = entry.source && entry.source !== "UNSPECIFIED" ? t(`source.${entry.source}`) : "";
      return el("tr", {},
        el("td", { text: date(entry.created_at) }),
        el("td", { text: t(`history.${entry.type}`) }),
        el("td", { class: `num ${change < 0 ? "minus" : "plus"}`, text: signedPoints(change) + where }),
        el("td", {}, [source, entry.description].filter(Boolean).join(": "),
          entry.reference && !entry.description.includes(entry.reference)
            ? el("span", { class: "help", text: ` ${entry.reference}` }) : null));
    }));
    $("#history-more").hidden = !state.historyToken;
  }

  // Shop -----------------------------------------------------------------------------------------

  async function loadShop() {
    if (!state.products.length) {
      const products = [];
      let token = "";
      do {
        const page = await api("GET", `/v1/catalog?page_size=1000&page_token=${encodeURIComponent(token)}`);
        products.push(...page.products);
        token = page.next_page_token;
      } while (token);
      state.products = products;
    }
    renderShop();
    if (state.cart.size) await requote();
  }

  function renderShop() {
    const categories = [...new Set(state.products.map((p) => p.category))].sort();
    const select = $("#category");
    select.replaceChildren(el("option", { value: "", text: t("shop.all") }),
      ...categories.map((c) => el("option", { value: c, text: c })));
    select.value = state.category;
    const shown = state.products.filter((p) => !state.category || p.category === state.category);
    $("#products").replaceChildren(...shown.map((product) => el("li", { class: "product" },
      el("span", { class: "product-title", text: product.title }),
      el("span", { class: "help", text: product.category + (product.points_excluded ? ` · ${t("shop.noPoints")}` : "") }),
      el("span", { class: "price", text: money(product.price_minor) }),
      el("button", {
        type: "button",
        class: "secondary",
        "data-sku": product.sku,
        "aria-label": t("shop.addLabel", { title: product.title }),
        text: t("shop.add"),
        onclick: () => addToCart(product.sku),
      }))));
    renderCart();
  }

  function product(sku) {
    return state.products.find((p) => p.sku === sku) || { sku, title: sku, price_minor: 0 };
  }

  function addToCart(sku) {
    state.cart.set(sku, Math.min(99, (state.cart.get(sku) || 0) + 1));
    renderCart();
    requote();
  }

  function setQuantity(sku, quantity) {
    if (quantity > 0) state.cart.set(sku, Math.min(99, quantity));
    else state.cart.delete(sku);
    renderCart();
    requote();
  }

  function renderCart() {
    $("#cart-empty").hidden = state.cart.size > 0;
    $("#checkout").hidden = state.cart.size === 0;
    $("#cart-lines").replaceChildren(...[...state.cart].map(([sku, quantity]) => {
      const item = product(sku);
      const id = `qty-${sku}`;
      return el("li", { class: "cart-line" },
        el("label", { for: id, class: "sr-only", text: t("cart.quantity", { title: item.title }) }),
        el("span", { class: "product-title", text: item.title }),
        el("input", {
          id, type: "number", min: "0", max: "99", step: "1", value: String(quantity), class: "qty",
          onchange: (event) => setQuantity(sku, Math.max(0, Math.trunc(Number(event.target.value) || 0))),
        }),
        el("span", { class: "price", text: money(item.price_minor * quantity) }),
        el("button", {
          type: "button", class: "link", "aria-label": t("cart.removeLabel", { title: item.title }),
          text: t("cart.remove"), onclick: () => setQuantity(sku, 0),
        }));
    }));
    renderQuote();
  }

  let quoteTimer = null;
  let quoteSeq = 0;

  function requote(delay = 0) {
    clearTimeout(quoteTimer);
    if (!state.cart.size) {
      state.quote = null;
      renderQuote();
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      quoteTimer = setTimeout(() => quote().finally(resolve), delay);
    });
  }

  function cartLines() {
    return [...state.cart].map(([sku, quantity]) => ({ sku, quantity }));
  }

  function method() {
    return document.querySelector("input[name=method]:checked").value;
  }

  // The server prices the cart: the points cap (1 ₽ of money a unit, 99 % of the cart, the points
  // available) comes back as max_points, and the slider never goes past it.
  async function quote() {
    const seq = ++quoteSeq;
    $("#checkout").setAttribute("aria-busy", "true");
    try {
      let body = { lines: cartLines(), points_to_use: state.pointsToUse, payment_method: method() };
      let answer;
      try {
        answer = await api("POST", "/v1/checkout/quote", body);
      } catch (error) {
        if (error.reason !== "POINTS_EXCEED_LIMIT" && error.reason !== "INSUFFICIENT_POINTS") throw error;
        body = { ...body, points_to_use: 0 }; // the cart shrank: ask again for its cap
        answer = await api("POST", "/v1/checkout/quote", body);
        const capped = Math.min(state.pointsToUse, answer.max_points);
        if (capped > 0) answer = await api("POST", "/v1/checkout/quote", { ...body, points_to_use: capped });
      }
      if (seq !== quoteSeq) return;
      state.quote = answer;
      state.pointsToUse = answer.points_applied;
      say($("#cart-message"), "");
      renderQuote();
    } catch (error) {
      if (seq === quoteSeq) say($("#cart-message"), error.explain(), "error");
    } finally {
      if (seq === quoteSeq) $("#checkout").removeAttribute("aria-busy");
    }
  }

  function renderQuote() {
    const q = state.quote;
    const slider = $("#points-slider");
    const number = $("#points-number");
    if (!q) {
      $("#quote").replaceChildren();
      $("#explanation").replaceChildren();
      return;
    }
    for (const input of [slider, number]) {
      input.max = String(q.max_points);
      input.value = String(state.pointsToUse);
      input.disabled = q.max_points === 0;
    }
    slider.setAttribute("aria-valuetext", t("cart.pointsValue", { points: points(state.pointsToUse) }));
    $("#points-rule").textContent = t("cart.rule", { max: points(q.max_points), available: points(q.available_points) });
    figures($("#quote"), [
      [t("cart.total"), money(q.total_minor)],
      [t("cart.pointsApplied"), points(q.points_applied)],
      [t("cart.moneyDue"), money(q.money_due_minor)],
      [t("cart.toEarn"), points(q.points_to_earn)],
    ]);
    $("#explanation").replaceChildren(...q.explanation.map((award) => el("li", {},
      `${award.description} `, el("strong", { text: signedPoints(award.points) }))));
  }

  function pointsInput(event, commit) {
    const max = state.quote ? state.quote.max_points : 0;
    const value = Math.max(0, Math.min(max, Math.trunc(Number(event.target.value) || 0)));
    state.pointsToUse = value;
    $("#points-slider").value = String(value);
    $("#points-number").value = String(value);
    $("#points-slider").setAttribute("aria-valuetext", t("cart.pointsValue", { points: points(value) }));
    requote(commit ? 0 : 300);
  }

  async function placeOrder(event) {
    const message = $("#cart-message");
    const payment = method();
    const body = { lines: cartLines(), points_to_use: state.pointsToUse, payment_method: payment };
    if (payment === "CARD") body.card_token = $("#order-card").value;
    const key = keyFor("order", JSON.stringify(body));
    busy(event.currentTarget, true);
    try {
      const order = await api("POST", "/v1/orders", body, key);
      settled("order");
      state.cart.clear();
      state.quote = null;
      state.pointsToUse = 0;
      renderCart();
      say(message, t("cart.placed", {
        id: order.order_id.slice(0, 8),
        status: t(`status.${order.status}`),
        money: money(order.money_paid_minor),
        points: points(order.points_applied),
      }));
      state.orders = [order, ...state.orders.filter((o) => o.order_id !== order.order_id)];
    } catch (error) {
      settled("order", error);
      say(message, error.explain(), "error");
      await requote();
    } finally {
      busy($("#place-order"), false);
    }
  }

  // Orders ---------------------------------------------------------------------------------------

  async function loadOrders() {
    state.orders = (await api("GET", "/v1/orders?page_size=50")).orders;
    renderOrders();
  }

  function renderOrders() {
    $("#orders-empty").hidden = state.orders.length > 0;
    $("#order-list").replaceChildren(...state.orders.map(orderItem));
  }

  function orderItem(order) {
    const heading = `${order.order_id.slice(0, 8)} · ${date(order.created_at)}`;
    const lines = el("ul", { class: "order-lines" }, ...order.lines.map((line) => el("li", {},
      `${line.title} × ${line.quantity}`, line.returned_quantity ? ` (−${line.returned_quantity})` : "",
      el("span", { class: "price", text: money(line.amount_minor) }))));
    const actions = el("div", { class: "actions" });
    if (order.status === "PAID" || order.status === "PENDING") {
      actions.append(el("button", {
        type: "button", class: "danger", "data-action": "cancel", text: t("orders.cancel"),
        onclick: (event) => cancelOrder(order, event.currentTarget),
      }));
    }
    if (order.status === "DELIVERED" || order.status === "PARTIALLY_RETURNED") actions.append(returnForm(order));
    return el("li", { class: "order card", "data-order": order.order_id },
      el("h3", {}, heading, " ", el("span", { class: `status status-${order.status}`, text: t(`status.${order.status}`) })),
      el("p", { text: t("orders.summary", {
        total: money(order.total_minor), points: points(order.points_applied), money: money(order.money_paid_minor),
      }) + (order.points_to_earn && !["CANCELLED", "FAILED", "RETURNED"].includes(order.status)
        ? ` · ${t("orders.earn", { points: points(order.points_to_earn) })}` : "")
        + (order.money_refunded_minor ? ` · ${t("orders.refunded", { money: money(order.money_refunded_minor) })}` : "") }),
      lines, actions);
  }

  async function cancelOrder(order, button) {
    const message = $("#orders-message");
    const key = keyFor(`cancel-${order.order_id}`, order.order_id);
    busy(button, true);
    try {
      const cancelled = await api("POST", `/v1/orders/${encodeURIComponent(order.order_id)}/cancel`, {}, key);
      settled(`cancel-${order.order_id}`);
      say(message, t("orders.cancelled", { id: order.order_id.slice(0, 8) }));
      state.orders = state.orders.map((o) => (o.order_id === cancelled.order_id ? cancelled : o));
      renderOrders();
    } catch (error) {
      settled(`cancel-${order.order_id}`, error);
      say(message, error.explain(), "error");
      busy(button, false);
    }
  }

  function returnForm(order) {
    const returnable = order.lines.filter((line) => line.quantity > line.returned_quantity);
    const form = el("form", { class: "return" },
      ...returnable.map((line) => {
        const id = `ret-${order.order_id}-${line.sku}`;
        return el("div", { class: "field inline" },
          el("label", { for: id, text: t("orders.returnQuantity", { title: line.title }) }),
          el("input", { id, name: line.sku, type: "number", min: "0", max: String(line.quantity - line.returned_quantity), step: "1", value: "0", class: "qty" }));
      }),
      el("button", { type: "submit", class: "secondary", text: t("orders.returnSubmit") }));
    form.addEventListener("submit", (event) => returnItems(event, order, form));
    return el("details", {}, el("summary", { text: t("orders.return") }), form);
  }

  async function returnItems(event, order, form) {
    event.preventDefault();
    const lines = [...form.querySelectorAll("input")]
      .map((input) => ({ sku: input.name, quantity: Math.trunc(Number(input.value) || 0) }))
      .filter((line) => line.quantity > 0);
    if (!lines.length) return;
    const message = $("#orders-message");
    const operation = `return-${order.order_id}`;
    const key = keyFor(operation, JSON.stringify(lines));
    try {
      const answer = await api("POST", `/v1/orders/${encodeURIComponent(order.order_id)}/returns`, { lines }, key);
      settled(operation);
      say(message, t("orders.returned", {
        money: money(answer.order_return.money_refunded_minor), points: points(answer.order_return.points_returned),
      }));
      state.orders = state.orders.map((o) => (o.order_id === answer.order.order_id ? answer.order : o));
      renderOrders();
    } catch (error) {
      settled(operation, error);
      say(message, error.explain(), "error");
    }
  }

  // --- start -----------------------------------------------------------------------------------

  function start() {
    const fromLink = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (fromLink) {
      state.token = decodeURIComponent(fromLink[1]);
      history.replaceState(null, "", location.pathname + location.search); // not left in the address bar
    }
    for (const button of document.querySelectorAll("[data-lang]")) {
      button.addEventListener("click", () => {
        state.lang = button.dataset.lang;
        localStorage.setItem(LANG_KEY, state.lang);
        translate();
      });
    }
    for (const button of document.querySelectorAll("[data-view]")) {
      button.addEventListener("click", () => show(button.dataset.view));
    }
    $("#token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      signIn($("#token").value);
    });
    $("#sign-out").addEventListener("click", () => signOut());
    $("#top-up-form").addEventListener("submit", topUp);
    $("#yield-form").addEventListener("submit", calculate);
    $("#history-more").addEventListener("click", () => moreHistory().catch((error) => say($("#page-message"), error.explain(), "error")));
    $("#category").addEventListener("change", (event) => {
      state.category = event.target.value;
      renderShop();
    });
    $("#points-slider").addEventListener("input", (event) => pointsInput(event, false));
    $("#points-slider").addEventListener("change", (event) => pointsInput(event, true));
    $("#points-number").addEventListener("change", (event) => pointsInput(event, true));
    for (const radio of document.querySelectorAll("input[name=method]")) {
      radio.addEventListener("change", () => {
        $("#order-card-field").hidden = method() !== "CARD";
        requote();
      });
    }
    $("#place-order").addEventListener("click", placeOrder);
    translate();
    if (state.token) signIn(state.token);
  }

  start();
})();
