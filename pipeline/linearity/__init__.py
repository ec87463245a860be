"""How linear is a concept? Measured per model version and layer (``gnomon report``).

- :mod:`~pipeline.linearity.probes`: linear vs small MLP probe, same splits and budget;
- :mod:`~pipeline.linearity.erasure`: LEACE, then fresh linear and MLP probes;
- :mod:`~pipeline.linearity.agreement`: cosines between the fitting methods' directions;
- :mod:`~pipeline.linearity.control`: dose-response (fluent-range R^2, saturation) and
  interpolation between the class means, on a live model;
- :mod:`~pipeline.linearity.composition`: additivity of mixes, cross-talk, cosines;
- :mod:`~pipeline.linearity.verdict`: layer classes and the concept's one-line verdict,
  from :mod:`~pipeline.linearity.thresholds`;
- :mod:`~pipeline.linearity.layers`: one layer's representation figures from its splits;
- :mod:`~pipeline.linearity.render`: terminal table, PNG plots, the static HTML page.

Nothing here imports ray or mlflow; ``jobs/stages/report_job.py`` orchestrates.
"""

from pipeline.linearity.thresholds import DEFAULT, Thresholds

__all__ = ["DEFAULT", "Thresholds"]
