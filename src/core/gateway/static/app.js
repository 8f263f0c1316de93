// The demo page's controller: pickers, connect/disconnect, mute, push-to-talk, and the events of
// either transport into the panels. `window.uvDemo.state` is a read-only snapshot for tests.
//
// Query parameters preset the controls: transport=ws|webrtc, agent, voice, language,
// aec/agc/ns=0|1 (echo cancellation, auto gain, noise suppression), partials=0|1, ptt=0|1.

import { Api } from "./api.js";
import { AudioGraph, openMicrophone } from "./audio.js";
import { Panels } from "./panels.js";
import { RtcTransport } from "./rtc-transport.js";
import { WsTransport } from "./ws-transport.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const AUDIBLE = 0.003;

const state = {
  status: "idle",
  transport: "",
  sessionId: "",
  agent: "",
  events: {},
  partialTranscripts: 0,
  finalTranscripts: [],
  assistantTexts: [],
  llmDeltas: 0,
  replyFrames: 0,
  replyBytes: 0,
  replySamples: 0,
  replySampleRate: 0,
  latency: [],
  browserJitterBuffer: [], // per latency report: the WebRTC reply's jitter buffer in the browser (s), null on WS
  outcomes: [],
  flushes: [],
  errors: [],
  rtc: {},
  lastError: "",
  micStartedMs: null, // performance.now() when the microphone opened (the fake mic's file starts then)
};

const panels = new Panels();
const audio = new AudioGraph();
const api = new Api(() => {
  $("apikey-row").hidden = false;
  $("apikey").focus();
});
let transport = null;
let micStream = null;
let agents = [];
let voices = [];
let muted = false;
let talking = false;
let currentText = "";
let turns = 0;

function setStatus(status, text) {
  state.status = status;
  panels.setStatus(status, text);
  const live = status === "connected";
  $("connect").textContent = status === "idle" || status === "error" ? "Connect" : "Disconnect";
  $("connect").disabled = status === "connecting";
  for (const id of ["mute", "interrupt", "talk", "say"]) $(id).disabled = !live;
  for (const input of document.querySelectorAll("#controls select, input[name=transport], details input")) {
    input.disabled = status !== "idle" && status !== "error";
  }
}

function micShouldBeOpen() {
  return !muted && (!$("ptt").checked || talking);
}

function applyMic() {
  if (transport) transport.setMicOpen(micShouldBeOpen());
  $("mute").setAttribute("aria-pressed", String(muted));
  $("mute").textContent = muted ? "Unmute" : "Mute";
}

// ---- events from the server (same JSON on both transports) ----

function onEvent(event) {
  state.events[event.type] = (state.events[event.type] || 0) + 1;
  switch (event.type) {
    case "ready":
      state.sessionId = event.session_id;
      state.agent = event.agent;
      panels.log("ready", `session ${event.session_id}, agent ${event.agent}, voice ${event.voice || "default"}`);
      return;
    case "speech_started":
      panels.userSpeaking(true);
      break;
    case "transcript":
      if (event.final) {
        state.finalTranscripts.push(event.text);
        panels.userSpeaking(false);
        panels.userFinal(event.text);
        panels.log("transcript", event.text);
      } else {
        state.partialTranscripts += 1;
        panels.userPartial(event.text);
      }
      return;
    case "llm_text":
      state.llmDeltas += 1;
      currentText += event.delta;
      panels.assistantDelta(event.delta);
      return;
    case "flush":
      state.flushes.push({
        turn_id: event.turn_id, replySamples: state.replySamples, audioStarts: state.events.audio_start || 0,
      });
      panels.assistantSpeaking(false);
      break;
    case "latency": {
      // The server's report covers main; the browser adds its own jitter buffer (WebRTC only).
      const browser = transport && transport.takeJitterBuffer ? transport.takeJitterBuffer() : null;
      state.latency.push(event.report);
      state.browserJitterBuffer.push(browser);
      turns += 1;
      panels.latency({ ...event.report, browser_jitter_buffer_s: browser }, state.transport, turns);
      panels.log("latency", `voice-to-voice ${Number(event.report.voice_to_voice_s).toFixed(3)} s`);
      return;
    }
    case "turn_complete":
      state.outcomes.push({ turn_id: event.turn_id, outcome: event.outcome, interrupted: event.interrupted });
      state.assistantTexts.push(currentText);
      currentText = "";
      panels.assistantDone(event.outcome, event.assistant_text);
      panels.log("turn_complete", `${event.outcome}${event.degraded ? " (" + event.degraded + ")" : ""}`);
      return;
    case "error":
      state.errors.push(event);
      panels.log("error", `${event.code}${event.stage ? " [" + event.stage + "]" : ""}: ${event.message}`);
      return;
    default:
      break;
  }
  const { type, ...rest } = event;
  panels.log(type, Object.keys(rest).length ? JSON.stringify(rest) : "");
}

