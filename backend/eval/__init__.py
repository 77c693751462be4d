"""Evaluation: DAVIS J/F metrics, click simulation and the protocol runner.

``metrics`` scores index-map predictions (official DAVIS rules), ``clicks`` simulates the
annotator, ``davis`` reads/writes DAVIS folders and ``runner`` drives the whole protocol
through the same engine and pipeline the server uses (``python -m backend eval``).
"""
