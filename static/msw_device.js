// On-device mode ("On this device"; the only mode of the static site, `mount({standalone})`):
// the image is opened in the page, resized and encoded in the click worker, and kept objects and
// downloads stay here: nothing about the image is sent anywhere.
//   encoder: off -> loading -> ready | failed;   image: none -> encoding -> ready
// This module switches the mode (the on-device work is kept while the visitor looks at the
// server's image, and comes back), loads the encoder and holds the kept objects; images are
// opened by msw_open.js, the downloads built by msw_downloads.js.
import { colorFor } from "./msw_runtime.js";
import { COMMITTED_ALPHA, WHITE } from "./msw_draw.js";
import { resetPrompts } from "./msw_prompts.js";
import { MB } from "./msw_status.js";

export const ESTIMATE_KEY = "msw-encode-ms", DEVICE_KEY = "msw-on-device";
export const store = {   // localStorage may be unavailable (site data blocked): never fatal
  get(k) { try { return localStorage.getItem(k); } catch (e) { return null; } },
  set(k, v) { try { localStorage.setItem(k, v); } catch (e) { /* not remembered */ } },
};

// server: msw_server.js (switching off shows its value again)
export class Device {
  constructor({ S, prompts, debug, root, draw, status, clicks, server, standalone }) {
    Object.assign(this, { S, prompts, debug, root, draw, status, clicks, server, standalone });
    this.box = root.querySelector("[data-act=device]");
    this.state = {
      kept: [],             // the kept objects ({low, score})
      imgUrl: null,         // the opened image's object URL
      stash: null,          // the on-device work while the server's image is shown
      encoderReady: null,   // the encoder's load
    };
    this.box.addEventListener("change", () => this.set(this.box.checked, true));
    debug.setDevice = (on) => this.set(on, false);
  }

  encodeEstimate() {   // this device's last encode, else a rule of thumb per backend
    const last = +store.get(ESTIMATE_KEY);
    if (last) return { s: last / 1000, measured: true };
    // bench/bench_browser.py on a 2-core machine: WASM 2.9 s (1 thread), 1.6 s (2 threads); a GPU < 1 s
    const S = this.S;
    return { s: S.backend === "webgpu" ? 1 : 3 / Math.max(1, Math.min(S.threads || 1, 4)) ** 0.85, measured: false };
  }
  note() {   // what the mode costs here, beside its switch
    const S = this.S, e = S.cfg && S.cfg.encoder, el = this.root.querySelector(".msw-device-note");
    if (!e && S.cfg && S.cfg.encoder_off) { el.textContent = S.cfg.encoder_off; return; }   // say why it is off
    if (!e || S.decoder !== "ready" || (this.standalone && S.encoder === "ready")) { el.textContent = ""; return; }
    const est = this.encodeEstimate(), mb = MB(e.transfer_bytes || e.bytes);
    el.textContent = S.encoder === "ready" ? `about ${est.s.toFixed(1)} s per image here`
      : `one-time download ${mb} MB, then about ${est.s.toFixed(est.s < 10 ? 1 : 0)} s per image here` +
        (S.backend === "webgpu" ? " (WebGPU)" : ` (${S.backendLabel}${est.measured ? "" : ", estimated"})`);
  }
  showToggle(on) { this.root.querySelector(".msw-device").hidden = !on; }

  ensureEncoder() {   // loads the encoder into the click worker (after its decoder)
    const { S, clicks, status } = this;
    if (S.encoder === "ready" || S.encoder === "loading") return this.state.encoderReady;
    S.encoder = "loading"; status.render();
    this.state.encoderReady = clicks.ready.then(() => {
      if (!S.cfg.encoder) throw new Error("this server has no encoder for on-device mode");
      return clicks.worker.call({ type: "initEncoder", model: S.cfg.encoder });
    }).then((r) => {
      S.encoder = "ready"; S.encoderInfo = r; this.debug.encoderReady = true;
      S.transferred = Math.max(S.transferred || 0, r.transferred || 0);   // the click worker's, encoder included
      this.note(); status.render(); return r;
    }, (err) => {
      S.encoder = "failed"; S.encError = String(err.message || err); status.render(); throw err;
    });
    return this.state.encoderReady;
  }

