"""The test zoo: small hand-written models, one per row of DESIGN §4's table, plus the
torchvision models the issues name. Shared by the analysis, slim/export and supernet tests.

Each entry: name -> (factory, example input shape(s)). Small inputs keep the suite fast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _cbr(cin, cout, k=3, s=1, groups=1):
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


class Chain(nn.Module):
    """conv-bn-relu x3, pool, linear."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(_cbr(3, 16), _cbr(16, 32, s=2), _cbr(32, 24))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class Residual(nn.Module):
    """Two basic blocks sharing one residual stream, then a projection shortcut."""

    def __init__(self):
        super().__init__()
        self.stem = _cbr(3, 16)
        self.a1, self.a2 = (
            _cbr(16, 12),
            nn.Sequential(nn.Conv2d(12, 16, 3, 1, 1), nn.BatchNorm2d(16)),
        )
        self.b1, self.b2 = (
            _cbr(16, 20),
            nn.Sequential(nn.Conv2d(20, 16, 3, 1, 1), nn.BatchNorm2d(16)),
        )
        self.down = nn.Sequential(nn.Conv2d(16, 32, 1, 2), nn.BatchNorm2d(32))
        self.c = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32))
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(x + self.a2(self.a1(x)))
        x = F.relu(x + self.b2(self.b1(x)))
        x = F.relu(self.down(x) + self.c(x))
        return self.fc(x.mean((2, 3)))


