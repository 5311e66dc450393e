// The browser-mode segment canvas. Prompts are decoded in Web Workers (msw_worker.js); the server
// only hears about a mask when the user keeps or exports it (triggers "keep", "export"). If no
// backend works, the widget asks the server to decode instead (trigger "fallback").
//
// mount() creates the page's parts and wires them together; each part is a module of its own:
//   msw_template.js   the widget's markup and style
//   msw_status.js     the page's state machine and its status line
//   msw_prompts.js    the prompts (points, box, undo) and the decoder request they make (pure)
//   msw_draw.js       the image, the overlay, the kept objects' layer, the candidate buttons
//   msw_clicks.js     the click worker: decoding the prompts, the prompts' edits
//   msw_hover.js      hover previews, in a worker of their own
//   msw_input.js      pointer, touch and keyboard
//   msw_actions.js    the bar: undo, clear, keep, export
//   msw_server.js     server mode: the server's value, the embedding, keep/export triggers
//   msw_device.js     on-device mode: switching, the encoder, the kept objects
//   msw_open.js       on-device mode: opening (picker, drop, paste, examples) and encoding an image
//   msw_downloads.js  on-device mode: the downloads
//   msw_start.js      the config and the decoder's load
import { Actions } from "./msw_actions.js";
import { Clicks } from "./msw_clicks.js";
import { Device } from "./msw_device.js";
import { Downloads } from "./msw_downloads.js";
import { coarse, Drawing } from "./msw_draw.js";
import { Hover } from "./msw_hover.js";
import { Input } from "./msw_input.js";
import { Opener } from "./msw_open.js";
import { createPrompts } from "./msw_prompts.js";
import { Server } from "./msw_server.js";
import { startPage } from "./msw_start.js";
import { createPageState, createStatus } from "./msw_status.js";
import { buildRoot } from "./msw_template.js";

// standalone: {configUrl} for a page of its own (the static site): on-device mode only.
export function mount({ element, props, trigger, watch, standalone }) {
  if (element.__mswDispose) element.__mswDispose();
  const root = buildRoot(element);
  if (standalone) root.classList.add("msw-standalone");   // a page of its own: controls once there is an image
  const $ = (s) => root.querySelector(s);
  const debug = (window.mswDebug = { ready: false, imageReady: false, hoverCount: 0, clicks: [], events: [] });
  const S = createPageState(), prompts = createPrompts();
  const status = createStatus({ S, prompts, coarse, techEl: $(".msw-tech"), liveEl: $(".msw-live"), info: $(".msw-info") });
  // (the arrows call parts made further down: only once everything is made)
  const draw = new Drawing({ root, S, prompts, debug, status, pick: (i) => clicks.pick(i),
                             keptCount: () => (S.view.local ? device.state.kept.length : server.keptCount()) });
  const hover = new Hover({ S, prompts, debug, draw, status });
  const clicks = new Clicks({ S, prompts, debug, draw, status, hover });
  const server = new Server({ S, prompts, debug, draw, status, clicks, props, trigger });
  if (!standalone) clicks.server = server;
  const device = new Device({ S, prompts, debug, root, draw, status, clicks, server, standalone });
  const downloads = new Downloads({ S, prompts, debug, root, status, clicks, device });
  const opener = new Opener({ S, prompts, debug, root, draw, status, clicks, device, downloads });
  const actions = new Actions({ S, prompts, root, draw, status, clicks, device, downloads, server });
  new Input({ S, prompts, root, draw, clicks, hover, actions });
  debug.state = () => ({ decoder: S.decoder, image: S.image, hover: S.hover, points: prompts.st.points.length,
                         at: prompts.st.points.map((q) => q.slice()),   // [x, y, label] in image pixels
                         queued: !!prompts.st.queued, result: !!prompts.st.result, backend: S.backend,
                         iou: prompts.st.result ? Array.from(prompts.st.result.iou) : null,
                         selected: prompts.st.result ? prompts.st.result.selected : null,
                         device: !!S.device, encoder: S.encoder, kept: device.state.kept.length });

  startPage({ S, debug, status, clicks, device, opener, trigger, standalone });
  if (watch) watch("value", () => server.show(props.value));
  server.show(props.value);
  server.announceEarlyUpload();
  element.__mswDispose = () => {
    for (const part of [clicks, hover, opener, device, downloads]) part.dispose();
  };
}
