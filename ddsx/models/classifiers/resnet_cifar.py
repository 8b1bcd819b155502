"""The CIFAR ResNet of the smoothing literature (He et al. 2016; ResNet-110 in Cohen et al. 2019).

Depth 6n+2 with basic blocks in three stages of 16, 32 and 64 channels.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ddsx.models.classifiers.input_adapter import AdaptedClassifier, InputAdapter
from ddsx.models.identity import records_arguments

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNetNetwork(nn.Module):
    """(N, C, 32, 32) normalised -> (N, K) logits."""

    @records_arguments
    def __init__(self, depth: int = 110, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110, ...), got {depth}")
        blocks_per_stage = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
        )
        layers, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(blocks_per_stage):
                layers.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
        self.stages = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))


@records_arguments
def cifar_resnet(
    depth: int = 110, num_classes: int = 10, in_channels: int = 3, input_size: int = 32
) -> AdaptedClassifier:
    mean = CIFAR10_MEAN if in_channels == 3 else (0.5,) * in_channels
    std = CIFAR10_STD if in_channels == 3 else (0.25,) * in_channels
    network = CifarResNetNetwork(depth, num_classes, in_channels)
    return AdaptedClassifier(InputAdapter(mean, std, input_size), network)
