"""Plain torch networks that the lifted engine knows how to lift (MLP, ResNet), and the one
checkpoint format of every trained network (:mod:`.checkpoint`)."""
from .checkpoint import (
           Checkpoint,
           architecture,
           build,
           load_checkpoint,
           load_network,
           save_checkpoint,
)
from .mlp import mlp
from .resnet import resnet_conv, resnet_mlp

__all__ = ["Checkpoint", "architecture", "build", "load_checkpoint", "load_network", "mlp", "resnet_conv",
           "resnet_mlp", "save_checkpoint"]
