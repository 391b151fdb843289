"""Files -> (z, y, x) arrays with their :class:`~SegQCLib.geometry.Geometry`, and back.

``volumes`` (the Volume / LabelMap types), ``image_files`` (NIfTI/NRRD/MHA readers and writers), ``seg_nrrd``
(Slicer segmentations), ``case`` (images + segmentation on one grid), ``datasets`` (nnU-Net raw folders).
"""
