"""The encoder family: classifiers, embedding models and token classifiers.

:mod:`edgeopt.encoder.family` declares its stages; the task adapters are in
:mod:`edgeopt.tasks`, its passes in :mod:`edgeopt.passes` and :mod:`edgeopt.quant`.
"""
