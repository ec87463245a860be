"""Evasion: when a model is trained against a linear monitor, where does the concept go?

:mod:`pipeline.evasion.figures` measures one checkpoint layer by layer (the frozen monitor,
retrained linear and MLP probes, the MLP after LEACE, the angle to the original direction);
:mod:`pipeline.evasion.verdict` names what happened; :mod:`pipeline.fleet.evade` trains the
series (``gnomon fleet build --only evade-<concept>``); ``gnomon evasion`` runs it on a fleet.
"""

from pipeline.evasion.figures import Monitor, auroc_se, checkpoint_figures, monitor_from_base
from pipeline.evasion.verdict import DROP, verdict

__all__ = ["DROP", "Monitor", "auroc_se", "checkpoint_figures", "monitor_from_base", "verdict"]
