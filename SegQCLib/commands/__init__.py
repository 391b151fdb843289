"""Sub-commands of the segqc command line."""
