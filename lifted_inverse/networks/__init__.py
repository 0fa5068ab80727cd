"""Plain torch networks that the lifted engine knows how to lift (MLP, ResNet)."""
from .mlp import mlp
from .resnet import resnet_conv, resnet_mlp

__all__ = ["mlp", "resnet_conv", "resnet_mlp"]
