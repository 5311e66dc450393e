"""Gradio Blocks for the segment-anything demo.

Per-user data (the image embedding and the prompts) lives in `gr.State`; the model is shared and
read-only, so two users never see each other's image or clicks.
"""
import time
from typing import Optional

import gradio as gr
import numpy as np
import torch

from ..build import load_mobile_sam
from ..predictor import SamPredictor
from ..weights import WeightsUnavailableError


def overlay(image: np.ndarray, mask: np.ndarray, color=(30, 144, 255), alpha: float = 0.5) -> np.ndarray:
    out = image.astype(np.float32).copy()
    out[mask] = out[mask] * (1 - alpha) + np.array(color, np.float32) * alpha
    return out.clip(0, 255).astype(np.uint8)


def build_app(checkpoint: Optional[str] = None) -> gr.Blocks:
    load_error = None
    model = None
    try:
        model = load_mobile_sam(checkpoint)
    except (WeightsUnavailableError, ValueError) as exc:
        load_error = str(exc)

    def require_model():
        if model is None:
            raise gr.Error(load_error)
        return model

    def encode(image: Optional[np.ndarray]):
        if image is None:
            return None, None, "Upload an image to start."
        m = require_model()
        predictor = SamPredictor(m)
        t = time.perf_counter()
        predictor.set_image(image)
        took = time.perf_counter() - t
        state = {"features": predictor.features, "size": predictor.original_size, "image": image, "points": []}
        return state, image, f"Encoded in {took:.2f} s. Click the object to segment."

    def click(state, evt: gr.SelectData):
        if not state:
            raise gr.Error("Upload an image first.")
        m = require_model()
        predictor = SamPredictor(m)
        predictor.set_embedding(state["features"], state["size"])
        state["points"].append(list(evt.index))
        pts = np.array(state["points"], np.float64)
        t = time.perf_counter()
        masks, scores, _ = predictor.predict(pts, np.ones(len(pts)), multimask_output=len(pts) == 1)
        took = time.perf_counter() - t
        best = int(np.argmax(scores))
        return state, overlay(state["image"], masks[best]), f"Decoded in {took * 1e3:.0f} ms, IoU {scores[best]:.3f}"

    with gr.Blocks(title="MobileSAM") as demo:
        gr.Markdown("# MobileSAM — segment anything")
        if load_error:
            gr.Markdown(f"**Model weights unavailable.** {load_error}")
        state = gr.State(None)
        with gr.Row():
            inp = gr.Image(type="numpy", label="Image", image_mode="RGB")
            out = gr.Image(type="numpy", label="Click to segment", interactive=False)
        status = gr.Markdown("Upload an image to start.")
        inp.change(encode, inp, [state, out, status])
        out.select(click, state, [state, out, status])
    return demo
