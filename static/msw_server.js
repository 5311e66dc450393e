// The server bridge (server mode). The server encodes an upload and sends a value: the image,
// its embedding's URL, the kept objects' layer and its settings. Prompts are decoded here, in
// the workers; the server only hears about a mask when the user keeps or exports it (triggers
// "keep", "export"). Until the page's own decoder has loaded and holds the embedding, the
// server decodes them (POST /msw/decode/{token}, `decode`): the first mask never waits for a
// download. (If no backend works here, msw_start.js asks it to decode: "fallback".)
import { b64, halfToFloat, toHalf } from "./msw_runtime.js";
import { emptyPrompts, multimaskFor, resetPrompts } from "./msw_prompts.js";

const downloadLinks = () => [...document.querySelectorAll("#msw-files a[href]")].map((a) => a.href);

const halfB64 = (low) => {   // float32 logits -> base64 of little-endian float16, as the server reads them
  const half = new Uint16Array(low.length);
  for (let i = 0; i < low.length; i++) half[i] = toHalf(low[i]);
  return b64(new Uint8Array(half.buffer));
};

export class Server {
  constructor({ S, prompts, debug, draw, status, clicks, props, trigger }) {
    Object.assign(this, { S, prompts, debug, draw, status, clicks, props, trigger });
    this.state = { keptPending: 0 };   // kept since the server's last value (the next colour)
    this.resume = null;   // the server image's work while on-device mode is shown (msw_device.js)
    // Tell the visitor that an upload is on its way (the server answers once it has encoded it).
    const uploadBox = document.querySelector("#msw-upload");
    const onUpload = () => { if (S.image !== "uploading") { S.image = "uploading"; status.render(); } };
    if (uploadBox) { uploadBox.addEventListener("change", onUpload, true); uploadBox.addEventListener("drop", onUpload, true); }
    this.onUpload = onUpload;
  }

  // An upload chosen before this code loaded (the page's head noted it): announced once the
  // widget shows, until the server's value comes.
  announceEarlyUpload() {
    const at = window.mswUploadStarted;
    window.mswUploadStarted = 0;   // once: a later mount starts from the value
    if (at && Date.now() - at < 120000 && !this.S.device && !(this.props.value && this.props.value.image)) this.onUpload();
  }

  // The embedding is fetched once the page's decoder has loaded: until then the server decodes,
  // and on a slow line the 2 MB would only slow the decoder's download and the server's answers.
  fetchEmbedding(v) {   // one fetch per image, however often its value is shown again
    if (!this.fetching || this.fetching.token !== v.token) this.fetching = { token: v.token, done: this.fetchOnce(v) };
    return this.fetching.done;
  }
  async fetchOnce(v) {
    const S = this.S;
    // Not fetched (the image is not shown now, or the fetch failed): a later show fetches again.
    const forget = () => { if (this.fetching && this.fetching.token === v.token) this.fetching = null; };
    try { await this.clicks.ready; } catch (err) { return; }   // no decoder here: the server decodes
    if (S.token !== v.token) { forget(); return; }
    try {
      const r = await fetch(v.embedding);
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const f16 = await r.arrayBuffer();
      if (S.token !== v.token) { forget(); return; }   // another image (or on-device mode) came meanwhile
      S.f16 = f16;
      await this.clicks.feed();
    } catch (err) {
      forget();
      if (S.token === v.token) this.status.say(`could not fetch the image embedding (${err.message || err}); upload it again`);
    }
  }

