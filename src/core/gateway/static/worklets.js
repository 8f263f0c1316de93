// AudioWorklet processors of the demo page (loaded with audioWorklet.addModule).
//
// uv-capture: microphone -> 16 kHz PCM16 frames of 20 ms, posted to the page (WebSocket path).
// uv-player:  PCM16 reply frames from the page -> speakers, with flush for barge-in.
// uv-meter:   pass-through that counts audible samples (the WebRTC reply track).
// Each posts a small report about every 100 ms so the page can draw levels and count audio.

const OUT_RATE = 16000;
const FRAME = 320; // 20 ms at 16 kHz
const AUDIBLE_RMS = 0.003; // about -50 dBFS: above Opus comfort noise and dither
const REPORT_EVERY = Math.round(sampleRate / 10);

function rms(block) {
  let sum = 0;
  for (let i = 0; i < block.length; i++) sum += block[i] * block[i];
  return block.length ? Math.sqrt(sum / block.length) : 0;
}

function mono(input) {
  if (!input || input.length === 0) return null;
  if (input.length === 1) return input[0];
  const out = new Float32Array(input[0].length);
  for (const channel of input) for (let i = 0; i < out.length; i++) out[i] += channel[i] / input.length;
  return out;
}

class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / OUT_RATE; // input samples per output sample
    this.pos = 0;
    this.acc = 0;
    this.n = 0;
    this.frame = new Int16Array(FRAME);
    this.fill = 0;
    this.peak = 0;
  }

  process(inputs) {
    const x = mono(inputs[0]);
    if (!x) return true;
    this.peak = Math.max(this.peak, rms(x));
    // Box-filter decimation: average the input samples that fall in each output sample's span.
    for (let i = 0; i < x.length; i++) {
      this.acc += x[i];
      this.n += 1;
      this.pos += 1;
      if (this.pos >= this.step) {
        this.pos -= this.step;
        const v = Math.max(-1, Math.min(1, this.acc / this.n));
        this.frame[this.fill++] = v < 0 ? v * 32768 : v * 32767;
        this.acc = 0;
        this.n = 0;
        if (this.fill === FRAME) {
          this.port.postMessage({ pcm: this.frame.buffer, level: this.peak }, [this.frame.buffer]);
          this.frame = new Int16Array(FRAME);
          this.fill = 0;
          this.peak = 0;
        }
      }
    }
    return true;
  }
}

class PlayerProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = [];
    this.head = 0; // read position in queue[0]
    this.queued = 0;
    this.played = 0;
    this.sinceReport = 0;
    this.wasPlaying = false;
    this.paused = false; // a possible interruption is being checked: hold playback, keep the queue
    this.carry = 0; // last input sample of the previous chunk, for interpolation
    this.t = 0; // fractional read position of the resampler
    this.port.onmessage = (e) => this.onMessage(e.data);
  }

  onMessage(msg) {
    if (msg.type === "pause" || msg.type === "resume") {
      this.paused = msg.type === "pause";
    } else if (msg.type === "flush") {
      this.paused = false;
      this.queue = [];
      this.head = 0;
      this.queued = 0;
      this.t = 0;
      this.report(true);
    } else if (msg.type === "pcm") {
      const chunk = this.toFloat(new Int16Array(msg.pcm), msg.rate);
      if (chunk.length) {
        this.queue.push(chunk);
        this.queued += chunk.length;
      }
    }
  }

  // PCM16 at `rate` -> float at the context rate (linear interpolation across chunks).
  toFloat(pcm, rate) {
    if (rate === sampleRate) {
      const out = new Float32Array(pcm.length);
      for (let i = 0; i < pcm.length; i++) out[i] = pcm[i] / 32768;
      return out;
    }
    const step = rate / sampleRate;
    const out = [];
    while (this.t < pcm.length) {
      const i = Math.floor(this.t);
      const a = i === 0 ? this.carry : pcm[i - 1] / 32768;
      const b = pcm[i] / 32768;
      const f = this.t - i;
      out.push(a + (b - a) * f);
      this.t += step;
    }
    this.t -= pcm.length;
    this.carry = pcm.length ? pcm[pcm.length - 1] / 32768 : this.carry;
    return Float32Array.from(out);
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    let w = 0;
    while (!this.paused && w < out.length && this.queue.length) {
      const chunk = this.queue[0];
      const n = Math.min(out.length - w, chunk.length - this.head);
      out.set(chunk.subarray(this.head, this.head + n), w);
      w += n;
      this.head += n;
      if (this.head === chunk.length) {
        this.queue.shift();
        this.head = 0;
      }
    }
    out.fill(0, w);
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    this.played += w;
    this.queued -= w;
    this.sinceReport += out.length;
    if (this.sinceReport >= REPORT_EVERY || (this.wasPlaying && this.queued === 0)) this.report(false);
    return true;
  }

  report(flushed) {
    this.sinceReport = 0;
    this.wasPlaying = this.queued > 0;
    this.port.postMessage({ played: this.played, queued: this.queued, playing: this.queued > 0, flushed });
  }
}

class MeterProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.audible = 0;
    this.total = 0;
    this.peak = 0;
    this.sinceReport = 0;
  }

  process(inputs, outputs) {
    const x = mono(inputs[0]);
    const n = outputs[0][0].length;
    if (x) {
      for (let c = 0; c < outputs[0].length; c++) outputs[0][c].set(x);
      const level = rms(x);
      this.peak = Math.max(this.peak, level);
      if (level >= AUDIBLE_RMS) this.audible += x.length;
      this.total += x.length;
    }
    this.sinceReport += n;
    if (this.sinceReport >= REPORT_EVERY) {
      this.port.postMessage({ audible: this.audible, total: this.total, level: this.peak });
      this.sinceReport = 0;
      this.peak = 0;
    }
    return true;
  }
}

registerProcessor("uv-capture", CaptureProcessor);
registerProcessor("uv-player", PlayerProcessor);
registerProcessor("uv-meter", MeterProcessor);
