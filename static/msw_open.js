// Opening an image in on-device mode: from the file picker, a drop or a paste anywhere on the
// page, or an example; checked, decoded, shown, then encoded in the click worker. A newer image
// supersedes one still opening; switching modes mid-encode lets the encode finish into the stash.
import { preprocessShape } from "./msw_resize.js";
import { ESTIMATE_KEY, store } from "./msw_device.js";
import { resetPrompts } from "./msw_prompts.js";

async function decodeBitmap(blob) {
  // No colour management and the EXIF orientation applied: the pixels the server's reader gives.
  const opts = { imageOrientation: "from-image", colorSpaceConversion: "none", premultiplyAlpha: "none" };
  try { return await createImageBitmap(blob, opts); } catch (err) {
    if (!(err instanceof TypeError)) throw err;   // an older browser without "from-image" (its default)
    delete opts.imageOrientation;
    return createImageBitmap(blob, opts);
  }
}

// The size from the header first (an <img> learns it without decoding the pixels), so a
// decompression bomb is refused before it is decoded. -> {readable, w, h}
async function probeSize(url) {
  const probe = new Image();
  const readable = await new Promise((ok) => { probe.onload = () => ok(true); probe.onerror = () => ok(false); probe.src = url; });
  return { readable, w: probe.naturalWidth, h: probe.naturalHeight };
}

function sizeProblem({ readable, w, h }, name, limit) {   // -> why it cannot be opened, or ""
  const n = w * h;
  if (!readable || !n) return `cannot read ${name} as an image: try a PNG, JPEG or WebP`;
  if (n > limit) {
    return `${name} is too large: ${w}×${h} = ${(n / 1e6).toFixed(0)} megapixels (limit ${(limit / 1e6).toFixed(0)})`;
  }
  return "";
}

export class Opener {
  constructor({ S, prompts, debug, root, draw, status, clicks, device, downloads }) {
    Object.assign(this, { S, prompts, debug, root, draw, status, clicks, device, downloads });
    this.state = { opening: 0, seq: 0 };   // the latest open; the local images' tokens
    this.listeners = this.listen();
    debug.openLocal = async (url, name) => this.open(await (await fetch(url)).blob(), name);
  }

  async open(blob, name) {
    const { S, status, state } = this;
    if (!S.device) return;
    const seq = ++state.opening, current = () => seq === state.opening && S.device;
    // this open's token (once shown), and what its end releases
    const job = { token: null, url: URL.createObjectURL(blob), bitmap: null, tick: 0 };
    name = name || "image";
    status.say("");   // an earlier image's error is old news
    try {
      const size = await probeSize(job.url);
      if (!current()) return;
      const why = sizeProblem(size, name, (S.cfg && S.cfg.max_pixels) || 100e6);
      if (why) { status.say(why); return; }
      try { job.bitmap = await decodeBitmap(blob); } catch (err) {
        if (current()) status.say(`cannot decode ${name}: ${err.message || err}`);
        return;
      }
      if (!current()) return;
      await this.show(job, name);
      await this.encode(job, name);
    } catch (err) {
      this.failed(job, name, current, err);
    } finally {
      if (job.bitmap) job.bitmap.close();
      if (job.url) URL.revokeObjectURL(job.url);
      clearInterval(job.tick);
      if (seq === state.opening) S.encodeClock = "";
      status.render();
    }
  }

  failed(job, name, current, err) {
    const { S, device } = this;
    this.clicks.worker.token = null;   // whatever the worker holds now, send the embedding again before decoding
    const stash = device.state.stash;
    if (stash && stash.token === job.token) device.state.stash = null;   // nothing to come back to
    if (current() && (S.token === job.token || job.token === null)) {
      const v = S.view;
      device.showEmpty();
      this.status.say(`could not encode ${v ? v.name : name} on this device: ${err.message || err}`);
    }
  }

  async show(job, name) {   // the image becomes the page's (its URL is kept for it)
    const { S, draw, device } = this;
    const W = job.bitmap.width, H = job.bitmap.height, sc = Math.min(1, 1024 / Math.max(W, H));
    const token = job.token = `local-${++this.state.seq}`;
    const v = { token, local: true, name, width: W, height: H,
                display_width: Math.max(1, Math.round(W * sc)), display_height: Math.max(1, Math.round(H * sc)),
                input_size: preprocessShape(H, W), objects_count: 0 };
    S.token = token; S.view = v; S.f16 = null; S.image = "encoding"; this.debug.imageReady = false;
    resetPrompts(this.prompts); draw.scene.preview = null; draw.scene.kb = null; S.lastMs = null;
    device.state.kept = []; this.downloads.clear();
    if (device.state.imgUrl) URL.revokeObjectURL(device.state.imgUrl);
    device.state.imgUrl = job.url; job.url = null;
    await draw.showImage(device.state.imgUrl);
    if (S.token === token) {
      draw.sizeTo(v);
      draw.clearKept();
      draw.revealStage(); draw.redraw();
    }
  }

