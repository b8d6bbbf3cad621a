"""Lessons: checks for the notebooks' exercises and the student versions of the notebooks.

``checks`` runs a student's function on small synthetic data (no artifact store, well under a
second each) and says *what* is wrong; ``student`` writes the student versions of the notebooks
(``python -m mono_utils lessons --out exercises/``) from the cell tags of ``notebooks/``.
"""
from .checks import (CheckResult, ExerciseFailed, Verdict, check_best_feature_for_context, check_clamp_hook,
                     check_fvu, check_link_parents, check_loss_recovered, check_max_activation_correlation,
                     check_mlp_activations, check_project_decoder_grad, check_sae_forward, check_sae_loss,
                     check_sae_train_step, check_simulation_score, check_specificity_sensitivity,
                     check_top_neuron_for_token, planted_features, planted_run, reference_best_feature, set_graded,
                     verdict)
from .evaluation_checks import check_absorption_rate

__all__ = ["CheckResult", "ExerciseFailed", "Verdict", "check_absorption_rate", "check_best_feature_for_context",
           "check_clamp_hook",
           "check_fvu", "check_link_parents", "check_loss_recovered", "check_max_activation_correlation",
           "check_mlp_activations", "check_project_decoder_grad", "check_sae_forward", "check_sae_loss",
           "check_sae_train_step", "check_simulation_score", "check_specificity_sensitivity",
           "check_top_neuron_for_token", "planted_features", "planted_run", "reference_best_feature", "set_graded",
           "verdict"]
