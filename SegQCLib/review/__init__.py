"""What a reviewer looks at for one case: pictures in the three anatomical orientations with class-coloured
error overlays and boxes (``orientation``, ``pictures``), the flags and plain-language explanations of the
estimates (``flags``, ``explanations``), the case's HTML page (``case_page``) and a script that opens the case in
3D Slicer (``slicer_script``).  Used by ``segqc run --html`` and by every case of ``segqc rank``.
"""
