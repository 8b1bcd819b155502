"""LeNet-5 for 28x28 single-channel digits (the MNIST classifier of the paper's experiments)."""

from __future__ import annotations

from torch import nn

from ddsx.models.classifiers.input_adapter import AdaptedClassifier, InputAdapter
from ddsx.models.identity import records_arguments

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


class LeNetNetwork(nn.Module):
    """(N, C, 28, 28) normalised -> (N, K) logits."""

    @records_arguments
    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=2),  # 28x28 keeps the classic 5x5 maps
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 14x14
            nn.Conv2d(6, 16, kernel_size=5),  # 10x10
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 5x5
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(inplace=True),
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.head(self.features(x))


@records_arguments
def lenet(num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> AdaptedClassifier:
    """LeNet on [0,1] images; inputs of another size (e.g. 8x8 digits) are resized to ``input_size``."""
    mean, std = MNIST_MEAN * in_channels, MNIST_STD * in_channels
    return AdaptedClassifier(InputAdapter(mean, std, input_size), LeNetNetwork(num_classes, in_channels))
