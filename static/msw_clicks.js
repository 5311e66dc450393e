// Clicks: the click worker (the exact decoder, loaded at once) and the prompts' edits that it
// decodes. The latest prompts win: clicks made during a decode coalesce into one decode after it.
// Until the worker holds the image's embedding, the server decodes a server image's prompts
// (msw_server.js) and the worker takes over when ready, from the same result: same colours,
// candidates and refinement. Other prompts given early (on-device mode) wait (queued) for feed().
import { WorkerClient } from "./msw_worker_client.js";
import { COMMITTED_ALPHA, WHITE } from "./msw_draw.js";
import { paintMask, upscaleMask } from "./msw_runtime.js";
import { commitPrompts, decoderRequest, fullRequest, requestSummary, resetPrompts, undoPrompts } from "./msw_prompts.js";

// The decoder request for these prompts of the current image (the tests read its summary).
export function requestFor(S, debug, points, box, prev, paint) {
  const req = decoderRequest({ view: S.view, token: S.token, points, box, prev, refine: S.refine, paint });
  debug.lastRequest = requestSummary(req);
  return req;
}

// hover: msw_hover.js (its worker gets the embedding too)
export class Clicks {
  constructor({ S, prompts, debug, draw, status, hover }) {
    Object.assign(this, { S, prompts, debug, draw, status, hover });
    this.worker = null;
    this.server = null;   // msw_server.js (set by mount; none on the static site)
    this.state = { dirty: false };   // the prompts changed during a decode
    this.ready = new Promise((ok, fail) => { this.loaded = { ok, fail }; });   // the decoder has loaded (msw_start.js)
    this.ready.catch(() => {});
    debug.decodeFull = async (points, box) => {
      const r = await this.worker.call(fullRequest({ view: S.view, token: S.token, points, box }));
      return { iou: r.iou, masks: r.masks };
    };
    debug.decodeTimed = async (x, y, fast) => {   // one decode (worker round trip included), for benchmarks
      const w = fast ? hover.worker : this.worker, t0 = performance.now();
      const r = await w.call(requestFor(S, debug, [[x, y, 1]], null, null, this.paint()));
      return { ms: r.ms, roundTripMs: performance.now() - t0 };
    };
  }

  load(cfg, prefer) {   // the worker and its decoder; download progress on the status line
    const S = this.S;
    this.worker = new WorkerClient((got, total, what) => {
      if (what === "encoder") S.encLoad = { got, total }; else S.load = { got, total };
      this.status.render();
    });
    return this.worker.call({ type: "init", cfg, model: cfg.decoder, prefer, threads: cfg.threads });
  }

  async feed() {   // give the current embedding to every ready worker
    const { S, hover } = this;
    if (!S.f16) return;
    const token = S.token;
    if (S.decoder === "ready" && this.worker.token !== token) await this.worker.setEmbedding(token, S.f16);
    if (S.hover === "ready" && hover.worker.token !== token) await hover.worker.setEmbedding(token, S.f16);
    if (S.token !== token) return;
    S.image = "ready";
    this.debug.imageReady = S.decoder === "ready";
    this.status.render();
    if (S.decoder === "ready" && this.prompts.st.queued) this.run();   // prompts given while loading
  }

  canDecode() { const S = this.S; return S.decoder === "ready" && this.worker.token === S.token && S.image === "ready"; }
  onServer() { return !this.canDecode() && !!this.server && this.server.canDecode(); }
  paint() { return this.draw.paintSpec(COMMITTED_ALPHA, WHITE, false); }

  async paintLow(low, paint) {   // one low-res mask -> RGBA pixels (in the worker when there is one)
    if (this.worker) return (await this.worker.call({ type: "paint", low, paint })).rgba;
    return paintMask(upscaleMask(low, paint.inputSize, paint.h, paint.w), paint.h, paint.w, paint.color, paint.alpha, paint.edge);
  }

  decodeHere(points, box, prev) {   // the worker, else the server
    if (this.canDecode()) return this.worker.call(requestFor(this.S, this.debug, points, box, prev, this.paint()));
    return this.server.decode(points, box, prev, this.paint());
  }

  async run() {   // decodes the latest prompts; clicks made meanwhile coalesce
    const { S, prompts, debug, draw, status, state } = this;
    state.dirty = true;
    if (S.busy) return;
    let resent = false;
    S.busy = true;
    draw.setBusy(true);
    try {
      while (state.dirty) {
        state.dirty = false;
        const st = prompts.st;
        if (!this.canDecode() && !this.onServer()) { st.queued = st.points.length > 0 || !!st.box; break; }
        st.queued = false;
        const mine = prompts.version, { points, box } = st;
        if (!points.length && !box) { st.result = null; continue; }
        draw.scene.preview = null;
        S.decodingOn = this.canDecode() ? "browser" : "server";
        status.render();
        const t0 = performance.now(), token = S.token;
        debug.events.push("click-start");
        let res;
        try {
          res = await this.decodeHere(points, box, st.result);
        } catch (err) {   // moot when the prompts or the image changed meanwhile: decode the latest
          if (prompts.version !== mine || S.token !== token) continue;
          throw err;
        }
        debug.events.push("click-done");
        if (res.stale) {   // the worker holds another image's embedding: give it this one, once
          this.worker.token = null;
          if (resent || !S.f16) { status.say("this image's embedding is gone: open or upload it again"); break; }
          resent = true;
          await this.worker.setEmbedding(S.token, S.f16);
          state.dirty = true;
          continue;
        }
        if (prompts.version === mine) {   // else undo/clear/another click came meanwhile
          res.forPoints = points; res.forBox = box;   // what it was decoded for (msw_server.js show)
          prompts.st.result = res;
        }
        S.lastMs = res.ms; S.lastOn = res.server ? "server" : "browser";
        debug.clicks.push({ decodeMs: res.ms, totalMs: performance.now() - t0, on: S.lastOn });
        draw.redraw();
      }
    } catch (err) {
      status.say(`decoding failed: ${err.message || err}`);
    } finally {
      S.busy = false;
      draw.setBusy(false);
      draw.redraw();
    }
  }

  // ------------------------------------------------------------------ the prompts' edits
  commit(points, box) {
    const { S, draw, status } = this;
    if (!S.view) return;
    if (!commitPrompts(this.prompts, points, box, S.maxPoints)) {
      status.say(`at most ${S.maxPoints} points per object: keep or clear this one first`, 5000);
      return;
    }
    draw.scene.preview = null; status.say("");
    draw.redraw();
    this.run();
  }
  undo() { undoPrompts(this.prompts); this.draw.scene.preview = null; this.draw.redraw(); }
  clear() { resetPrompts(this.prompts); this.draw.scene.preview = null; this.status.say(""); this.draw.redraw(); }

  async pick(i) {   // another candidate of an ambiguous point
    const r = this.prompts.st.result;
    if (!r || i >= r.low.length) return;
    r.selected = i;
    this.draw.redraw();
    if (!r.paints[i]) r.paints[i] = await this.paintLow(r.low[i], this.paint());   // painted when first chosen
    if (this.prompts.st.result === r) this.draw.redraw();
  }

  dispose() { if (this.worker) this.worker.terminate(); }
}
