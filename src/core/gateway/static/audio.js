// The page's audio graph: one AudioContext, the microphone, reply playback and meters.
//
// WebSocket path: mic -> uv-capture (16 kHz PCM16 frames) -> socket; socket PCM -> uv-player -> speakers.
// WebRTC path: the mic track goes to the peer connection as is; the remote track plays through
// uv-meter -> speakers, which counts the audible samples that reached the page.

export const MIC_RATE = 16000;

export class AudioGraph {
  constructor() {
    this.ctx = null;
    this.nodes = [];
  }

  // Create (or resume) the context; call from a click so autoplay rules allow sound.
  async start() {
    if (!this.ctx) {
      this.ctx = new AudioContext({ latencyHint: "interactive" });
      await this.ctx.audioWorklet.addModule(new URL("./worklets.js", import.meta.url));
    }
    if (this.ctx.state !== "running") await this.ctx.resume();
    return this.ctx;
  }

  get sampleRate() {
    return this.ctx ? this.ctx.sampleRate : 48000;
  }

  // A reply rate the server accepts (8-48 kHz) that needs no resampling when the context allows.
  replyRate() {
    return Math.max(8000, Math.min(48000, Math.round(this.sampleRate)));
  }

  track(node) {
    this.nodes.push(node);
    return node;
  }

  // mic stream -> uv-capture; onFrame(Int16Array of 320 samples, level) every 20 ms.
  capture(stream, onFrame) {
    const source = this.track(this.ctx.createMediaStreamSource(stream));
    const node = this.track(new AudioWorkletNode(this.ctx, "uv-capture", { numberOfOutputs: 0 }));
    node.port.onmessage = (e) => onFrame(new Int16Array(e.data.pcm), e.data.level);
    source.connect(node);
    return node;
  }

  // uv-player -> speakers; returns {push(ArrayBuffer, rate), flush(), pause(), resume()}; onReport gets its reports.
  player(onReport) {
    const node = this.track(new AudioWorkletNode(this.ctx, "uv-player", { outputChannelCount: [1] }));
    node.port.onmessage = (e) => onReport(e.data);
    node.connect(this.ctx.destination);
    return {
      push: (pcm, rate) => node.port.postMessage({ type: "pcm", pcm, rate }, [pcm]),
      flush: () => node.port.postMessage({ type: "flush" }),
      pause: () => node.port.postMessage({ type: "pause" }),
      resume: () => node.port.postMessage({ type: "resume" }),
    };
  }

  // A remote stream -> uv-meter -> speakers; onReport gets {audible, total, level}.
  meter(stream, onReport) {
    const source = this.track(this.ctx.createMediaStreamSource(stream));
    const node = this.track(new AudioWorkletNode(this.ctx, "uv-meter", { outputChannelCount: [1] }));
    node.port.onmessage = (e) => onReport(e.data);
    source.connect(node).connect(this.ctx.destination);
    return node;
  }

  // Disconnect every node made for the last call; the context stays for the next one.
  release() {
    for (const node of this.nodes) {
      node.disconnect();
      if (node.port) node.port.onmessage = null;
    }
    this.nodes = [];
  }
}

// getUserMedia with the processing the user picked; tests turn all three off for repeatability.
export async function openMicrophone({ echoCancellation, autoGainControl, noiseSuppression }) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error("this browser gives no microphone here: open the page over https or on localhost");
  }
  return navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation, autoGainControl, noiseSuppression },
    video: false,
  });
}
