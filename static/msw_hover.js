// Hover previews: their own worker, loaded on the first hover; latest position wins, nothing
// is sent while a click decodes. They pause while this device is too slow for them: decided by
// a moving average of the preview times (the first preview, a warm-up, does not count), and
// tried again every RETRY_MS, so a busy moment does not end them for the session.
// The preview is drawn from draw.scene.preview.
import { WorkerClient } from "./msw_worker_client.js";
import { PREVIEW_ALPHA } from "./msw_draw.js";
import { requestFor } from "./msw_clicks.js";
import { progressMB } from "./msw_status.js";

const SLOW_HOVER_MS = 600;   // previews slower than this on average pause
const WEIGHT = 0.3;          // of the newest preview in the moving average
const MIN_SAMPLES = 3;       // previews measured before the average may pause them
const RETRY_MS = 15000;      // a paused device tries one preview again after this long

// The moving measure (pure): -> the next measure, and whether previews should pause.
export function measureHover(m, ms, slowMs = SLOW_HOVER_MS) {
  if (!m.warm) return { next: { ...m, warm: true }, slow: false };   // the warm-up: not counted
  const avg = m.avg === null ? ms : (1 - WEIGHT) * m.avg + WEIGHT * ms, n = m.n + 1;
  return { next: { warm: true, avg, n }, slow: n >= MIN_SAMPLES && avg > slowMs };
}

export class Hover {
  constructor({ S, prompts, debug, draw, status }) {
    Object.assign(this, { S, prompts, debug, draw, status });
    this.worker = null;
    this.state = { want: null, busy: false, pausedAt: 0 };   // the latest position asked for; a preview running
    this.measure = { warm: false, avg: null, n: 0 };
    debug.hoverCosts = [];   // tests: extra milliseconds for the next previews (a slow or busy device)
    debug.startHover = () => { if (S.hover === "off") return this.start(); };
  }

  at(x, y, label) {
    const S = this.S;
    if (!S.view || S.decoder !== "ready" || S.hover === "failed") return;
    if (S.hover === "slow") {   // paused: one preview again once in a while, to see if it got faster
      if (performance.now() - this.state.pausedAt < (S.cfg.hoverRetryMs || RETRY_MS)) return;
      S.hover = "ready";
      this.state.probe = true;
    }
    this.state.want = { x, y, label };
    if (S.hover === "off") this.start();
    this.pump();
  }

  async start() {
    const S = this.S;
    S.hover = "loading";
    const model = S.cfg.decoder_fast && S.cfg.hover !== "exact" ? S.cfg.decoder_fast : S.cfg.decoder;
    S.hoverNote = "loading hover previews";   // from this browser's cache, or downloaded (then its progress)
    this.status.render();
    try {
      this.worker = new WorkerClient((got, total) => {
        if (S.hover === "loading") { S.hoverNote = `loading hover previews ${progressMB({ got, total }, model)}`; this.status.render(); }
      });
      // One thread: the click worker keeps the other cores, so a preview never slows a click much.
      const r = await this.worker.call({ type: "init", cfg: S.cfg, model, prefer: S.backend, threads: 1 });
      S.hoverModel = r;
      S.hoverTransferred = r.transferred || 0;   // counted in the status line's "MB transferred"
      if (S.f16) await this.worker.setEmbedding(S.token, S.f16);
      S.hover = "ready";
      S.hoverNote = "";
      this.debug.hoverBytes = r.bytes;
    } catch (err) {
      S.hover = "failed";
      S.hoverNote = "hover previews unavailable";
    }
    this.status.render();
    this.pump();
  }

  async pump() {
    const { S, prompts, debug, draw, state } = this, scene = draw.scene;
    if (state.busy || S.hover !== "ready") return;
    state.busy = true;
    try {
      while (state.want && !S.busy && !scene.drag) {
        if (this.worker.token !== S.token) { if (!S.f16) break; await this.worker.setEmbedding(S.token, S.f16); }
        const h = state.want; state.want = null;
        const st = prompts.st, mine = prompts.version, points = [...st.points, [h.x, h.y, h.label]];
        debug.events.push("hover-start");
        const res = await this.worker.call({ ...requestFor(S, debug, points, st.box, st.result, draw.paintSpec(PREVIEW_ALPHA, null, false)),
                                             delayMs: S.cfg.hoverDelayMs || 0, costMs: debug.hoverCosts.shift() || 0 });
        debug.events.push("hover-done");
        debug.hoverCount++;
        debug.lastHoverMs = res.ms;
        if (this.judge(res.ms)) break;
        if (!res.stale && !state.want && !S.busy && prompts.version === mine && !scene.drag && S.pointerIn) {
          scene.preview = { points, paint: res.paints[res.selected] };
          draw.redraw();
        }
      }
    } catch (err) {
      S.hover = "failed"; S.hoverNote = "hover previews unavailable";
    } finally {
      state.busy = false;
    }
  }

  // -> true when previews pause now (too slow on average, or a retry that is still slow)
  judge(ms) {
    const { S, draw, state } = this;
    const slowMs = S.cfg.hoverSlowMs || SLOW_HOVER_MS;
    let slow;
    if (state.probe) {   // a paused device's retry decides alone: the average starts again from it
      state.probe = false;
      slow = ms > slowMs;
      this.measure = { warm: true, avg: ms, n: MIN_SAMPLES };
    } else ({ next: this.measure, slow } = measureHover(this.measure, ms, slowMs));
    if (!slow) { if (S.hoverNote) { S.hoverNote = ""; this.status.render(); } return false; }
    S.hover = "slow";
    state.pausedAt = performance.now();
    S.hoverNote = `hover previews paused (${(this.measure.avg / 1000).toFixed(1)} s per preview here; trying again shortly)`;
    draw.scene.preview = null;
    draw.redraw();
    this.status.render();
    return true;
  }

  end() {
    this.state.want = null;
    if (this.draw.scene.preview) { this.draw.scene.preview = null; this.draw.redraw(); }
  }

  dispose() { if (this.worker) this.worker.terminate(); }
}
