"""Reviewing cases after QC: the reviewer's verdict on a case (``rating``), the case queue read from a ``segqc rank``
output folder (``queue``) and the review statuses written back beside its ranking (``status_file``), written by the
Slicer module's case queue and meant to be read by the command line and the active-learning export (which does not
read it yet)."""
