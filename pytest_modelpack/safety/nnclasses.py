"""The nn.Module classes of ``torch.nn.modules``, by name: what a golden may name there.

Pickle names a module class by its own ``__module__`` and ``__qualname__``
(``torch.nn.modules.linear.Linear``); every other capitalised name those modules hold is an
import (``Tensor``, ``Parameter``, ``Size``, ``OrderedDict``, ``NamedTuple``...), never a module a
model holds, and instantiating or restoring one by that alias bypasses the checks of the call
table (a ``Tensor(cdata=...)`` crashes torch). Listed, not computed, so that a scan never imports
torch; the loader also checks, at resolve time, that the class is what the list says
(:func:`is_module_class`), and tests/test_redteam3.py checks the list against the installed
torch. A class a newer torch adds is trusted where the live model's own pickle uses it.
"""

from __future__ import annotations

from typing import Any

PREFIX = "torch.nn.modules."

_LISTED = (
    "activation: CELU ELU GELU GLU Hardshrink Hardsigmoid Hardswish Hardtanh LeakyReLU\n"
    "    LogSigmoid LogSoftmax Mish MultiheadAttention PReLU RReLU ReLU ReLU6 SELU SiLU Sigmoid\n"
    "    Softmax Softmax2d Softmin Softplus Softshrink Softsign Tanh Tanhshrink Threshold\n"
    "adaptive: AdaptiveLogSoftmaxWithLoss\n"
    "batchnorm: BatchNorm1d BatchNorm2d BatchNorm3d LazyBatchNorm1d LazyBatchNorm2d\n"
    "    LazyBatchNorm3d SyncBatchNorm\n"
    "channelshuffle: ChannelShuffle\n"
    "container: Container ModuleDict ModuleList ParameterDict ParameterList Sequential\n"
    "conv: Conv1d Conv2d Conv3d ConvTranspose1d ConvTranspose2d ConvTranspose3d LazyConv1d\n"
    "    LazyConv2d LazyConv3d LazyConvTranspose1d LazyConvTranspose2d LazyConvTranspose3d\n"
    "distance: CosineSimilarity PairwiseDistance\n"
    "dropout: AlphaDropout Dropout Dropout1d Dropout2d Dropout3d FeatureAlphaDropout\n"
    "flatten: Flatten Unflatten\n"
    "fold: Fold Unfold\n"
    "instancenorm: InstanceNorm1d InstanceNorm2d InstanceNorm3d LazyInstanceNorm1d\n"
    "    LazyInstanceNorm2d LazyInstanceNorm3d\n"
    "linear: Bilinear Identity LazyLinear Linear NonDynamicallyQuantizableLinear\n"
    "loss: BCELoss BCEWithLogitsLoss CTCLoss CosineEmbeddingLoss CrossEntropyLoss\n"
    "    GaussianNLLLoss HingeEmbeddingLoss HuberLoss KLDivLoss L1Loss LinearCrossEntropyLoss\n"
    "    MSELoss MarginRankingLoss MultiLabelMarginLoss MultiLabelSoftMarginLoss\n"
    "    MultiMarginLoss NLLLoss NLLLoss2d PoissonNLLLoss SmoothL1Loss SoftMarginLoss\n"
    "    TripletMarginLoss TripletMarginWithDistanceLoss\n"
    "module: Module\n"
    "normalization: CrossMapLRN2d GroupNorm LayerNorm LocalResponseNorm RMSNorm\n"
    "padding: CircularPad1d CircularPad2d CircularPad3d ConstantPad1d ConstantPad2d\n"
    "    ConstantPad3d ReflectionPad1d ReflectionPad2d ReflectionPad3d ReplicationPad1d\n"
    "    ReplicationPad2d ReplicationPad3d ZeroPad1d ZeroPad2d ZeroPad3d\n"
    "pixelshuffle: PixelShuffle PixelUnshuffle\n"
    "pooling: AdaptiveAvgPool1d AdaptiveAvgPool2d AdaptiveAvgPool3d AdaptiveMaxPool1d\n"
    "    AdaptiveMaxPool2d AdaptiveMaxPool3d AvgPool1d AvgPool2d AvgPool3d FractionalMaxPool2d\n"
    "    FractionalMaxPool3d LPPool1d LPPool2d LPPool3d MaxPool1d MaxPool2d MaxPool3d\n"
    "    MaxUnpool1d MaxUnpool2d MaxUnpool3d\n"
    "rnn: GRU GRUCell LSTM LSTMCell RNN RNNBase RNNCell RNNCellBase\n"
    "sparse: Embedding EmbeddingBag\n"
    "transformer: Transformer TransformerDecoder TransformerDecoderLayer TransformerEncoder\n"
    "    TransformerEncoderLayer\n"
    "upsampling: Upsample UpsamplingBilinear2d UpsamplingNearest2d\n"
)

#: ``(module, qualname)`` of every public nn.Module subclass defined in ``torch.nn.modules.*``.
TORCH_MODULE_CLASSES = frozenset(
    (PREFIX + line.partition(":")[0].strip(), name)
    for line in "".join(_LISTED).replace("\n    ", " ").splitlines()
    for name in line.partition(":")[2].split()
)


def is_module_class(obj: Any, module: str, qualname: str) -> bool:
    """Is ``obj`` (resolved from ``module.qualname``) an nn.Module subclass defined there?"""
    import torch

    return (
        isinstance(obj, type)
        and issubclass(obj, torch.nn.Module)
        and obj.__module__ == module
        and obj.__qualname__ == qualname
    )
