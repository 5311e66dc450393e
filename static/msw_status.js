// The page's state and its status line.
//
// The page is a small state machine, so any order of events ends in a working canvas:
//   decoder: loading -> ready | failed          (the click worker, started at once)
//   image:   none -> uploading -> fetching -> ready   (per upload; the embedding is fetched as
//            soon as the server sends the image, whether or not the decoder has loaded)
// Clicks made before both are ready are kept (markers shown) and decoded as soon as they are.
// On-device mode (msw_device.js):
//   encoder: off -> loading -> ready | failed;   image: none -> encoding -> ready
// and the hover previews (msw_hover.js): hover: off -> loading -> ready | slow | failed.

export const MB = (b) => (b / 1048576).toFixed(1);

// A download's progress "got/total MB" as it goes over the wire: the worker counts uncompressed
// bytes, the server may send the file gzip-compressed (`transfer_bytes`), so every size on the
// page (the note beside the on-device switch too) is the one the visitor's line carries.
export function progressMB(load, model) {
  const scale = model && model.transfer_bytes && model.bytes ? model.transfer_bytes / model.bytes : 1;
  return `${MB(load.got * scale)}/${MB(load.total * scale)} MB`;
}

export function createPageState() {
  return {
    cfg: null, decoder: "loading", load: null, model: null, backendLabel: "",
    image: "none", view: null, token: null, f16: null, lastMs: null,
    hover: "off", hoverNote: "", message: "",
    busy: false,                    // a click's decode is running
    refine: true, maxPoints: 64,   // the server's settings (its value, or the config)
  };
}

// The server decodes a server image's prompts until the page's own decoder holds its embedding.
export const serverImage = (S) => !!(S.view && !S.view.local && !S.device && S.cfg && S.image !== "uploading");

function decoderParts(S, tech, parts) {
  if (S.decoder === "loading") {
    const got = S.load && S.load.total ? ` ${progressMB(S.load, S.cfg && S.cfg.decoder)}` : "";
    if (serverImage(S)) tech.push(`loading the in-browser decoder${got} (the server decodes meanwhile)`);
    else parts.push(`loading the in-browser decoder${got}`);
  } else if (S.decoder === "ready") {
    const m = S.model;
    const wire = (S.transferred || 0) + (S.hoverTransferred || 0);   // every model and the runtime
    tech.push(`${S.backendLabel} · decoder ${MB(m.bytes)} MB ${m.cached ? "(cached)" : "(downloaded)"}` +
              (wire ? ` · ${MB(wire)} MB transferred` : ""));
  } else parts.push(`in-browser decoding unavailable: ${S.error}`);
  if (S.device) {
    if (S.encoder === "loading") {
      parts.push(S.encLoad && S.encLoad.total ? `loading the encoder ${progressMB(S.encLoad, S.cfg && S.cfg.encoder)} (once; cached afterwards)`
                                              : "loading the encoder (once; cached afterwards)");
    } else if (S.encoder === "ready") tech.push(`encoder ${S.encoderInfo.cached ? "cached" : "downloaded"}`);
    else if (S.encoder === "failed") parts.push(`the encoder could not be loaded (${S.encError}); opening an image tries again`);
  }
}

function imageParts(S, st, parts) {
  if (S.image === "none") parts.push(S.device ? "open an image (it stays on this device) or pick an example" : "upload an image or pick an example");
  else if (S.image === "encoding") parts.push(`encoding on this device… ${S.encodeClock || ""}`.trim());
  else if (S.image === "uploading") parts.push("uploading and encoding the image on the server");
  else if (S.image === "fetching" && !serverImage(S)) parts.push("fetching the image embedding");
  else if (st.points.length || st.box) {
    if (st.queued) parts.push(`${st.points.length + (st.box ? 1 : 0)} prompt(s) queued: decoding once the decoder has loaded`);
    else if (S.busy) parts.push(S.decodingOn === "server" ? "decoding on the server…" : "decoding…");
    else if (st.result && S.lastMs !== null) {
      parts.push(`decoded ${S.lastOn === "server" ? "on the server " : ""}in ${S.lastMs.toFixed(0)} ms · ` +
                 `predicted IoU ${st.result.iou[st.result.selected].toFixed(3)}`);
    }
  } else if ((S.image === "ready" && S.decoder === "ready") || serverImage(S)) {
    parts.push(S.view.local && S.encodeMs ? `encoded here in ${(S.encodeMs / 1000).toFixed(1)} s · ready — click an object`
                                          : "ready — click an object");
  }
  else if (S.image === "ready") parts.push("image ready");
}

// The line's two parts (pure): what runs here (backend, bytes) and what is happening.
// S: the page state; st: the prompts (msw_prompts.js); coarse: a touch screen.
export function statusText(S, st, coarse) {
  const tech = [], parts = [];
  decoderParts(S, tech, parts);
  imageParts(S, st, parts);
  if (st.corner) parts.push(`${coarse ? "tap" : "click"} the opposite corner of the box`);
  if (S.hoverNote) parts.push(S.hoverNote);
  if (S.message) parts.push(S.message);
  return { tech: tech.length ? tech.join(" · ") + " · " : "", live: parts.join(" · ") };
}

// The line on the page: the technical part is not announced; the other is a live region,
// written only when it changes, so screen readers hear news, not redraws.
export function createStatus({ S, prompts, coarse, techEl, liveEl, info }) {
  const state = { timer: 0 };   // clears a passing note
  function render() {
    const { tech, live } = statusText(S, prompts.st, coarse());
    if (techEl.textContent !== tech) techEl.textContent = tech;
    if (liveEl.textContent !== live) liveEl.textContent = live;
    info.dataset.state = `${S.decoder}/${S.image}`;
    info.closest(".msw-root").classList.toggle("msw-no-image", !S.view);
    info.title = tech;   // where the engine details are hidden (the static site), they stay a hover away
    if (S.decoder === "ready") { info.dataset.backend = S.backend; if (S.lastMs !== null) info.dataset.lastMs = S.lastMs.toFixed(2); }
  }
  function say(msg, ms = 0) {   // ms > 0: a passing note, cleared after that long
    S.message = msg || ""; clearTimeout(state.timer);
    if (msg && ms) state.timer = setTimeout(() => { if (S.message === msg) say(""); }, ms);
    render();
  }
  return { render, say };
}