  async show(v) {
    const { S, prompts, debug, draw } = this;
    if (S.device) return;   // on-device mode: the server's image stays where it is, untouched
    if (!v || !v.image) {
      S.view = null; S.token = null; S.f16 = null; S.image = "none"; debug.imageReady = false;
      draw.hideImage(); prompts.st = emptyPrompts(); draw.redraw(); this.status.render(); return;
    }
    const newImage = S.token !== v.token;
    S.view = v;
    S.refine = debug.refine = v.refine !== false;
    S.maxPoints = v.max_points || S.maxPoints;
    this.state.keptPending = 0;
    if (newImage) {
      // back from on-device mode to the same image: its prompts, mask and embedding as they were
      const back = this.resume && this.resume.token === v.token ? this.resume : null;
      this.resume = null;
      S.token = v.token; S.f16 = back ? back.f16 : null; S.image = "fetching"; debug.imageReady = false;
      resetPrompts(prompts, back ? back.st : undefined); draw.scene.preview = null; draw.scene.kb = null;
      S.lastMs = back ? back.lastMs : null;
      if (!S.f16) this.fetchEmbedding(v);
      await draw.showImage(v.image);
      if (S.view !== v) return;   // another image came meanwhile
      draw.sizeTo(v);
      draw.clearKept();
      if (!back) draw.revealStage();
      draw.redraw();
      if (S.f16) this.clicks.feed();
      const st = prompts.st, r = st.result;   // a decode cut short by the switch: decode them now
      const stale = (st.points.length || st.box) && (!r || r.forPoints !== st.points || r.forBox !== st.box);
      if (st.queued || stale) this.clicks.run();
    }
    if (v.objects) {
      const o = new Image();
      await new Promise((ok) => { o.onload = ok; o.onerror = ok; o.src = v.objects; });
      if (S.view === v) { draw.clearKept(); draw.drawKeptImage(o); }
    } else draw.clearKept();
    draw.redraw();
  }
  showValue() { return this.show(this.props.value); }

  // The server decodes this image's prompts: server mode, until the page's decoder holds it.
  canDecode() {
    const S = this.S;
    return !!(S.view && S.token && !S.device && !S.view.local && S.cfg && S.image !== "uploading");
  }

  // The prompts (image pixels) decoded on the server -> the worker's reply: {low, iou, selected,
  // ms, paints} (only the selected candidate painted; the others when chosen).
  async decode(points, box, prev, paint) {
    const S = this.S, t0 = performance.now();
    const hint = S.refine && prev && !multimaskFor(points, box) ? halfB64(prev.low[prev.selected]) : null;
    const r = await fetch(`/msw/decode/${encodeURIComponent(S.token)}`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ points, box, mask_f16: hint }),
    });
    if (!r.ok) {
      let detail = `HTTP ${r.status}`;
      try { detail = (await r.json()).detail || detail; } catch (err) { /* not JSON */ }
      throw new Error(detail);
    }
    const iou = (r.headers.get("X-MSW-Scores") || "").split(",").map(Number), ms = +r.headers.get("X-MSW-Ms");
    const half = new Uint16Array(await r.arrayBuffer());
    const low = iou.map((_, i) => halfToFloat(half.subarray(i * 65536, (i + 1) * 65536)));
    const selected = iou.indexOf(Math.max(...iou));
    const paints = low.map(() => null);
    paints[selected] = await this.clicks.paintLow(low[selected], paint);
    return { low, iou, selected, ms, paints, server: true, totalMs: performance.now() - t0 };
  }

  payload() {   // the current mask as the server stores it
    const st = this.prompts.st, r = st.result, low = r.low[r.selected];
    const half = new Uint16Array(low.length);   // float16 bits, as the server stores masks' logits
    for (let i = 0; i < low.length; i++) half[i] = toHalf(low[i]);
    return { low_res_f16: b64(new Uint8Array(half.buffer)), score: r.iou[r.selected], points: st.points, box: st.box };
  }
  keep() { this.trigger("keep", this.payload()); this.state.keptPending++; }   // the server's layer follows
  exportNow() {
    const before = downloadLinks();
    this.trigger("export", this.prompts.st.result && !this.S.busy ? this.payload() : {});
    this.status.say("preparing downloads (they appear under Downloads)", 5000);
    this.revealDownloads(before);
  }

  // The server's downloads land in Gradio's file list, maybe in the other column or below the
  // fold: once the new ones are there, bring them into view and give them the focus.
  async revealDownloads(before, waitMs = 60000) {
    for (let t = 0; t < waitMs; t += 200) {
      await new Promise((ok) => setTimeout(ok, 200));
      const links = downloadLinks();
      if (links.length && links.join() !== before.join()) {
        const box = document.querySelector("#msw-files");
        box.scrollIntoView({ behavior: "smooth", block: "nearest" });
        box.querySelector("a[href]").focus({ preventScroll: true });
        this.debug.downloadsShown = (this.debug.downloadsShown || 0) + 1;
        return;
      }
    }
  }
  keptCount() { return (this.S.view.objects_count || 0) + this.state.keptPending; }
}
