"""Expert corrections flow back as training data: ``store`` (the crash-safe, versioned store) with its
``names``, ``records``, ``inputs``, ``index`` and ``verify`` parts, and ``export`` (nnU-Net, MONAI,
QC training sets).
"""
