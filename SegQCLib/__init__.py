"""SegQC computation library: everything that does not need Slicer, Qt or VTK.

Data flows one way: io (arrays + geometry) -> inference (error probabilities) -> estimates / regions /
ranking -> report.  Every front end (CLI, HTML report, Slicer module) calls the same engine.
"""

__version__ = "0.1.0"
