"""ngl_keras: NGL, AnyLoss and the paper's baselines as Keras 3 losses, the seven-dataset
evaluation, and the genetic-programming loss search."""

from ngl_keras import losses
from ngl_keras.losses import (
    NGL, AnyLoss, BiTemperedLogisticLoss, ExpressionLoss, SoftDice, SymmetricCrossEntropy,
)

__version__ = "0.1.0"

__all__ = [
    "NGL", "AnyLoss", "BiTemperedLogisticLoss", "ExpressionLoss", "SoftDice",
    "SymmetricCrossEntropy", "losses",
]
