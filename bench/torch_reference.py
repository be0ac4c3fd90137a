"""The PyTorch twins of the benchmarked visionax steps (optional `bench` extra: `pip install torch`).

ResNet-18 with the CIFAR stem (3×3 stride-1 first convolution, no max-pool), as
`visionax.models.get_model("resnet18", cifar_stem=True)` builds it (torchvision's BasicBlock layout,
BatchNorm momentum 0.1 ≙ flax 0.9, eps 1e-5, no conv bias); SimCLR's projection head as
`visionax.ssl.heads.ProjectionHead` (Linear without bias → BN → ReLU → Linear); NT-Xent as
`visionax.losses.nt_xent`; LARS as `visionax.optim.lars` (weight decay and trust ratio on every
tensor except biases and BatchNorm parameters, learning rate inside the momentum).

Run alone for a smoke test: `python -m bench.torch_reference` (one step of each, tiny batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet18Cifar(nn.Module):
    """ResNet-18, CIFAR stem; `num_classes=None` gives the 512-d pooled features."""

    def __init__(self, num_classes: int | None = 10, width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        layers, cin = [], width
        for stage in range(4):
            planes = width * 2**stage
            for index in range(2):
                stride = 2 if stage > 0 and index == 0 else 1
                layers.append(BasicBlock(cin, planes, stride))
                cin = planes
        self.layers = nn.Sequential(*layers)
        self.features = cin
        self.fc = nn.Linear(cin, num_classes) if num_classes else None

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return x if self.fc is None else self.fc(x)


class ProjectionHead(nn.Module):
    def __init__(self, features: int, hidden: int = 512, output: int = 128):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(features, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
            nn.Linear(hidden, output),
        )

    def forward(self, x):
        return self.net(x)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent over the batch of pairs (the same formula as visionax.losses.nt_xent)."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)


class LARS(torch.optim.Optimizer):
    """visionax.optim.lars: g += wd·p and g *= η‖p‖/‖g‖ on masked tensors, v = m·v + lr·g, p -= v."""

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 1e-6,
                 trust_coefficient: float = 0.001):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      trust_coefficient=trust_coefficient, lars=True))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["lars"]:
                    g = g.add(p, alpha=group["weight_decay"])
                    p_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                    ratio = torch.where(
                        (p_norm > 0) & (g_norm > 0),
                        group["trust_coefficient"] * p_norm / (g_norm + 1e-9),
                        torch.ones_like(p_norm),
                    )
                    g = g * ratio
                state = self.state[p]
                if "v" not in state:
                    state["v"] = torch.zeros_like(p)
                v = state["v"]
                v.mul_(group["momentum"]).add_(g, alpha=group["lr"])
                p.sub_(v)


def lars_param_groups(model: nn.Module):
    """Two groups: weights of convs and linears (LARS), biases and BatchNorm parameters (plain)."""
    adapted, plain = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            is_norm = isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d))
            (plain if is_norm or name == "bias" else adapted).append(p)
    return [dict(params=adapted), dict(params=plain, lars=False)]


class SimCLRStep:
    """One SimCLR step on two ready views (float tensors [B, 3, H, W])."""

    def __init__(self, temperature: float = 0.2, lr: float = 0.3, channels_last: bool = True):
        self.encoder = ResNet18Cifar(num_classes=None)
        self.head = ProjectionHead(self.encoder.features)
        self.model = nn.Sequential(self.encoder, self.head).train()
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.temperature = temperature
        self.optimizer = LARS(lars_param_groups(self.model), lr=lr)

    def __call__(self, view1: torch.Tensor, view2: torch.Tensor) -> float:
        both = torch.cat([view1, view2]).contiguous(memory_format=self.memory_format)
        z1, z2 = self.model(both).chunk(2)
        loss = nt_xent(z1, z2, self.temperature)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


class SupervisedStep:
    """One SGD step (momentum 0.9, weight decay 5e-4) of ResNet-18 on images [B, 3, H, W]."""

    def __init__(self, num_classes: int = 10, lr: float = 0.1, channels_last: bool = True):
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = ResNet18Cifar(num_classes).train().to(memory_format=self.memory_format)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=0.9,
                                         weight_decay=5e-4)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        logits = self.model(images.contiguous(memory_format=self.memory_format))
        loss = F.cross_entropy(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


if __name__ == "__main__":
    torch.manual_seed(0)
    x = torch.rand(8, 3, 32, 32)
    print("simclr loss", float(SimCLRStep()(x, x.flip(3))))
    print("supervised loss", float(SupervisedStep()(x, torch.randint(0, 10, (8,)))))
    print("params", sum(p.numel() for p in ResNet18Cifar(10).parameters()))
