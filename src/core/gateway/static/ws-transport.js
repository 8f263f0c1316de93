// /ws/voice (docs/websocket.md): 16 kHz PCM16 up as binary frames, JSON events and PCM16 reply audio down.

import { MIC_RATE } from "./audio.js";

const SILENCE = new Int16Array(MIC_RATE / 50); // one 20 ms frame
const READY_TIMEOUT_MS = 20000;

export class WsTransport {
  // hooks: onEvent(event), onReplyFrame(bytes), onPlayer(report), onMicLevel(level), onClosed(reason)
  constructor(api, audio, hooks) {
    this.api = api;
    this.audio = audio;
    this.hooks = hooks;
    this.ws = null;
    this.player = null;
    this.rate = audio.replyRate();
    this.micOpen = true;
    this.closing = false;
  }

  get name() {
    return "ws";
  }

  open(config) {
    this.player = this.audio.player((report) => this.hooks.onPlayer(report));
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.api.voiceSocketUrl());
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      let ready = false;
      const timer = setTimeout(() => reject(new Error("no 'ready' from /ws/voice in 20 s")), READY_TIMEOUT_MS);
      ws.onopen = () => ws.send(JSON.stringify({ type: "config", ...config, sample_rate: this.rate }));
      ws.onmessage = (e) => {
        if (typeof e.data !== "string") {
          this.hooks.onReplyFrame(e.data.byteLength);
          this.player.push(e.data, this.rate);
          return;
        }
        const event = JSON.parse(e.data);
        if (event.type === "ready") {
          this.rate = event.sample_rate;
          if (!ready) {
            ready = true;
            clearTimeout(timer);
            resolve(event);
          }
        } else if (event.type === "flush") {
          this.player.flush();
        } else if (event.type === "pause") {
          this.player.pause();
        } else if (event.type === "resume") {
          this.player.resume();
        }
        this.hooks.onEvent(event);
      };
      ws.onclose = (e) => {
        clearTimeout(timer);
        if (e.code === 1008 && /API key|token/i.test(e.reason)) {
          this.api.remember("", 0);
          this.api.onKeyNeeded();
        }
        const reason = `socket closed (${e.code}${e.reason ? ": " + e.reason : ""})`;
        if (!ready) reject(new Error(reason));
        else if (!this.closing) this.hooks.onClosed(reason);
      };
    });
  }

  // Stream the microphone; while closed (mute, push-to-talk released) send silence so the VAD
  // still hears the end of a turn.
  attachMic(stream) {
    this.audio.capture(stream, (frame, level) => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
      this.hooks.onMicLevel(this.micOpen ? level : 0);
      this.ws.send(this.micOpen ? frame : SILENCE);
    });
  }

  setMicOpen(open) {
    this.micOpen = open;
  }

  // Push-to-talk release: an empty binary frame ends the utterance now.
  commit() {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(new ArrayBuffer(0));
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  stats() {
    return {};
  }

  async close() {
    this.closing = true;
    if (this.player) this.player.flush();
    if (!this.ws) return;
    if (this.ws.readyState === WebSocket.OPEN) {
      this.send({ type: "end" });
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, 2000);
        this.ws.addEventListener("close", () => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    this.ws.close();
    this.ws = null;
  }
}