const hooks = {
  onEvent,
  onReplyFrame(bytes) {
    state.replyFrames += 1;
    state.replyBytes += bytes;
  },
  onPlayer(report) {
    state.replySamples = report.played;
    panels.assistantSpeaking(report.playing);
  },
  onMeter(report) {
    state.replySamples = report.audible;
    if (report.level >= AUDIBLE) panels.assistantSpeaking(true);
  },
  onMicLevel(level) {
    panels.micLevel(level);
  },
  onStats(stats) {
    state.rtc = stats;
    if (stats.micLevel !== undefined) panels.micLevel(micShouldBeOpen() ? stats.micLevel : 0);
  },
  onClosed(reason) {
    panels.log("error", reason);
    state.lastError = reason;
    disconnect("error", reason);
  },
};

// ---- connect / disconnect ----

function sessionConfig() {
  const config = { partials: $("partials").checked };
  for (const id of ["agent", "voice", "language"]) if ($(id).value) config[id] = $(id).value;
  return config;
}

async function connect() {
  const kind = document.querySelector("input[name=transport]:checked").value;
  setStatus("connecting", `connecting (${kind === "ws" ? "WebSocket" : "WebRTC"})…`);
  state.transport = kind;
  try {
    await audio.start();
    state.replySampleRate = audio.sampleRate;
    transport = kind === "ws" ? new WsTransport(api, audio, hooks) : new RtcTransport(api, audio, hooks);
    state.replySamples = 0;
    await transport.open(sessionConfig());
    micStream = await openMicrophone({
      echoCancellation: $("aec").checked, autoGainControl: $("agc").checked, noiseSuppression: $("ns").checked,
    });
    state.micStartedMs = performance.now();
    await transport.attachMic(micStream);
    applyMic();
    setStatus("connected", `connected (${kind === "ws" ? "WebSocket" : "WebRTC"})`);
  } catch (e) {
    state.lastError = String(e.message || e);
    panels.log("error", state.lastError);
    await disconnect("error", state.lastError);
  }
}

async function disconnect(status = "idle", text = "disconnected") {
  const closing = transport;
  transport = null;
  if (micStream) micStream.getTracks().forEach((t) => t.stop());
  micStream = null;
  if (closing) await closing.close();
  audio.release();
  talking = false;
  panels.reset();
  setStatus(status, status === "error" ? `error: ${text}` : text);
}

// ---- pickers ----

function option(value, text, selected = false) {
  const o = new Option(text, value, selected, selected);
  return o;
}

function fillVoices() {
  const agent = agents.find((a) => a.name === $("agent").value);
  const language = $("language").value;
  const keep = $("voice").value || params.get("voice") || "";
  const list = voices.filter((v) => (!agent || !agent.tts_engine || v.engine === agent.tts_engine)
    && (!language || (v.languages || []).some((l) => l.split("-")[0] === language)));
  $("voice").replaceChildren(option("", "agent's voice"), ...list.map((v) => option(
    v.id, `${v.id}${v.gender ? " (" + v.gender + ")" : ""}`, v.id === keep)));
}

