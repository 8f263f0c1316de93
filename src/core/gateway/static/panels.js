// The page's panels: transcripts, assistant text, speaking indicators, latency bars, event log.

const $ = (id) => document.getElementById(id);
const LOG_MAX = 400;

// Stages of the latency report in pipeline order; `chain` stages follow one another from the end
// of speech to the first reply audio, the others are the transport's own share (docs/webrtc.md):
// two measured in main, and the browser's jitter buffer, which the page adds from getStats.
const STAGES = [
  { key: "vad_s", label: "end of turn", chain: true },
  { key: "stt_s", label: "STT", chain: true },
  { key: "llm_first_token_s", label: "LLM 1st token", chain: true },
  { key: "first_chunk_s", label: "1st sentence", chain: true },
  { key: "tts_first_audio_s", label: "TTS 1st audio", chain: true },
  { key: "send_s", label: "send", chain: true },
  { key: "transport_jitter_s", label: "send buffer", chain: false,
    title: "server: how long the reply's first frame waited in the outgoing track's buffer" },
  { key: "transport_resample_s", label: "resampling", chain: false,
    title: "server: time spent resampling the microphone audio of this turn" },
  { key: "browser_jitter_buffer_s", label: "jitter buffer", chain: false,
    title: "browser: mean time the reply track's audio waited in its jitter buffer since the last turn" },
];

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function ms(seconds) {
  return seconds >= 1 ? `${seconds.toFixed(2)} s` : `${Math.round(seconds * 1000)} ms`;
}

function clock(date) {
  return date.toTimeString().slice(0, 8) + "." + String(date.getMilliseconds()).padStart(3, "0");
}

// How much of the streamed text `written` the user heard, given the server's `heard` text (which
// may be spaced differently: it is joined from spoken chunks); -1 when it is not a prefix.
function heardLength(written, heard) {
  let i = 0;
  for (const ch of heard) {
    if (/\s/.test(ch)) continue;
    while (i < written.length && /\s/.test(written[i])) i++;
    if (written[i] !== ch) return -1;
    i++;
  }
  return i;
}

export class Panels {
  constructor() {
    this.assistantItem = null;
    this.entries = [];
    this.speakingTimer = 0;
    $("clear-log").addEventListener("click", () => {
      $("log").replaceChildren();
    });
  }

  setStatus(state, text) {
    const pill = $("status");
    pill.dataset.state = state;
    pill.textContent = text;
  }

  log(kind, detail = "") {
    const at = new Date();
    this.entries.push({ at: at.toISOString(), kind, detail });
    if (this.entries.length > LOG_MAX * 5) this.entries.splice(0, LOG_MAX);
    const item = el("li", kind === "error" ? "error" : "");
    item.append(el("time", "", clock(at)), el("b", "", kind), document.createTextNode(" " + detail));
    const log = $("log");
    log.prepend(item);
    while (log.childElementCount > LOG_MAX) log.lastElementChild.remove();
  }

  userSpeaking(on) {
    $("user-speaking").classList.toggle("on", on);
  }

  micLevel(level) {
    $("mic-level").value = level;
  }

  userPartial(text) {
    $("user-partial").textContent = text;
  }

  userFinal(text) {
    $("user-partial").textContent = "";
    const list = $("user-transcript");
    list.append(el("li", "", text || "(nothing heard)"));
    list.lastElementChild.scrollIntoView({ block: "nearest" });
  }

  assistantDelta(delta) {
    if (!this.assistantItem) {
      this.assistantItem = el("li", "streaming", "");
      $("assistant-text").append(this.assistantItem);
    }
    this.assistantItem.textContent += delta;
    this.assistantItem.scrollIntoView({ block: "nearest" });
  }

  // `heard` is what the user heard of the reply: after a barge-in the rest is shown struck out.
  assistantDone(outcome, heard = null) {
    const item = this.assistantItem;
    this.assistantItem = null;
    if (!item) return;
    item.classList.remove("streaming");
    item.title = outcome;
    if (outcome !== "ok") item.classList.add(outcome);
    const written = item.textContent;
    const cut = outcome === "interrupted" && heard !== null ? heardLength(written, heard) : -1;
    if (cut >= 0) {
      const unheard = el("s", "unheard", written.slice(cut));
      item.replaceChildren(document.createTextNode(written.slice(0, cut)), unheard);
      unheard.scrollIntoView({ block: "nearest" });
    }
  }

  // On for a moment after each audible report, so the dot does not flicker between words.
  assistantSpeaking(on) {
    const dot = $("assistant-speaking");
    clearTimeout(this.speakingTimer);
    if (on) {
      dot.classList.add("on");
      this.speakingTimer = setTimeout(() => dot.classList.remove("on"), 400);
    } else {
      dot.classList.remove("on");
    }
  }

  latency(report, transport, turn) {
    const total = report.voice_to_voice_s || 0;
    $("v2v").textContent = `voice-to-voice ${ms(total)}`;
    const bars = $("latency-bars");
    bars.replaceChildren();
    const scale = Math.max(total, ...STAGES.map((s) => Number(report[s.key]) || 0)) || 1;
    let offset = 0;
    for (const stage of STAGES) {
      if (typeof report[stage.key] !== "number") continue; // absent, or null (no audio that turn)
      const value = report[stage.key];
      const row = el("div", "bar-row");
      row.dataset.stage = stage.key;
      if (stage.title) row.title = stage.title;
      const track = el("span", "bar-track");
      const bar = el("span", "bar" + (stage.chain ? "" : " transport"));
      bar.style.marginLeft = `${(100 * (stage.chain ? offset : 0)) / scale}%`;
      bar.style.width = `${Math.max(0.5, (100 * value) / scale)}%`;
      track.append(bar);
      row.append(el("span", "bar-label", stage.label), track, el("span", "bar-value", ms(value)));
      bars.append(row);
      if (stage.chain) offset += value;
    }
    const v2v = el("div", "bar-row total");
    const track = el("span", "bar-track");
    const bar = el("span", "bar total");
    bar.style.width = `${(100 * total) / scale}%`;
    track.append(bar);
    v2v.append(el("span", "bar-label", "voice-to-voice"), track, el("span", "bar-value", ms(total)));
    bars.append(v2v);
    $("latency-history").prepend(el("li", "", `turn ${turn} (${transport}): ${ms(total)}`));
  }

  reset() {
    this.assistantDone("ok");
    this.userPartial("");
    this.userSpeaking(false);
    this.assistantSpeaking(false);
    this.micLevel(0);
  }
}
