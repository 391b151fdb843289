"""Reviewing cases after QC: the reviewer's verdict on a case (``rating``), the case queue read from a ``segqc rank``
output folder (``queue``) and the review statuses written back beside its ranking (``status_file``), shared by the
Slicer module, the command line and the active-learning export."""