  set(on, remember) {   // may run before the decoder has loaded (then the encoder waits)
    const S = this.S;
    on = !!on && S.decoder !== "failed";
    if (remember) store.set(DEVICE_KEY, on ? "1" : "0");
    if (on === !!S.device) return;
    S.device = on; this.box.checked = on;
    this.root.classList.toggle("msw-on-device", on);
    document.documentElement.classList.toggle("msw-device-mode", on && !this.standalone);   // page CSS hides the upload
    this.debug.device = on;
    const first = document.querySelector("#msw-intro .msw-intro-first");   // the page's header says how it starts
    if (first) {
      first.dataset.server = first.dataset.server || first.textContent;
      first.textContent = on ? "Open an image or pick an example (it never leaves this device)" : first.dataset.server;
    }
    if (on) {
      if (S.cfg) this.ensureEncoder().catch(() => {});   // else when the config has loaded
      // the server image's prompts, mask and embedding wait for the way back (msw_server.js)
      this.server.resume = S.view && !S.view.local
        ? { token: S.token, f16: S.f16, st: this.prompts.st, lastMs: S.lastMs } : null;
      this.restore();
    } else {
      this.state.stash = S.view && S.view.local
        ? { view: S.view, token: S.token, f16: S.f16, local: this.state.kept, st: this.prompts.st, encodeMs: S.encodeMs } : null;
      S.token = null;   // back to the server's image (if any): nothing was lost there either
      this.server.showValue();
    }
    this.note(); this.status.render();
  }

  showEmpty() {
    const { S, draw } = this;
    S.view = null; S.token = null; S.f16 = null; S.image = "none"; this.debug.imageReady = false;
    resetPrompts(this.prompts); this.state.kept = []; draw.scene.preview = null;
    draw.hideImage();
    draw.clearKept();
    draw.redraw();
  }
  async restore() {
    const { S, draw, state } = this, s = state.stash;
    state.stash = null;
    this.showEmpty();
    if (!s || !state.imgUrl) return;
    Object.assign(S, { view: s.view, token: s.token, encodeMs: s.encodeMs, image: s.f16 ? "fetching" : "none" });
    state.kept = s.local; resetPrompts(this.prompts, s.st);
    await draw.showImage(state.imgUrl);
    if (S.token !== s.token) return;
    draw.sizeTo(s.view);
    draw.redraw();
    if (!s.f16) { S.image = "encoding"; this.status.render(); return; }   // its encode goes on and finishes it
    S.f16 = s.f16;
    await this.clicks.feed();   // the worker held the server's embedding meanwhile
    this.repaintKept();
  }

  // ---------------------------------------------------------------------- kept objects
  keep(r) { this.state.kept.push({ low: r.low[r.selected], score: r.iou[r.selected] }); }
  async repaintKept() {   // painted again from their logits
    const { S, draw, state } = this;
    draw.clearKept();
    const mine = S.token, kept = state.kept;
    for (let i = 0; i < kept.length; i++) {
      const paint = { ...draw.paintSpec(COMMITTED_ALPHA, WHITE, false), color: colorFor(S.cfg.palette, i) };
      const res = await this.clicks.worker.call({ type: "paint", low: kept[i].low, paint });
      if (S.token !== mine || state.kept !== kept) return;
      draw.drawKept(res.rgba);
    }
  }
  unkeep() {
    const state = this.state;
    if (!state.kept.length) { this.status.say("no kept object to remove", 3000); return; }
    state.kept = state.kept.slice(0, -1);
    this.repaintKept();
    this.status.say(`${state.kept.length} object(s) kept`, 3000);
  }

  dispose() {
    document.documentElement.classList.remove("msw-device-mode");
    if (this.state.imgUrl) URL.revokeObjectURL(this.state.imgUrl);
  }
}
