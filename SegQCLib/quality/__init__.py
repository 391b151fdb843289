"""From error probabilities Ê to one report: ``estimates`` (Dice/IoU/ARVD from Ê), ``regions`` (error boxes),
``ranking`` (slices), ``postprocess`` (all of them -> ``report.Report``), ``outputs`` (the files of a run).

``metrics`` (true metrics against a ground truth) and ``evaluation`` (how good the predictions are) measure
the same quantities where the truth is known: corrections, training and validation.
"""
