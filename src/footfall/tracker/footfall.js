/*! footfall.js: the browser tracker of Footfall (Apache-2.0). One file, no
 * dependencies. Options, events and properties: docs/tracker.md. */
(() => {
  "use strict";
  const VERSION = "0.1.0";
  const win = window;
  const doc = document;
  if (win.footfall && win.footfall.version) return; // loaded twice: keep the first

  const PREFIX = "ff_";
  const MILESTONES = [25, 50, 75, 100];
  const CLICKABLE = "a,button,[data-ff],[role=button],input[type=submit],input[type=button],input[type=reset]";
  // Never read: what people type, and what a site asked us not to look at.
  const UNREAD = "[data-ff-ignore],input,textarea,select,script,style,[contenteditable]:not([contenteditable=false])";
  const RAGE_CLICKS = 3;
  const RAGE_MS = 1000;
  const RAGE_PX = 30;
  const MAX_TEXT = 100;
  // Browsers refuse beacons once a page has about 64 KB of them pending.
  const BEACON_BYTES = 60000;
  const DEFAULTS = {
    host: "",
    flushInterval: 3000,
    flushAt: 20,
    maxBatch: 100,
    maxQueue: 500,
    maxBackoff: 60000,
    persistence: "localStorage", // or "cookie" (ids only) or "memory"
    cookieDomain: "",
    requireConsent: false,
    autoPage: true,
    autoCapture: true,
    minHoverMs: 300,
    minVisibleMs: 500,
  };

  const script = doc.currentScript;
  const scriptOrigin = script && script.src ? new URL(script.src).origin : "";
  const now = () => performance.now();
  const warn = (...args) => console.warn("footfall.js:", ...args);

  const uuid = () => {
    if (crypto.randomUUID) return crypto.randomUUID();
    const bytes = crypto.getRandomValues(new Uint8Array(16)); // a version 4 UUID
    bytes[6] = (bytes[6] & 15) | 64;
    bytes[8] = (bytes[8] & 63) | 128;
    const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    return [hex.slice(0, 8), hex.slice(8, 12), hex.slice(12, 16), hex.slice(16, 20), hex.slice(20)].join("-");
  };

  // Storage can be blocked or full; the tracker then carries on in memory.
  const local = {
    get: (key) => { try { return localStorage.getItem(key); } catch { return null; } },
    set: (key, value) => {
      try { value == null ? localStorage.removeItem(key) : localStorage.setItem(key, value); } catch { /* in memory only */ }
    },
  };
  const cookies = {
    get: (key) => {
      const match = doc.cookie.match(new RegExp(`(?:^|; )${key}=([^;]*)`));
      return match ? decodeURIComponent(match[1]) : null;
    },
    set: (key, value) => {
      doc.cookie = `${key}=${encodeURIComponent(value ?? "")}; path=/; SameSite=Lax; max-age=${value == null ? 0 : 31536000}` +
        (options.cookieDomain ? `; domain=${options.cookieDomain}` : "") + (location.protocol === "https:" ? "; Secure" : "");
    },
  };

  let options = null;
  let writeKey = "";
  let anonymousId = null;
  let userId = null;
  let consent = "granted"; // "granted", "pending" (requireConsent, no answer yet) or "denied"
  let queue = [];
  const queueKey = `${PREFIX}q_${uuid().slice(0, 8)}`; // this page's offline queue
  let timer = 0;
  let sending = null;
  let attempt = 0;
  let blockedUntil = 0;

  // -- consent and persistence

  const persists = () => consent === "granted" && options.persistence !== "memory";
  const idStore = () => (options.persistence === "cookie" ? cookies : local);

  function saveIds() {
    if (!persists()) return;
    idStore().set(`${PREFIX}aid`, anonymousId);
    idStore().set(`${PREFIX}uid`, userId);
  }

  function loadIds() {
    if (persists()) {
      anonymousId = idStore().get(`${PREFIX}aid`) || anonymousId;
      userId = idStore().get(`${PREFIX}uid`) || userId;
    }
    anonymousId = anonymousId || uuid();
    saveIds();
  }

  function saveQueue() {
    if (persists()) local.set(queueKey, queue.length ? JSON.stringify(queue) : null);
  }

  // Take over what earlier pages left unsent (offline, or closed mid-retry).
  // Two tabs may both send an event; the collector keeps one per messageId.
  function claimQueues() {
    if (!persists()) return;
    const claimed = [];
    let keys = [];
    try { keys = Object.keys(localStorage); } catch { /* blocked: nothing to claim */ }
    for (const key of keys) {
      if (!key.startsWith(`${PREFIX}q_`) || key === queueKey) continue;
      try { claimed.push(...JSON.parse(local.get(key))); } catch { /* damaged: dropped */ }
      local.set(key, null);
    }
    const seen = new Set();
    queue = [...claimed, ...queue].filter((m) => m && !seen.has(m.messageId) && seen.add(m.messageId));
    trim();
    saveQueue();
  }

  function trim() {
    if (queue.length > options.maxQueue) queue.splice(0, queue.length - options.maxQueue);
  }

  // -- messages

  const locationKey = () => location.pathname + location.search;

  // URLs without their fragment: it can hold tokens (OAuth) and is not a page.
  const pageContext = (referrer) => ({
    path: location.pathname,
    url: location.origin + location.pathname + location.search,
    search: location.search,
    title: doc.title,
    referrer: referrer || doc.referrer,
  });

  function context(page) {
    let timezone;
    try { timezone = Intl.DateTimeFormat().resolvedOptions().timeZone; } catch { /* not reported */ }
    return {
      page: page || (current ? current.context : pageContext()),
      userAgent: navigator.userAgent,
      locale: navigator.language,
      timezone,
      screen: { width: screen.width, height: screen.height, density: win.devicePixelRatio },
      library: { name: "footfall.js", version: VERSION },
    };
  }

  function message(type, fields, page) {
    const built = { type, messageId: uuid(), anonymousId, timestamp: new Date().toISOString(), context: context(page), ...fields };
    if (userId && !built.userId) built.userId = userId;
    return built;
  }

  function enqueue(built) {
    if (consent === "denied") return;
    queue.push(built);
    trim();
    saveQueue();
    if (queue.length >= options.flushAt) flush();
    else schedule(options.flushInterval);
  }

  const emit = (event, signal, properties, page = current) =>
    enqueue(message("track", { event, properties: { signal, ...properties } }, page && page.context));

  // -- sending

  const endpoint = () => `${options.host}/v1/batch`;
  // text/plain with the key in the body: a "simple" request, so no CORS preflight.
  const payload = (batch) => JSON.stringify({ batch, sentAt: new Date().toISOString(), writeKey });

  function schedule(delay) {
    if (!timer) timer = setTimeout(() => { timer = 0; flush(); }, delay);
  }

  function flush() {
    if (!options) return Promise.resolve();
    if (!sending) sending = drain().finally(() => { sending = null; });
    return sending;
  }

  async function drain() {
    clearTimeout(timer);
    timer = 0;
    while (consent === "granted" && queue.length) {
      const wait = blockedUntil - Date.now();
      if (wait > 0) return schedule(wait);
      const batch = queue.slice(0, options.maxBatch);
      const outcome = await post(batch);
      if (typeof outcome === "number") { // retry later, the same messages with the same ids
        attempt += 1;
        blockedUntil = Date.now() + outcome;
        return schedule(outcome);
      }
      attempt = 0;
      const done = new Set(batch);
      queue = queue.filter((m) => !done.has(m));
      saveQueue();
    }
  }

  // "sent", "dropped" (refused for good), or the milliseconds to wait before a retry.
  async function post(batch) {
    const body = payload(batch);
    let response;
    try {
      response = await fetch(endpoint(), {
        method: "POST", body, credentials: "omit", keepalive: new Blob([body]).size < BEACON_BYTES,
      });
    } catch {
      return backoff(); // offline or unreachable
    }
    if (response.ok) return "sent";
    if (response.status === 429 || response.status >= 500) return backoff(response.headers.get("Retry-After"));
    warn(`the collector refused ${batch.length} events (HTTP ${response.status}); they are dropped:`, await response.text().catch(() => ""));
    return "dropped";
  }

  function backoff(retryAfter) {
    const seconds = Number(retryAfter);
    if (seconds > 0) return Math.min(seconds * 1000, options.maxBackoff);
    return Math.min(options.maxBackoff, 1000 * 2 ** attempt) * (0.5 + Math.random() / 2);
  }

  // The page is going away: hand everything queued to the browser, which sends
  // it after the page is gone. Offline, or what it will not take, stays queued
  // (in localStorage) for the next page.
  function beacon() {
    if (!options || consent !== "granted" || !queue.length || !navigator.onLine) return;
    if (!navigator.sendBeacon) return void flush();
    let rest = queue;
    while (rest.length) {
      let count = Math.min(rest.length, options.maxBatch);
      let body = payload(rest.slice(0, count));
      while (count > 1 && new Blob([body]).size > BEACON_BYTES) {
        count = Math.ceil(count / 2);
        body = payload(rest.slice(0, count));
      }
      if (!navigator.sendBeacon(endpoint(), body)) break;
      rest = rest.slice(count);
    }
    queue = rest;
    saveQueue();
  }

  // -- the visible clock: time only advances while the page is visible

  let visibleMs = 0;
  let visibleSince = doc.visibilityState === "hidden" ? null : now();
  const clock = () => visibleMs + (visibleSince === null ? 0 : now() - visibleSince);

  function onVisibility() {
    if (doc.visibilityState === "hidden") {
      if (visibleSince !== null) visibleMs += now() - visibleSince;
      visibleSince = null;
      beacon();
    } else if (visibleSince === null) {
      visibleSince = now();
    }
  }

  // -- pages: views, leaves with dwell, scroll depth

  let current = null; // the page on screen
  let lastUrl = "";
  let routeTimer = 0;

  function open() {
    const page = pageContext(lastUrl);
    lastUrl = page.url;
    current = { key: locationKey(), context: page, start: clock(), maxScroll: 0, marks: new Set(), sections: new Map() };
  }

  function view(name, properties) {
    clearTimeout(routeTimer);
    if (current && current.key !== locationKey()) leave();
    if (!current) open();
    const fields = { properties: { signal: "passive", ...properties } };
    if (name) fields.name = String(name);
    enqueue(message("page", fields, current.context));
    if (!options.autoCapture) return;
    const measure = () => {
      measureScroll();
      watchSections();
    };
    // Called from <head>, the page has no height yet: measure once it has.
    if (doc.readyState === "loading") doc.addEventListener("DOMContentLoaded", measure, { once: true });
    else measure();
  }

  function leave() {
    if (!current) return;
    measureScroll(); // a scroll not measured yet still counts
    endRage();
    hovering.forEach((_, element) => endHover(element));
    const page = current;
    const at = clock();
    shown.forEach((since, element) => {
      addSection(element, at - since);
      shown.set(element, at);
    });
    page.sections.forEach((ms, section) => {
      if (ms >= options.minVisibleMs) emit("section_view", "passive", { section, visible_ms: Math.round(ms) }, page);
    });
    emit("page_leave", "passive", { dwell_ms: Math.round(at - page.start), max_scroll: page.maxScroll }, page);
    current = null;
  }

  // A history change: leave the old page now, view the new one once the app has
  // rendered it (and set its title).
  function route() {
    if (current && current.key === locationKey()) return;
    leave();
    clearTimeout(routeTimer);
    routeTimer = setTimeout(() => view(), 0);
  }

  function wrapHistory(method) {
    const original = history[method];
    history[method] = function (...args) {
      const result = original.apply(this, args);
      route();
      return result;
    };
  }

  function measureScroll() {
    if (!current) return;
    const height = Math.max(doc.documentElement.scrollHeight, doc.body ? doc.body.scrollHeight : 0);
    const depth = height ? Math.min(100, Math.ceil(((win.scrollY + win.innerHeight) / height) * 100)) : 100;
    current.maxScroll = Math.max(current.maxScroll, depth);
    for (const mark of MILESTONES) {
      if (depth >= mark && !current.marks.has(mark)) {
        current.marks.add(mark);
        emit("scroll", "passive", { depth: mark });
      }
    }
  }

  // -- elements: what is said about them, never what was typed into them

  const ignored = (element) => !!element.closest("[data-ff-ignore]") || element.matches("input[type=password]");

  function textOf(element) {
    if (element.matches(UNREAD)) return "";
    let text = "";
    const walk = (node) => {
      for (const child of node.childNodes) {
        if (text.length > MAX_TEXT) return;
        if (child.nodeType === 3) text += child.nodeValue;
        else if (child.nodeType === 1 && !child.matches(UNREAD)) {
          text += " ";
          walk(child);
        }
      }
    };
    walk(element);
    return text.replace(/\s+/g, " ").trim().slice(0, MAX_TEXT) || element.getAttribute("aria-label") || "";
  }

  // A short CSS path, up to the nearest id. Attributes, not properties: a form's
  // fields can shadow its properties (a field named "id" becomes form.id).
  function selector(element) {
    const parts = [];
    for (let node = element; node && node.nodeType === 1 && parts.length < 5; node = node.parentElement) {
      const id = node.getAttribute("id");
      if (id) {
        parts.unshift(`#${CSS.escape(id)}`);
        break;
      }
      const tag = node instanceof HTMLFormElement ? "form" : node.localName;
      let part = tag + (node.getAttribute("class") || "").trim().split(/\s+/).filter(Boolean).slice(0, 2).map((c) => `.${CSS.escape(c)}`).join("");
      const parent = node.parentElement;
      if (parent) {
        const same = Array.from(parent.children).filter((child) => child.localName === tag);
        if (same.length > 1) part += `:nth-of-type(${same.indexOf(node) + 1})`;
      }
      parts.unshift(part);
      if (node === doc.body) break;
    }
    return parts.join(" > ");
  }

  function describe(element) {
    const path = selector(element);
    const described = { element: element.getAttribute("data-ff") || path, tag: element.localName, selector: path };
    const text = textOf(element);
    if (text) described.text = text;
    if (element instanceof HTMLAnchorElement && element.href) described.href = element.href;
    return described;
  }

  // -- clicks, rage clicks, form submits

  let recent = [];
  let rage = null;
  let rageTimer = 0;

  function onClick(event) {
    const target = event.target;
    if (!(target instanceof Element) || ignored(target)) return;
    const root = doc.documentElement;
    // A click from the keyboard (detail 0) has no position on the page.
    const geometry = event.detail > 0 ? { x: Math.round(event.pageX), y: Math.round(event.pageY) } : {};
    Object.assign(geometry, {
      viewport_width: win.innerWidth, viewport_height: win.innerHeight, page_width: root.scrollWidth, page_height: root.scrollHeight,
    });
    const element = target.closest(CLICKABLE);
    noteRage(event, element || target, geometry);
    if (element && !ignored(element)) emit("click", "active", { ...describe(element), ...geometry });
  }

  function noteRage(event, element, geometry) {
    if (geometry.x === undefined) return;
    const { x, y } = geometry;
    const t = event.timeStamp;
    if (rage && Math.hypot(rage.x - x, rage.y - y) > RAGE_PX) endRage(); // a click elsewhere ends the burst
    recent = recent.filter((c) => t - c.t <= RAGE_MS && Math.hypot(c.x - x, c.y - y) <= RAGE_PX);
    recent.push({ t, x, y });
    if (recent.length < RAGE_CLICKS) return;
    if (rage) rage.clicks += 1;
    else rage = { ...describe(element), ...geometry, clicks: recent.length };
    clearTimeout(rageTimer);
    rageTimer = setTimeout(endRage, RAGE_MS); // the burst ends a second after its last click
  }

  function endRage() {
    clearTimeout(rageTimer);
    if (rage) emit("rage_click", "active", rage);
    rage = null;
    recent = [];
  }

  function onSubmit(event) {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || ignored(form)) return;
    const path = selector(form);
    emit("form_submit", "active", {
      form: form.getAttribute("data-ff") || form.getAttribute("id") || form.getAttribute("name") || path,
      selector: path,
      action: form.getAttribute("action") || "",
      method: (form.getAttribute("method") || "get").toLowerCase(),
      fields: form.querySelectorAll("input,select,textarea").length,
    });
  }

  // -- hovers and section visibility

  const hovering = new Map(); // element -> when the pointer came
  const shown = new Map(); // section element -> visible clock when it came into view
  const watched = new WeakSet();
  let observer = null;
  let scanTimer = 0;

  function onOver(event) {
    const element = event.target instanceof Element && event.target.closest("[data-ff-hover]");
    if (element && !hovering.has(element) && !ignored(element)) hovering.set(element, now());
  }

  function onOut(event) {
    const to = event.relatedTarget;
    hovering.forEach((_, element) => {
      if (!(to instanceof Node && element.contains(to))) endHover(element);
    });
  }

  function endHover(element) {
    const ms = now() - hovering.get(element);
    hovering.delete(element);
    if (ms >= options.minHoverMs) {
      emit("hover", "passive", {
        ...describe(element), element: element.getAttribute("data-ff-hover") || selector(element), duration_ms: Math.round(ms),
      });
    }
  }

  const sectionName = (element) => element.getAttribute("data-ff-section") || selector(element);

  function addSection(element, ms) {
    if (!current) return;
    const name = sectionName(element);
    current.sections.set(name, (current.sections.get(name) || 0) + ms);
  }

  // Seen: at least half of it in view, or it fills at least half of the viewport.
  function onIntersect(entries) {
    const at = clock();
    for (const entry of entries) {
      const element = entry.target;
      const seen = entry.isIntersecting && (entry.intersectionRatio >= 0.5 || entry.intersectionRect.height >= win.innerHeight / 2);
      if (seen && !shown.has(element)) shown.set(element, at);
      else if (!seen && shown.has(element)) {
        addSection(element, at - shown.get(element));
        shown.delete(element);
      }
    }
  }

  function watchSections() {
    if (!observer) {
      if (!win.IntersectionObserver || !win.MutationObserver) return;
      observer = new IntersectionObserver(onIntersect, { threshold: [0, 0.25, 0.5, 0.75, 1] });
      new MutationObserver(() => {
        clearTimeout(scanTimer);
        scanTimer = setTimeout(watchSections, 100);
      }).observe(doc.documentElement, { childList: true, subtree: true });
    }
    for (const element of doc.querySelectorAll("[data-ff-section]")) {
      if (!watched.has(element) && !ignored(element)) {
        watched.add(element);
        observer.observe(element);
      }
    }
  }

  // -- wiring

  function listen() {
    doc.addEventListener("visibilitychange", onVisibility);
    win.addEventListener("pagehide", () => {
      leave();
      beacon();
    });
    win.addEventListener("pageshow", (event) => {
      if (event.persisted && options.autoPage) view(); // back from the back-forward cache
    });
    win.addEventListener("online", () => {
      attempt = 0;
      blockedUntil = 0;
      flush();
    });
    if (options.autoPage) {
      wrapHistory("pushState");
      wrapHistory("replaceState");
      win.addEventListener("popstate", route);
    }
    if (!options.autoCapture) return;
    let scrollQueued = false;
    win.addEventListener("scroll", () => {
      if (scrollQueued) return;
      scrollQueued = true;
      setTimeout(() => {
        scrollQueued = false;
        measureScroll();
      }, 100);
    }, { passive: true });
    // Capture phase: a page that stops propagation still gets its clicks counted.
    doc.addEventListener("click", onClick, true);
    doc.addEventListener("submit", onSubmit, true);
    doc.addEventListener("mouseover", onOver, true);
    doc.addEventListener("mouseout", onOut, true);
  }

  const ready = (method) => {
    if (!options) warn(`call footfall.init(writeKey) before footfall.${method}()`);
    return !!options;
  };

  const api = {
    version: VERSION,

    init(key, settings = {}) {
      if (options) return warn("init was called twice; the second call is ignored");
      if (typeof key !== "string" || !key) return warn("init needs the write key of a Footfall source");
      options = { ...DEFAULTS, ...settings };
      options.host = String(options.host || scriptOrigin || location.origin).replace(/\/+$/, "");
      writeKey = key;
      const answer = local.get(`${PREFIX}consent`);
      consent = answer === "0" ? "denied" : answer === "1" || !options.requireConsent ? "granted" : "pending";
      loadIds();
      claimQueues();
      flush(); // what earlier pages left
      listen();
      if (options.autoPage) view();
    },

    track(event, properties) {
      if (!ready("track")) return;
      if (typeof event !== "string" || !event.trim()) return warn("track needs an event name");
      enqueue(message("track", { event, properties: { signal: "active", ...properties } }));
    },

    page(name, properties) {
      if (ready("page")) view(name, properties);
    },

    identify(id, traits) {
      if (!ready("identify")) return;
      if (id !== undefined && id !== null && typeof id === "object") [id, traits] = [null, id]; // identify(traits)
      if (id !== undefined && id !== null && id !== "") {
        userId = String(id);
        saveIds();
      }
      enqueue(message("identify", { traits: { ...traits } }));
    },

    alias(to, from) {
      if (!ready("alias")) return;
      if (to === undefined || to === null || to === "") return warn("alias needs the new user id");
      enqueue(message("alias", { userId: String(to), previousId: String(from ?? userId ?? anonymousId) }));
    },

    reset() {
      if (!ready("reset")) return;
      userId = null;
      anonymousId = uuid();
      if (persists()) idStore().set(`${PREFIX}uid`, null);
      saveIds();
    },

    optOut() {
      local.set(`${PREFIX}consent`, "0");
      if (!options) return;
      consent = "denied";
      queue = [];
      clearTimeout(timer);
      local.set(queueKey, null);
      idStore().set(`${PREFIX}aid`, null);
      idStore().set(`${PREFIX}uid`, null);
    },

    optIn() {
      local.set(`${PREFIX}consent`, "1");
      if (!options) return;
      consent = "granted";
      saveIds();
      claimQueues();
      flush();
    },

    consent: () => consent,
    anonymousId: () => anonymousId,
    userId: () => userId,
    flush: () => flush(),
  };

  // Calls made before the script loaded, by the snippet's stub (see docs/tracker.md).
  const early = win.footfall && Array.isArray(win.footfall.q) ? win.footfall.q : [];
  win.footfall = api;
  for (const [method, args] of early) if (typeof api[method] === "function") api[method](...args);
})();
