"""QC of a whole dataset, ranked worst first: ``runner.run_batch`` over the per-case steps (``case_steps``),
locally, in worker processes (``workers``) or on Ray (``ray_workers``), with ``resume``; its outputs are
``results`` (rows, ranking.csv), ``thumbnails`` and the ``index_page``.
"""
