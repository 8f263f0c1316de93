// Calls to main's API from the page: the API key (asked for only after a 401) and the pickers' data.

const KEY_STORE = "uvDemoApiKey";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export class Api {
  constructor(onKeyNeeded) {
    this.onKeyNeeded = onKeyNeeded;
    this.key = sessionStorage.getItem(KEY_STORE) || "";
  }

  setKey(key) {
    this.key = key.trim();
    if (this.key) sessionStorage.setItem(KEY_STORE, this.key);
    else sessionStorage.removeItem(KEY_STORE);
  }

  headers(extra = {}) {
    return this.key ? { ...extra, Authorization: `Bearer ${this.key}` } : extra;
  }

  async call(method, path, body) {
    const init = { method, headers: this.headers(body ? { "Content-Type": "application/json" } : {}) };
    if (body !== undefined) init.body = JSON.stringify(body);
    const r = await fetch(path, init);
    if (r.status === 401) {
      this.onKeyNeeded();
      throw new ApiError(401, "main needs its API key: enter it above and connect again");
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
    if (this.key) url.searchParams.set("api_key", this.key);
    return url.toString();
  }
}