async function loadPickers() {
  try {
    const doc = await api.agents();
    agents = doc.agents;
    const wanted = params.get("agent") || doc.default;
    $("agent").replaceChildren(...agents.map((a) => {
      const o = option(a.name, a.name, a.name === wanted);
      o.title = a.description || "";
      return o;
    }));
  } catch (e) {
    panels.log("error", `agents: ${e.message}`);
  }
  try {
    voices = (await api.voices()).voices || [];
  } catch (e) {
    panels.log("error", `voices: ${e.message}`);
  }
  const languages = new Set(agents.map((a) => a.language).filter(Boolean));
  for (const v of voices) for (const l of v.languages || []) languages.add(l.split("-")[0]);
  const wanted = params.get("language") || "";
  $("language").replaceChildren(option("", "agent's language"), ...[...languages].sort().map((l) => option(
    l, l, l === wanted)));
  fillVoices();
}

// ---- controls ----

function flag(name, fallback) {
  const value = params.get(name);
  return value === null ? fallback : !["0", "false", "off", "no"].includes(value.toLowerCase());
}

function pttPress(down) {
  if (!transport || !$("ptt").checked || talking === down) return;
  talking = down;
  $("talk").classList.toggle("held", down);
  applyMic();
  if (!down) transport.commit();
}

function bind() {
  const kind = params.get("transport");
  if (kind === "ws" || kind === "webrtc") document.querySelector(`input[name=transport][value=${kind}]`).checked = true;
  for (const id of ["aec", "agc", "ns"]) $(id).checked = flag(id, true);
  $("partials").checked = flag("partials", false);
  $("ptt").checked = flag("ptt", false);
  $("talk").hidden = !$("ptt").checked;

  $("connect").addEventListener("click", () => (transport ? disconnect() : connect()));
  $("mute").addEventListener("click", () => {
    muted = !muted;
    applyMic();
  });
  $("interrupt").addEventListener("click", () => transport && transport.send({ type: "interrupt" }));
  $("ptt").addEventListener("change", () => {
    $("talk").hidden = !$("ptt").checked;
    talking = false;
    applyMic();
  });
  const talk = $("talk");
  talk.addEventListener("pointerdown", (e) => {
    talk.setPointerCapture(e.pointerId);
    pttPress(true);
  });
  for (const type of ["pointerup", "pointercancel"]) talk.addEventListener(type, () => pttPress(false));
  const typing = (e) => e.target instanceof HTMLInputElement && e.target.type === "text";
  window.addEventListener("keydown", (e) => {
    if (e.code === "Space" && !e.repeat && !typing(e) && $("ptt").checked) {
      e.preventDefault();
      pttPress(true);
    }
  });
  window.addEventListener("keyup", (e) => {
    if (e.code === "Space" && !typing(e)) pttPress(false);
  });
  $("say-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("say-text").value.trim();
    if (text && transport) {
      transport.send({ type: "text", text });
      panels.userFinal(`⌨ ${text}`);
      $("say-text").value = "";
    }
  });
  $("agent").addEventListener("change", fillVoices);
  $("language").addEventListener("change", fillVoices);
  $("apikey-row").addEventListener("submit", (e) => e.preventDefault());
  $("apikey").addEventListener("change", async () => {
    const field = $("apikey");
    try {
      await api.setKey(field.value);
      $("apikey-row").hidden = true;
    } catch (e) {
      panels.log("error", e.message);
    } finally {
      field.value = ""; // the key is swapped for a token; the page keeps no copy
    }
    loadPickers();
  });
  window.addEventListener("pagehide", () => transport && transport.close());
}

window.uvDemo = Object.freeze({
  get state() {
    return structuredClone({ ...state, rtc: transport ? transport.stats() : state.rtc });
  },
  log() {
    return panels.entries.map((e) => `${e.at} ${e.kind} ${e.detail}`);
  },
});

bind();
setStatus("idle", "disconnected");
loadPickers();
