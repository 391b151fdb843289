"""What a reviewer works with after QC.

One case: pictures in the three anatomical orientations with class-coloured error overlays and boxes
(``orientation``, ``pictures``), the flags and plain-language explanations of the estimates (``flags``,
``explanations``), the case's HTML page (``case_page``) and a script that opens the case in 3D Slicer
(``slicer_script``); used by ``segqc run --html`` and by every case of ``segqc rank``.  A dataset: the reviewer's
verdict on a case (``rating``), the case queue read from a ``segqc rank`` output folder (``queue``) and the review
statuses the Slicer module's case queue writes beside the ranking (``status_file``), which the ranking page and
``segqc corrections export --queue`` read too.
"""
