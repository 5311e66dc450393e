"""Segment everything: MobileSAMv2's object-aware detector (`detector`) and box-prompt pipeline
(`pipeline`), and SAM's grid of points (`grid`) as the baseline it is measured against."""
