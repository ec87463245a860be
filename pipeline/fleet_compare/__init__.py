"""Comparing one concept across the versions of a fleet: direction cosines, probe transfer,
emergence over training, cross-width CKA, drift under fine-tuning, and their pictures.

Plain functions over arrays read from the activation store; ``jobs.stages.fleet_compare_job``
and ``jobs.stages.drift_job`` collect what is missing and run them over a fleet.
"""

from pipeline.fleet_compare.crosswidth import CrossWidth, cross_width
from pipeline.fleet_compare.data import LayerData, read_layer_data
from pipeline.fleet_compare.drift import (
           DriftPoint,
           behaviour_noise,
           drift_points,
           drift_summary,
           first_moved_layer,
           screening_auroc,
)
from pipeline.fleet_compare.drift_stats import CheckpointScores, drift_statistics, paired_shift, partial_r
from pipeline.fleet_compare.regurgitation import copied, held_out_prompts
from pipeline.fleet_compare.screening import auroc_ci, bag_of_words_scores, screening_table
from pipeline.fleet_compare.similarity import (
           cka_matrix,
           correspondence,
           cosine_matrix,
           linear_cka,
           pearson,
)
from pipeline.fleet_compare.transfer import (
           Emergence,
           Transfer,
           best_layer,
           emergence,
           mean_diff,
           score,
           transfer_matrix,
)

__all__ = [
           "CheckpointScores",
           "CrossWidth",
           "DriftPoint",
           "Emergence",
           "LayerData",
           "Transfer",
           "auroc_ci",
           "bag_of_words_scores",
           "behaviour_noise",
           "best_layer",
           "cka_matrix",
           "copied",
           "correspondence",
           "cosine_matrix",
           "cross_width",
           "drift_points",
           "drift_statistics",
           "drift_summary",
           "emergence",
           "first_moved_layer",
           "held_out_prompts",
           "linear_cka",
           "mean_diff",
           "paired_shift",
           "partial_r",
           "pearson",
           "read_layer_data",
           "score",
           "screening_auroc",
           "screening_table",
           "transfer_matrix",
]
