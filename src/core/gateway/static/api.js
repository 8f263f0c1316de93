// Calls to main's API from the page. When main needs credentials (a 401), the page asks for an
// API key once, swaps it for a short-lived client token (POST /api/tokens) and forgets the key:
// only the token (10 minutes by default) is kept, in sessionStorage, and used for every call and
// the WebSocket (?token=). An expired or revoked token asks for the key again.

const TOKEN_STORE = "uvDemoToken";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export class Api {
  constructor(onKeyNeeded) {
    this.onKeyNeeded = onKeyNeeded;
    this.token = "";
    this.expiresAt = 0;
    try {
      const saved = JSON.parse(sessionStorage.getItem(TOKEN_STORE) || "null");
      if (saved && saved.expires_at * 1000 > Date.now()) this.remember(saved.token, saved.expires_at);
    } catch (_) {
      sessionStorage.removeItem(TOKEN_STORE);
    }
  }

  remember(token, expiresAt) {
    this.token = token;
    this.expiresAt = expiresAt;
    if (token) sessionStorage.setItem(TOKEN_STORE, JSON.stringify({ token, expires_at: expiresAt }));
    else sessionStorage.removeItem(TOKEN_STORE);
  }

  // Swap an API key for a client token; the key itself is never stored.
  async setKey(key) {
    key = key.trim();
    this.remember("", 0);
    if (!key) return;
    const r = await fetch("/api/tokens", {
      method: "POST",
      headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
      body: "{}",
    });
    if (!r.ok) {
      this.onKeyNeeded();
      throw new ApiError(r.status, `that key was refused (HTTP ${r.status}); check it and enter it again`);
    }
    const doc = await r.json();
    this.remember(doc.token, doc.expires_at);
  }

  headers(extra = {}) {
    return this.token ? { ...extra, Authorization: `Bearer ${this.token}` } : extra;
  }

  async call(method, path, body) {
    const init = { method, headers: this.headers(body ? { "Content-Type": "application/json" } : {}) };
    if (body !== undefined) init.body = JSON.stringify(body);
    const r = await fetch(path, init);
    if (r.status === 401) {
      this.remember("", 0);
      this.onKeyNeeded();
      throw new ApiError(401, "main needs an API key: enter it above (it is swapped for a 10-minute token)");
    }
    if (!r.ok) {
      let message = `${method} ${path}: HTTP ${r.status}`;
      try {
        const doc = await r.json();
        if (doc.error && doc.error.message) message += `: ${doc.error.message}`;
      } catch (_) {
        // not JSON: the status says enough
      }
      throw new ApiError(r.status, message);
    }
    return r.status === 204 ? null : r.json();
  }

  agents() {
    return this.call("GET", "/api/agents");
  }

  voices() {
    return this.call("GET", "/v1/audio/voices");
  }

  // The WebSocket URL of /ws/voice on this origin (a browser can't set headers on a WebSocket).
  voiceSocketUrl() {
    const url = new URL("/ws/voice", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    if (this.token) url.searchParams.set("token", this.token);
    return url.toString();
  }
}
