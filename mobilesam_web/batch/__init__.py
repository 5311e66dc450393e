"""Labelling whole folders: the job and its inputs (`job`), one image's segmentation
(`segmenter`), resumable outputs (`output`), run locally (`run`) or as a Ray Data job (`ray_job`)."""

from .job import JobError, SegmentJob
from .run import run_local

__all__ = ["JobError", "SegmentJob", "run_local"]
