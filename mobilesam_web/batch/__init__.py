"""Labelling whole folders: the job and its inputs (`job`), one image's segmentation
(`segmenter`), resumable outputs (`output`), run locally (`run`) or as a Ray Data job (`ray_job`)."""