  async encode(job, name) {
    const { S, debug, clicks, device } = this, token = job.token;
    const stashed = () => device.state.stash !== null && device.state.stash.token === token;
    await device.ensureEncoder();
    if (S.token !== token && !stashed()) return;   // another image came: don't spend seconds on this one
    const t0 = performance.now(), est = device.encodeEstimate();
    job.tick = setInterval(() => {
      if (S.token !== token) return;
      S.encodeClock = `${((performance.now() - t0) / 1000).toFixed(0)} s (about ${est.s.toFixed(0)} s here)`; this.status.render();
    }, 500);
    const sent = job.bitmap;
    job.bitmap = null;   // transferred to the worker, which closes it
    const r = await clicks.worker.call({ type: "encode", token, bitmap: sent, name, want: debug.encodeWant || {} }, [sent]);
    clicks.worker.token = r.token;   // the worker holds this embedding now, wanted or not
    debug.lastEncode = { resizeMs: r.resizeMs, encodeMs: r.encodeMs, inputSize: r.inputSize, f32: r.f32, rgb: r.rgb };
    if (!r.f16) return;   // mswDebug.encodeWant.resizeOnly: the image stays unencoded
    if (stashed()) { device.state.stash.f16 = r.f16; return; }   // finished while away
    if (S.token !== token) return;
    S.f16 = r.f16; S.encodeMs = r.resizeMs + r.encodeMs;
    store.set(ESTIMATE_KEY, String(Math.round(S.encodeMs)));
    device.note();
    await clicks.feed();
  }

  // ------------------------------------------------------------ the ways an image comes in
  listen() {   // -> the document's listeners (removed by dispose)
    const { S, root } = this, fileInput = root.querySelector(".msw-open input");
    fileInput.addEventListener("change", () => { const f = fileInput.files[0]; if (f) this.open(f, f.name); fileInput.value = ""; });
    root.querySelector("[data-act=open]").onclick = () => fileInput.click();
    // A file dropped anywhere on the page opens here (the server's upload box is hidden in this
    // mode, and a drop nobody takes would make the browser navigate away from the work). Drops
    // that another control took, or while this widget is hidden (another tab), are left alone.
    const mine = (e) => S.device && !e.defaultPrevented && root.getClientRects().length > 0;
    const listeners = {
      dragover: (e) => { if (mine(e)) { e.preventDefault(); root.classList.add("msw-drag"); } },
      dragleave: (e) => { if (!e.relatedTarget) root.classList.remove("msw-drag"); },
      drop: (e) => {
        root.classList.remove("msw-drag");
        if (!mine(e)) return;
        e.preventDefault();
        const f = e.dataTransfer && e.dataTransfer.files[0];
        if (f) this.open(f, f.name);
      },
      paste: (e) => {
        if (!mine(e)) return;
        const f = [...(e.clipboardData ? e.clipboardData.files : [])].find((x) => x.type.startsWith("image/"));
        if (f) { e.preventDefault(); this.open(f, f.name || "pasted.png"); }
      },
    };
    for (const [type, fn] of Object.entries(listeners)) document.addEventListener(type, fn);
    return listeners;
  }

  examples() {
    this.root.querySelector(".msw-examples").replaceChildren(...(this.S.cfg.examples || []).map((ex) => {
      const b = document.createElement("button");
      b.type = "button"; b.textContent = ex.label || ex.name; b.title = `example: ${ex.name}`;
      b.onclick = async () => {   // a public example photo: fetching it reveals nothing about the visitor
        try {
          const r = await fetch(ex.url);
          if (!r.ok) throw new Error(`HTTP ${r.status}`);
          this.open(await r.blob(), ex.name);
        } catch (err) { this.status.say(`could not load the example: ${err.message || err}`); }
      };
      return b;
    }));
  }

  dispose() {
    for (const [type, fn] of Object.entries(this.listeners)) document.removeEventListener(type, fn);
  }
}