class DepthwiseSeparable(nn.Module):
    """MobileNet-style: expand 1x1, depthwise 3x3, project 1x1, inverted residual."""

    def __init__(self):
        super().__init__()
        self.stem = _cbr(3, 16)
        self.expand = _cbr(16, 48, k=1)
        self.dw = _cbr(48, 48, groups=48)
        self.project = nn.Sequential(nn.Conv2d(48, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.dw_mult = nn.Conv2d(16, 32, 3, 1, 1, groups=16)  # channel multiplier 2
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.project(self.dw(self.expand(x)))
        x = F.relu(self.dw_mult(x))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


class Grouped(nn.Module):
    """A grouped 3x3 conv (groups=4) between two 1x1 convs (ResNeXt-style)."""

    def __init__(self):
        super().__init__()
        self.a = _cbr(3, 16)
        self.b = _cbr(16, 32, k=1)
        self.g = _cbr(32, 32, groups=4)
        self.c = _cbr(32, 24, k=1)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        return self.fc(self.c(self.g(self.b(self.a(x)))).mean((2, 3)))


class SEConv(nn.Module):
    """Squeeze-and-excitation with 1x1 conv gates: x * sigmoid(conv(relu(conv(pool(x)))))."""

    def __init__(self):
        super().__init__()
        self.stem = _cbr(3, 24)
        self.reduce = nn.Conv2d(24, 6, 1)
        self.expand = nn.Conv2d(6, 24, 1)
        self.out = _cbr(24, 16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        s = F.adaptive_avg_pool2d(x, 1)
        x = x * torch.sigmoid(self.expand(F.relu(self.reduce(s))))
        return self.fc(self.out(x).mean((2, 3)))


class SELinear(nn.Module):
    """Squeeze-and-excitation with Linear gates and a view back to N x C x 1 x 1."""

    def __init__(self):
        super().__init__()
        self.stem = _cbr(3, 24)
        self.fc1 = nn.Linear(24, 8)
        self.fc2 = nn.Linear(8, 24)
        self.out = _cbr(24, 16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        b, c = x.shape[0], x.shape[1]
        s = x.mean((2, 3))
        g = torch.sigmoid(self.fc2(F.relu(self.fc1(s)))).view(b, c, 1, 1)
        x = x * g
        return self.fc(self.out(x).mean((2, 3)))


class Concat(nn.Module):
    """Inception-style branches concatenated on channels, then BN + conv over the concat."""

    def __init__(self):
        super().__init__()
        self.stem = _cbr(3, 16)
        self.b1 = _cbr(16, 8, k=1)
        self.b2 = _cbr(16, 12)
        self.bn = nn.BatchNorm2d(16 + 8 + 12)
        self.mix = _cbr(36, 20, k=1)
        self.fc = nn.Linear(20, 10)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([x, self.b1(x), self.b2(x)], dim=1)
        x = self.mix(F.relu(self.bn(x)))
        return self.fc(x.mean((2, 3)))


class ChunkSplit(nn.Module):
    """chunk along channels (GLU-like) and split of a concat along its own boundaries."""

    def __init__(self):
        super().__init__()
        self.stem = _cbr(3, 16)
        self.glu = nn.Conv2d(16, 32, 1)
        self.left, self.right = _cbr(16, 8), _cbr(16, 8)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        a, b = self.glu(x).chunk(2, dim=1)
        x = a * torch.sigmoid(b)
        y = torch.cat([self.left(x), self.right(x)], 1)
        p, q = torch.split(y, [8, 8], dim=1)
        return self.fc(torch.cat([q, p], 1).mean((2, 3)))


class FlattenLinear(nn.Module):
    """Conv features flattened (C x H x W) into a linear classifier, VGG/AlexNet-style."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(_cbr(3, 8), nn.MaxPool2d(2), _cbr(8, 16), nn.MaxPool2d(2))
        self.fc1 = nn.Linear(16 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = self.features(x)
        x = x.view(x.size(0), 16 * 4 * 4)
        return self.fc2(F.relu(self.fc1(x)))


class LayerNormMLP(nn.Module):
    """Transformer-style MLP block on tokens: LayerNorm, Linear-GELU-Linear, residual."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(12, 32)
        self.norm = nn.LayerNorm(32)
        self.fc1, self.fc2 = nn.Linear(32, 64), nn.Linear(64, 32)
        self.norm2 = nn.LayerNorm(32)
        self.head = nn.Linear(32, 5)

    def forward(self, x):  # x: N x L x 12
        x = self.embed(x)
        x = x + self.fc2(F.gelu(self.fc1(self.norm(x))))
        return self.head(self.norm2(x).mean(1))


class ChannelShuffle(nn.Module):
    """ShuffleNet channel shuffle: view into groups, transpose, view back."""

    def __init__(self):
        super().__init__()
        self.a = _cbr(3, 16)
        self.b = _cbr(16, 16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.a(x)
        n, c, h, w = x.shape
        x = x.view(n, 4, c // 4, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.fc(self.b(x).mean((2, 3)))


class UnknownOp(nn.Module):
    """torch.cumsum over channels is not in the registry: it freezes what it touches."""

    def __init__(self):
        super().__init__()
        self.a = _cbr(3, 16)
        self.b = _cbr(16, 16)
        self.c = _cbr(16, 8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.a(x)
        x = torch.cumsum(self.b(x), dim=1)
        return self.fc(self.c(x).mean((2, 3)))


class MultiIO(nn.Module):
    """Two inputs, a dict of two outputs (classification logits and a feature map)."""

    def __init__(self):
        super().__init__()
        self.img = _cbr(3, 16)
        self.aux = nn.Linear(6, 16)
        self.mid = _cbr(16, 24)
        self.cls = nn.Linear(24, 10)
        self.seg = nn.Conv2d(24, 2, 1)

    def forward(self, x, meta):
        f = self.img(x) + self.aux(meta)[:, :, None, None]
        f = self.mid(f)
        return {"logits": self.cls(f.mean((2, 3))), "mask": self.seg(f)}


SMALL = {
    "chain": (Chain, [(2, 3, 16, 16)]),
    "residual": (Residual, [(2, 3, 16, 16)]),
    "depthwise": (DepthwiseSeparable, [(2, 3, 16, 16)]),
    "grouped": (Grouped, [(2, 3, 16, 16)]),
    "se_conv": (SEConv, [(2, 3, 16, 16)]),
    "se_linear": (SELinear, [(2, 3, 16, 16)]),
    "concat": (Concat, [(2, 3, 16, 16)]),
    "chunk_split": (ChunkSplit, [(2, 3, 16, 16)]),
    "flatten_linear": (FlattenLinear, [(2, 3, 16, 16)]),
    "layernorm_mlp": (LayerNormMLP, [(2, 7, 12)]),
    "channel_shuffle": (ChannelShuffle, [(2, 3, 16, 16)]),
    "unknown_op": (UnknownOp, [(2, 3, 16, 16)]),
    "multi_io": (MultiIO, [(2, 3, 16, 16), (2, 6)]),
}

# torchvision models of the test zoo (issue "slim and export"); inputs kept small for speed
TORCHVISION = [
    "resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "vgg11_bn",
    "regnet_x_400mf", "densenet121", "squeezenet1_1", "convnext_tiny", "mnasnet0_5", "googlenet",
]  # fmt: skip
TORCHVISION_INPUT = {
    "default": (2, 3, 64, 64),
    "googlenet": (2, 3, 64, 64),
    "squeezenet1_1": (2, 3, 64, 64),
}


def small_model(name: str, seed: int = 0) -> tuple[nn.Module, tuple]:
    """A zoo model in eval mode with non-trivial batch-norm statistics, and example inputs."""
    factory, shapes = SMALL[name]
    torch.manual_seed(seed)
    model = factory().eval()
    randomize_norms(model, seed)
    inputs = tuple(torch.randn(*s) for s in shapes)
    return model, inputs


def torchvision_model(name: str, seed: int = 0) -> tuple[nn.Module, tuple]:
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.get_model(name, weights=None).eval()
    randomize_norms(model, seed)
    shape = TORCHVISION_INPUT.get(name, TORCHVISION_INPUT["default"])
    return model, (torch.randn(*shape),)


def randomize_norms(model: nn.Module, seed: int = 0) -> None:
    """Give batch norms random affine parameters and statistics, so a wrong slice shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                    m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)


# --- checks shared by the tests of other people's architectures --------------------------------


def searchable(program, producer: str) -> bool:
    return next(g for g in program.groups if producer in g.producers).searchable


def reasons(program, producer: str) -> list[str]:
    return [r.why for r in next(g for g in program.groups if producer in g.producers).frozen]


def check_random_widths(model, inputs, seeds=(0, 1), onnx=True):
    """Compile, then for random widths at half the FLOPs (or halfway down, where fixed costs
    are larger): verify the slimmed model and compare it with the supernet at that width."""
    import widthc
    from widthc.verify import relative_error, verify

    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    program = widthc.compile(model.eval(), inputs)
    assert program.searchable, "nothing to search: the test would prove nothing"
    full, least = program.flops(), program.flops(program.smallest())
    budget = 0.5 * full if least < 0.5 * full else (least + full) / 2  # fixed costs: halfway
    for seed in seeds:
        choice = program.random(seed, flops=budget)
        assert program.flops(choice) < program.flops()
        small = widthc.slim(program, choice)
        checks = verify(program, choice, small, check_onnx=onnx)
        assert checks.flops_counted == program.flops(choice)
        net = widthc.supernet(program)
        net.set_choice(choice)
        with torch.no_grad():
            assert relative_error(small(*inputs), net.eval()(*inputs)) <= 1e-5
    return program
