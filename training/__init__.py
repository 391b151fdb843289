"""SegQC training pipeline: query generation, segmenters for real model errors, QC network training, evaluation.

Everything here runs on CPU (hippocampus volumes are tiny); CUDA and mixed precision are used when present.
"""
