"""jaxloss: JAX loss functions with closed-form, transform-safe derivative rules."""

from importlib.metadata import PackageNotFoundError, version

from jaxloss._binary import binary_cross_entropy as binary_cross_entropy
from jaxloss._binary import sigmoid_binary_cross_entropy as sigmoid_binary_cross_entropy
from jaxloss._classification import nll_loss as nll_loss
from jaxloss._classification import softmax_cross_entropy as softmax_cross_entropy
from jaxloss._classification import (
    softmax_cross_entropy_with_integer_labels as softmax_cross_entropy_with_integer_labels,
)

try:
    __version__ = version("jaxloss")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
