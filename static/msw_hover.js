// Hover previews: their own worker, loaded on the first hover; latest position wins, nothing
// is sent while a click decodes, and previews stop if this device is too slow for them.
// The preview is drawn from draw.scene.preview.
import { WorkerClient } from "./msw_worker_client.js";
import { PREVIEW_ALPHA } from "./msw_draw.js";
import { requestFor } from "./msw_clicks.js";
import { MB } from "./msw_status.js";

const SLOW_HOVER_MS = 600;   // slower previews are switched off

export class Hover {
  constructor({ S, prompts, debug, draw, status }) {
    Object.assign(this, { S, prompts, debug, draw, status });
    this.worker = null;
    this.state = { want: null, busy: false };   // the latest position asked for; a preview running
    debug.startHover = () => { if (S.hover === "off") return this.start(); };
  }

  at(x, y, label) {
    const S = this.S;
    if (!S.view || S.decoder !== "ready" || S.hover === "slow" || S.hover === "failed") return;
    this.state.want = { x, y, label };
    if (S.hover === "off") this.start();
    this.pump();
  }

  async start() {
    const S = this.S;
    S.hover = "loading";
    const model = S.cfg.decoder_fast && S.cfg.hover !== "exact" ? S.cfg.decoder_fast : S.cfg.decoder;
    S.hoverNote = `loading hover previews (${MB(model.transfer_bytes || model.bytes)} MB)`;
    this.status.render();
    try {
      this.worker = new WorkerClient(null);
      // One thread: the click worker keeps the other cores, so a preview never slows a click much.
      const r = await this.worker.call({ type: "init", cfg: S.cfg, model, prefer: S.backend, threads: 1 });
      S.hoverModel = r;
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
                                             delayMs: S.cfg.hoverDelayMs || 0 });
        debug.events.push("hover-done");
        debug.hoverCount++;
        debug.lastHoverMs = res.ms;
        if (res.ms > SLOW_HOVER_MS) {
          S.hover = "slow";
          S.hoverNote = `hover previews off (${(res.ms / 1000).toFixed(1)} s per preview here)`;
          scene.preview = null;
          draw.redraw();
          break;
        }
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

  end() {
    this.state.want = null;
    if (this.draw.scene.preview) { this.draw.scene.preview = null; this.draw.redraw(); }
  }

  dispose() { if (this.worker) this.worker.terminate(); }
}
