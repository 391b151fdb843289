"""The QC network: ``config`` (what config.json holds), ``qcresunet`` (the torch modules), ``package`` (a model
package on disk: config, weights, card) and ``inference`` (a case's arrays -> per-class error probabilities Ê).
"""
