"""jaxloss: JAX loss functions with closed-form, transform-safe derivative rules."""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from jaxloss._binary import binary_cross_entropy as binary_cross_entropy
from jaxloss._binary import sigmoid_binary_cross_entropy as sigmoid_binary_cross_entropy
from jaxloss._boxes import complete_box_iou_loss as complete_box_iou_loss
from jaxloss._boxes import distance_box_iou_loss as distance_box_iou_loss
from jaxloss._boxes import generalized_box_iou_loss as generalized_box_iou_loss
from jaxloss._classification import nll_loss as nll_loss
from jaxloss._classification import poly_loss_cross_entropy as poly_loss_cross_entropy
from jaxloss._classification import safe_softmax_cross_entropy as safe_softmax_cross_entropy
from jaxloss._classification import smooth_labels as smooth_labels
from jaxloss._classification import softmax_cross_entropy as softmax_cross_entropy
from jaxloss._classification import (
    softmax_cross_entropy_with_integer_labels as softmax_cross_entropy_with_integer_labels,
)
from jaxloss._ctc import ctc_loss as ctc_loss
from jaxloss._ctc import ctc_loss_with_forward_probs as ctc_loss_with_forward_probs
from jaxloss._dice import binary_dice_loss as binary_dice_loss
from jaxloss._dice import dice_loss as dice_loss
from jaxloss._dice import (
    multiclass_generalized_dice_loss as multiclass_generalized_dice_loss,
)
from jaxloss._divergence import convex_kl_divergence as convex_kl_divergence
from jaxloss._divergence import generalized_kl_divergence as generalized_kl_divergence
from jaxloss._divergence import jensen_shannon_divergence as jensen_shannon_divergence
from jaxloss._divergence import kl_divergence as kl_divergence
from jaxloss._divergence import (
    kl_divergence_with_log_targets as kl_divergence_with_log_targets,
)
from jaxloss._focal import sigmoid_focal_loss as sigmoid_focal_loss
from jaxloss._focal import softmax_focal_loss as softmax_focal_loss
from jaxloss._hinge import hinge_loss as hinge_loss
from jaxloss._hinge import multi_margin_loss as multi_margin_loss
from jaxloss._hinge import multiclass_hinge_loss as multiclass_hinge_loss
from jaxloss._hinge import multiclass_perceptron_loss as multiclass_perceptron_loss
from jaxloss._hinge import perceptron_loss as perceptron_loss
from jaxloss._hinge import squared_hinge_loss as squared_hinge_loss
from jaxloss._keras import categorical_hinge as categorical_hinge
from jaxloss._keras import mean_absolute_percentage_error as mean_absolute_percentage_error
from jaxloss._keras import mean_squared_logarithmic_error as mean_squared_logarithmic_error
from jaxloss._large_vocab import fused_linear_distillation_loss as fused_linear_distillation_loss
from jaxloss._large_vocab import fused_linear_log_probs as fused_linear_log_probs
from jaxloss._large_vocab import (
    fused_linear_softmax_cross_entropy as fused_linear_softmax_cross_entropy,
)
from jaxloss._large_vocab import (
    vocab_parallel_fused_linear_softmax_cross_entropy as vocab_parallel_fused_linear_softmax_cross_entropy,  # noqa: E501
)
from jaxloss._large_vocab import (
    vocab_parallel_softmax_cross_entropy as vocab_parallel_softmax_cross_entropy,
)
from jaxloss._margin import cosine_embedding_loss as cosine_embedding_loss
from jaxloss._margin import hinge_embedding_loss as hinge_embedding_loss
from jaxloss._margin import margin_ranking_loss as margin_ranking_loss
from jaxloss._margin import multilabel_margin_loss as multilabel_margin_loss
from jaxloss._margin import multilabel_soft_margin_loss as multilabel_soft_margin_loss
from jaxloss._margin import soft_margin_loss as soft_margin_loss
from jaxloss._margin import triplet_margin_with_distance_loss as triplet_margin_with_distance_loss
from jaxloss._preference import dpo_loss as dpo_loss
from jaxloss._preference import orpo_odds_ratio_loss as orpo_odds_ratio_loss
from jaxloss._preference import simpo_loss as simpo_loss
from jaxloss._ranking import ranking_softmax_loss as ranking_softmax_loss
from jaxloss._regression import absolute_error as absolute_error
from jaxloss._regression import gaussian_nll_loss as gaussian_nll_loss
from jaxloss._regression import huber_loss as huber_loss
from jaxloss._regression import l2_loss as l2_loss
from jaxloss._regression import log_cosh as log_cosh
from jaxloss._regression import poisson_nll_loss as poisson_nll_loss
from jaxloss._regression import smooth_l1_loss as smooth_l1_loss
from jaxloss._regression import squared_error as squared_error
from jaxloss._similarity import cosine_distance as cosine_distance
from jaxloss._similarity import cosine_similarity as cosine_similarity
from jaxloss._similarity import ntxent as ntxent
from jaxloss._similarity import triplet_margin_loss as triplet_margin_loss
from jaxloss._sparsemax import make_fenchel_young_loss as make_fenchel_young_loss
from jaxloss._sparsemax import multiclass_sparsemax_loss as multiclass_sparsemax_loss
from jaxloss._sparsemax import sparsemax_loss as sparsemax_loss

try:
    __version__ = _version("jaxloss")
except _PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
