"""Image and mask data: bounded image decoding, SAM's resize of low-res logits to full-size masks
(in blocks), RLE and crops, polygons, PNGs and overlays, boxes, input checks.

The bottom layer: nothing here imports the engine, the pipelines or the applications."""
