"""Explain-test helpers (importable from tests: pytest puts ``tests/`` on the path): a tiny
ResNet-shaped model, fast, with the real model's quirks."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock


class TinyNet(nn.Module):
    """A 2-block ResNet: stem, BasicBlocks (one ``nn.ReLU`` reused twice per block, in place, as in
    torchvision), global average pool and a linear head. (N, 1, 64, 64) -> layer2 (N, 16, 16, 16)."""

    def __init__(self, num_classes: int = 3, width: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(BasicBlock(width, width))
        down = nn.Sequential(nn.Conv2d(width, 2 * width, 1, stride=2, bias=False), nn.BatchNorm2d(2 * width))
        self.layer2 = nn.Sequential(BasicBlock(width, 2 * width, stride=2, downsample=down))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x)))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def smooth_images(n: int, size: int = 64, seed: int = 1) -> torch.Tensor:
    """(n, 1, size, size) blurred noise in [0, 1]: image-like, not white noise."""
    x = torch.rand(n, 1, size // 4, size // 4, generator=torch.Generator().manual_seed(seed))
    return nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def make_tiny(seed: int = 0, num_classes: int = 3) -> TinyNet:
    """A TinyNet in eval mode whose BatchNorm statistics are calibrated on image-like input and whose
    affine terms are random: activations are well scaled, so logits, occlusion drops and gradients
    differ clearly between images, and the network is not positively homogeneous (integrated
    gradients differ from gradient x input)."""
    torch.manual_seed(seed)
    model = TinyNet(num_classes)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in bns:
            m.momentum = None  # cumulative average over the calibration batch
        model.train()(smooth_images(32, seed=seed + 100))
        for m in bns:
            m.momentum = 0.1
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.2, 0.2)
        model.fc.weight.mul_(3.0)
    return model.eval()


def square_task(n: int, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1, size, size) dim noisy images with one 6 x 6 square at a random place, bright (label 1)
    or mid-grey (label 0): a task whose only evidence is the square, learnable through global pooling."""
    g = torch.Generator().manual_seed(seed)
    x = 0.2 * torch.rand(n, 1, size, size, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    ys = torch.randint(0, size - 6, (n,), generator=g)
    xs = torch.randint(0, size - 6, (n,), generator=g)
    for i in range(n):
        x[i, 0, ys[i] : ys[i] + 6, xs[i] : xs[i] + 6] = 1.0 if y[i] else 0.5
    return x, y


def train_tiny(x: torch.Tensor, y: torch.Tensor, steps: int = 40, seed: int = 0) -> TinyNet:
    """A TinyNet (2 classes) fitted with Adam on (x, y) in full batches; eval mode.

    BatchNorm statistics are re-estimated on ``x`` at the end: after a few fast-moving steps the
    running averages lag the weights and the eval-mode model would be far worse than the trained one."""
    torch.manual_seed(seed)
    model = TinyNet(num_classes=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        model(x)
        for m in bns:
            m.momentum = 0.1
    return model.eval()
