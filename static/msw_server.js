// The server bridge (server mode). The server encodes an upload and sends a value: the image,
// its embedding's URL, the kept objects' layer and its settings. Prompts are decoded here, in
// the workers; the server only hears about a mask when the user keeps or exports it (triggers
// "keep", "export"). (If no backend works here, msw_start.js asks it to decode: "fallback".)
import { b64, toHalf } from "./msw_runtime.js";
import { emptyPrompts, resetPrompts } from "./msw_prompts.js";

export class Server {
  constructor({ S, prompts, debug, draw, status, clicks, props, trigger }) {
    Object.assign(this, { S, prompts, debug, draw, status, clicks, props, trigger });
    this.state = { keptPending: 0 };   // kept since the server's last value (the next colour)
    // Tell the visitor that an upload is on its way (the server answers once it has encoded it).
    const uploadBox = document.querySelector("#msw-upload");
    const onUpload = () => { if (S.image !== "uploading") { S.image = "uploading"; status.render(); } };
    if (uploadBox) { uploadBox.addEventListener("change", onUpload, true); uploadBox.addEventListener("drop", onUpload, true); }
  }

  async fetchEmbedding(v) {
    const S = this.S;
    try {
      const r = await fetch(v.embedding);
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const f16 = await r.arrayBuffer();
      if (S.token !== v.token) return;          // another image came meanwhile
      S.f16 = f16;
      await this.clicks.feed();
    } catch (err) {
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
      S.token = v.token; S.f16 = null; S.image = "fetching"; debug.imageReady = false;
      resetPrompts(prompts); draw.scene.preview = null; draw.scene.kb = null; S.lastMs = null;
      const embedding = this.fetchEmbedding(v);   // in parallel with drawing (and with the decoder's download)
      await draw.showImage(v.image);
      draw.sizeTo(v);
      draw.clearKept();
      draw.revealStage();
      draw.redraw();
      await embedding;
    }
    if (v.objects) {
      const o = new Image();
      await new Promise((ok) => { o.onload = ok; o.onerror = ok; o.src = v.objects; });
      if (S.view === v) { draw.clearKept(); draw.drawKeptImage(o); }
    } else draw.clearKept();
    draw.redraw();
  }
  showValue() { return this.show(this.props.value); }

  payload() {   // the current mask as the server stores it
    const st = this.prompts.st, r = st.result, low = r.low[r.selected];
    const half = new Uint16Array(low.length);   // float16 bits, as the server stores masks' logits
    for (let i = 0; i < low.length; i++) half[i] = toHalf(low[i]);
    return { low_res_f16: b64(new Uint8Array(half.buffer)), score: r.iou[r.selected], points: st.points, box: st.box };
  }
  keep() { this.trigger("keep", this.payload()); this.state.keptPending++; }   // the server's layer follows
  exportNow() {
    this.trigger("export", this.prompts.st.result && !this.S.busy ? this.payload() : {});
    this.status.say("preparing downloads (they appear under Downloads)", 5000);
  }
  keptCount() { return (this.S.view.objects_count || 0) + this.state.keptPending; }
}
