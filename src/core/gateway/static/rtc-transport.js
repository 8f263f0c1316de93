// WebRTC (docs/webrtc.md): the mic as an Opus track, the reply as a remote track, events on the
// `events` data channel. The page sends one complete offer (it waits for its own ICE gathering).
//
// The audio transceiver is negotiated before the microphone opens and the mic track is attached
// with replaceTrack once the call is up, so no speech is lost while the call connects.

const READY_TIMEOUT_MS = 30000;
const GATHER_TIMEOUT_MS = 5000;
const STATS_EVERY_MS = 500;

function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, GATHER_TIMEOUT_MS); // send what we have: the server may still reach us
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

// An RTCIceServer without the null fields a JSON answer may carry (the constructor rejects them).
function cleanIceServer({ urls, username, credential }) {
  const server = { urls };
  if (username) server.username = username;
  if (credential) server.credential = credential;
  return server;
}

export class RtcTransport {
  // hooks: onEvent(event), onMeter(report), onStats(stats), onClosed(reason)
  constructor(api, audio, hooks) {
    this.api = api;
    this.audio = audio;
    this.hooks = hooks;
    this.pc = null;
    this.dc = null;
    this.pcId = "";
    this.sender = null;
    this.micTrack = null;
    this.micOpen = true;
    this.closing = false;
    this.sink = null;
    this.statsTimer = 0;
    this.lastStats = {};
    this.jitterMark = { delay: 0, count: 0 };
  }

  get name() {
    return "webrtc";
  }

  async open(config) {
    const { ice_servers: iceServers } = await this.api.call("GET", "/api/webrtc/config");
    const pc = new RTCPeerConnection({ iceServers: (iceServers || []).map(cleanIceServer) });
    this.pc = pc;
    this.sender = pc.addTransceiver("audio", { direction: "sendrecv" }).sender;
    pc.ontrack = (e) => this.playRemote(e.streams[0] || new MediaStream([e.track]));
    pc.onconnectionstatechange = () => {
      if (["failed", "closed"].includes(pc.connectionState) && !this.closing) {
        this.hooks.onClosed(`peer connection ${pc.connectionState}`);
      }
    };
    const ready = this.openChannel(pc);
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const answer = await this.api.call("POST", "/api/offer", {
      sdp: pc.localDescription.sdp, type: "offer", config,
    });
    this.pcId = answer.pc_id;
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    const event = await ready;
    this.statsTimer = setInterval(() => this.pollStats(), STATS_EVERY_MS);
    return event;
  }

  openChannel(pc) {
    const dc = pc.createDataChannel("events");
    this.dc = dc;
    return new Promise((resolve, reject) => {
      let ready = false;
      const timer = setTimeout(() => reject(new Error("no 'ready' on the events channel in 30 s")), READY_TIMEOUT_MS);
      dc.onmessage = (e) => {
        const event = JSON.parse(e.data);
        if (event.type === "ready" && !ready) {
          ready = true;
          clearTimeout(timer);
          resolve(event);
        }
        this.hooks.onEvent(event);
      };
      dc.onclose = () => {
        clearTimeout(timer);
        if (!ready) reject(new Error("the events channel closed before 'ready'"));
        else if (!this.closing) this.hooks.onClosed("the events channel closed");
      };
    });
  }

  // Chrome plays a remote WebRTC stream through Web Audio only while a media element holds it;
  // the element stays muted and the sound goes through uv-meter, which counts what arrived.
  playRemote(stream) {
    this.sink = new Audio();
    this.sink.muted = true;
    this.sink.srcObject = stream;
    this.sink.play().catch(() => {});
    this.audio.meter(stream, (report) => this.hooks.onMeter(report));
  }

  async attachMic(stream) {
    this.micTrack = stream.getAudioTracks()[0];
    this.micTrack.enabled = this.micOpen;
    await this.sender.replaceTrack(this.micTrack);
  }

  // A disabled track sends silence, so the server's VAD still hears the end of a turn.
  setMicOpen(open) {
    this.micOpen = open;
    if (this.micTrack) this.micTrack.enabled = open;
  }

  commit() {
    this.send({ type: "commit" });
  }

  send(message) {
    if (this.dc && this.dc.readyState === "open") this.dc.send(JSON.stringify(message));
  }

  async pollStats() {
    if (!this.pc) return;
    const report = await this.pc.getStats();
    let micLevel = 0;
    report.forEach((s) => {
      if (s.type === "media-source" && s.kind === "audio") micLevel = s.audioLevel || 0;
      if (s.type === "inbound-rtp" && s.kind === "audio") {
        this.lastStats = {
          totalSamplesReceived: s.totalSamplesReceived || 0,
          concealedSamples: s.concealedSamples || 0,
          packetsReceived: s.packetsReceived || 0,
          audioLevel: s.audioLevel || 0,
          jitterBufferMs: s.jitterBufferEmittedCount ? (1000 * s.jitterBufferDelay) / s.jitterBufferEmittedCount : 0,
          jitterBufferDelay: s.jitterBufferDelay || 0,
          jitterBufferEmittedCount: s.jitterBufferEmittedCount || 0,
        };
      }
    });
    this.hooks.onStats({ ...this.lastStats, micLevel });
  }

  stats() {
    return this.lastStats;
  }

  // The browser's own (network) jitter buffer for the reply track: the mean time, in seconds, the
  // samples it played since the previous call waited in it (getStats inbound-rtp
  // jitterBufferDelay / jitterBufferEmittedCount, differenced; sampled every STATS_EVERY_MS), or
  // null when none were played. Called at each turn's latency report.
  takeJitterBuffer() {
    const { jitterBufferDelay: delay = 0, jitterBufferEmittedCount: count = 0 } = this.lastStats;
    const mark = this.jitterMark;
    this.jitterMark = { delay, count };
    return count > mark.count ? Math.max(0, delay - mark.delay) / (count - mark.count) : null;
  }

  async close() {
    this.closing = true;
    clearInterval(this.statsTimer);
    if (this.pcId) {
      try {
        await this.api.call("DELETE", `/api/offer/${encodeURIComponent(this.pcId)}`);
      } catch (_) {
        // the call is gone already; closing our side is all that is left
      }
    }
    if (this.sink) this.sink.srcObject = null;
    if (this.pc) this.pc.close();
    this.pc = null;
    this.dc = null;
  }
}
