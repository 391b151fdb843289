"""Helpers of the SegQC Slicer module, in a package so that Slicer's scripted-module factory does not load them
as modules: ``logic`` (the scene logic: MRML, no Qt) and ``process`` (the background ``segqc run`` process).
"""
