"""Classifiers: [0,1] images at dataset resolution in, logits out (normalise + resize built in)."""

from ddsx.models.classifiers.input_adapter import AdaptedClassifier, InputAdapter
from ddsx.models.classifiers.lenet import lenet
from ddsx.models.classifiers.resnet_cifar import cifar_resnet
from ddsx.models.classifiers.timm_model import timm_classifier

__all__ = ["AdaptedClassifier", "InputAdapter", "cifar_resnet", "lenet", "timm_classifier"]
