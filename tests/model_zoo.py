"""Models of the families people train, written here (no torchvision), for the tests and bench_models.py.

Each ``make_*`` function returns a :class:`ZooModule` (a small ``LightningModule``) with its own
synthetic data, so that ``Trainer.fit(model)`` runs with no datamodule. Sizes are parameters: the
benchmark builds them at their real widths, the tests at small ones.

Families: a CIFAR-style ResNet-18 (basic blocks, 32 x 32 inputs), a ResNet-50-like bottleneck net
(224 x 224 stem), a ViT-like classifier (patch embedding + ``nn.TransformerEncoder(activation="gelu")``),
a token-sequence ``TransformerEncoder`` classifier, a CNN that calls ``F.relu`` only, a
squeeze-excitation CNN, GCN node classifiers (``torch_geometric.nn.models.GCN`` and a ``GCNConv`` stack),
and the two-circles MLP of the main example.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

# --------------------------------------------------------------------------- networks


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs, identity (or 1x1 projection) shortcut, ReLU after the sum."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet18(nn.Module):
    """The usual CIFAR ResNet-18 (3x3 stem, no max-pool, stages of 2 basic blocks at 64-128-256-512)."""

    def __init__(self, width: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        widths = [width, 2 * width, 4 * width, 8 * width]
        cin = width
        stages = []
        for i, w in enumerate(widths):
            stages.append(nn.Sequential(BasicBlock(cin, w, 1 if i == 0 else 2), BasicBlock(w, w)))
            cin = w
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class Bottleneck(nn.Module):
    """ResNet-50 bottleneck: 1x1 reduce, 3x3, 1x1 expand (x4), projection shortcut where shapes change."""

    def __init__(self, cin: int, mid: int, stride: int = 1) -> None:
        super().__init__()
        cout = 4 * mid
        self.conv1, self.bn1 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv2, self.bn2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet50Like(nn.Module):
    """torchvision-style ResNet-50 layout: 7x7/2 stem + max-pool, stages of 3-4-6-3 bottlenecks."""

    def __init__(
        self, width: int = 64, blocks: tuple[int, ...] = (3, 4, 6, 3), num_classes: int = 10
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, stages = width, []
        for i, count in enumerate(blocks):
            mid = width * 2**i
            stage = [Bottleneck(cin, mid, 1 if i == 0 else 2)]
            stage += [Bottleneck(4 * mid, mid) for _ in range(count - 1)]
            stages.append(nn.Sequential(*stage))
            cin = 4 * mid
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class ViTLike(nn.Module):
    """Patch embedding, class token, ``nn.TransformerEncoder(activation="gelu")``, LayerNorm, linear head."""

    def __init__(
        self,
        image: int = 32,
        patch: int = 4,
        dim: int = 192,
        depth: int = 6,
        heads: int = 3,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        tokens = (image // patch) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, tokens + 1, dim))
        layer = nn.TransformerEncoderLayer(
            dim, heads, 4 * dim, dropout=0.0, activation="gelu", batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1) + self.pos_embed
        return self.head(self.norm(self.encoder(tokens))[:, 0])


class TokenTransformer(nn.Module):
    """Token ids [B, T] -> embedding + positions -> ``TransformerEncoder`` -> mean over tokens -> logits."""

    def __init__(
        self,
        vocab: int = 100,
        length: int = 32,
        dim: int = 64,
        depth: int = 4,
        heads: int = 4,
        num_classes: int = 2,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(0.02 * torch.randn(1, length, dim))
        layer = nn.TransformerEncoderLayer(
            dim, heads, 2 * dim, dropout=0.0, activation="gelu", batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.classifier(self.encoder(self.embed(tokens) + self.pos).mean(dim=1))


class FunctionalCNN(nn.Module):
    """Convs and linears as attributes, every activation and pooling a function call (``F.relu``)."""

    def __init__(self, width: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.conv3 = nn.Conv2d(2 * width, 4 * width, 3, padding=1)
        self.fc1 = nn.Linear(4 * width * 16, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.max_pool2d(F.relu(self.conv3(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class SqueezeExcite(nn.Module):
    """The SE gate: global pool, bottleneck, sigmoid: a [B, C, 1, 1] side branch."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return self.gate(self.fc2(self.act(self.fc1(self.pool(x)))))


class SEBlock(nn.Module):
    """Conv-BN-SiLU, squeeze-excitation rescaling, residual sum where shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.SiLU()
        self.se = SqueezeExcite(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.bn(self.conv(x)))
        out = out * self.se(out)
        return out + x if self.residual else out


class SECNN(nn.Module):
    """An EfficientNet-flavoured stack: a stem, then ``features`` = a Sequential of SE blocks."""

    def __init__(self, width: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.SiLU())
        self.features = nn.Sequential(
            SEBlock(width, width),
            SEBlock(width, 2 * width, 2),
            SEBlock(2 * width, 2 * width),
            SEBlock(2 * width, 4 * width, 2),
            SEBlock(4 * width, 4 * width),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(self.stem(x))).flatten(1))


def circles_mlp(width: int = 50, depth: int = 5) -> nn.Sequential:
    """The main example's MLP: depth x (Linear, ReLU), then one logit."""
    layers: list[nn.Module] = []
    fan_in = 2
    for _ in range(depth):
        layers += [nn.Linear(fan_in, width), nn.ReLU()]
        fan_in = width
    return nn.Sequential(*layers, nn.Linear(fan_in, 2))


# --------------------------------------------------------------------------- data


def two_circles(n: int, seed: int = 0, noise: float = 0.03) -> tuple[Tensor, Tensor]:
    """``sklearn.datasets.make_circles`` in torch: [n, 2] points, [n] labels (1 = inner circle)."""
    generator = torch.Generator().manual_seed(seed)
    label = torch.arange(n) % 2
    angle = torch.rand(n, generator=generator) * 2 * math.pi
    radius = torch.where(label == 1, 0.5, 1.0)
    x = torch.stack([radius * angle.cos(), radius * angle.sin()], dim=1)
    return x + noise * torch.randn(n, 2, generator=generator), label


def class_images(n: int, size: int, num_classes: int = 10, seed: int = 0) -> tuple[Tensor, Tensor]:
    """[n, 3, size, size] images whose class sets a low-frequency pattern, plus noise; [n] labels."""
    generator = torch.Generator().manual_seed(seed)
    label = torch.arange(n) % num_classes
    grid = torch.linspace(0, 2 * math.pi, size)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    patterns = torch.stack(
        [torch.stack([torch.sin((c % 3 + 1) * xx + ch), torch.cos((c // 3 + 1) * yy - ch), xx * 0 + c / num_classes])
         for c in range(num_classes) for ch in [0]]
    )  # fmt: skip
    x = patterns[label] + 0.5 * torch.randn(n, 3, size, size, generator=generator)
    return x, label


def class_tokens(n: int, length: int = 32, vocab: int = 100, seed: int = 0) -> tuple[Tensor, Tensor]:
    """[n, length] token ids; class 1 draws from the upper half of the vocabulary more often."""
    generator = torch.Generator().manual_seed(seed)
    label = torch.arange(n) % 2
    low = torch.randint(0, vocab // 2, (n, length), generator=generator)
    high = torch.randint(vocab // 2, vocab, (n, length), generator=generator)
    pick = torch.rand(n, length, generator=generator) < torch.where(label == 1, 0.7, 0.3)[:, None]
    return torch.where(pick, high, low), label


class DictDataset(Dataset[dict[str, Tensor]]):
    """Items ``{"x": ..., "y": ...}`` (the dict batches of many pipelines)."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


# --------------------------------------------------------------------------- Lightning modules


class ZooModule(LightningModule):
    """Cross-entropy classifier around ``net`` with its own train/val data (tensor or dict batches)."""

    def __init__(
        self,
        net: nn.Module,
        train: tuple[Tensor, Tensor],
        val: tuple[Tensor, Tensor],
        *,
        batch_size: int = 64,
        lr: float = 1e-3,
        dict_batches: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        self.batch_size, self.lr, self.dict_batches = batch_size, lr, dict_batches
        self.train_xy, self.val_xy = train, val

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _split(self, batch: Any) -> tuple[Tensor, Tensor]:
        return (batch["x"], batch["y"]) if self.dict_batches else (batch[0], batch[1])

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = self._split(batch)
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = self._split(batch)
        self.log("val_loss", F.cross_entropy(self(x), y), batch_size=len(y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def _loader(self, xy: tuple[Tensor, Tensor], shuffle: bool) -> DataLoader[Any]:
        data: Dataset[Any] = DictDataset(*xy) if self.dict_batches else TensorDataset(*xy)
        return DataLoader(data, batch_size=self.batch_size, shuffle=shuffle)

    def train_dataloader(self) -> DataLoader[Any]:
        return self._loader(self.train_xy, shuffle=True)

    def val_dataloader(self) -> DataLoader[Any]:
        return self._loader(self.val_xy, shuffle=False)


def make_cifar_resnet18(n_val: int = 1000, width: int = 64, n_train: int = 512) -> ZooModule:
    torch.manual_seed(0)
    return ZooModule(CifarResNet18(width), class_images(n_train, 32, seed=1), class_images(n_val, 32, seed=2))


def make_resnet50(n_val: int = 100, width: int = 64, size: int = 224, n_train: int = 64) -> ZooModule:
    torch.manual_seed(0)
    return ZooModule(
        ResNet50Like(width),
        class_images(n_train, size, seed=1),
        class_images(n_val, size, seed=2),
        batch_size=16,
    )


def make_vit(n_val: int = 1000, dim: int = 192, depth: int = 6, n_train: int = 512) -> ZooModule:
    torch.manual_seed(0)
    heads = 3 if dim % 3 == 0 else 2
    return ZooModule(
        ViTLike(dim=dim, depth=depth, heads=heads),
        class_images(n_train, 32, seed=1),
        class_images(n_val, 32, seed=2),
    )


def make_token_transformer(n_val: int = 1000, dim: int = 64, depth: int = 4, n_train: int = 512) -> ZooModule:
    torch.manual_seed(0)
    return ZooModule(
        TokenTransformer(dim=dim, depth=depth), class_tokens(n_train, seed=1), class_tokens(n_val, seed=2)
    )


def make_functional_cnn(n_val: int = 1000, width: int = 32, n_train: int = 512) -> ZooModule:
    torch.manual_seed(0)
    return ZooModule(FunctionalCNN(width), class_images(n_train, 32, seed=1), class_images(n_val, 32, seed=2))


def make_se_cnn(n_val: int = 1000, width: int = 32, n_train: int = 512) -> ZooModule:
    torch.manual_seed(0)
    return ZooModule(SECNN(width), class_images(n_train, 32, seed=1), class_images(n_val, 32, seed=2))


def make_circles_mlp(n_val: int = 1000, dict_batches: bool = False, n_train: int = 1024) -> ZooModule:
    torch.manual_seed(0)
    return ZooModule(
        circles_mlp(),
        two_circles(n_train, seed=1),
        two_circles(n_val, seed=2),
        lr=1e-2,
        dict_batches=dict_batches,
    )


# --------------------------------------------------------------------------- graphs (torch_geometric)


def sbm_graph(num_nodes: int = 1000, num_classes: int = 4, features: int = 32, seed: int = 0) -> Any:
    """A stochastic-block-model graph (``torch_geometric.data.Data``) with noisy class features and masks."""
    from torch_geometric.data import Data
    from torch_geometric.utils import to_undirected

    generator = torch.Generator().manual_seed(seed)
    y = torch.arange(num_nodes) % num_classes
    p_in, p_out = 8.0 / num_nodes * num_classes, 1.0 / num_nodes * num_classes
    prob = torch.where(y[:, None] == y[None, :], p_in, p_out)
    upper = torch.triu(torch.rand(num_nodes, num_nodes, generator=generator) < prob, diagonal=1)
    edge_index = to_undirected(upper.nonzero().t())
    centers = torch.randn(num_classes, features, generator=generator)
    x = centers[y] + 2.0 * torch.randn(num_nodes, features, generator=generator)
    split = torch.rand(num_nodes, generator=generator)
    return Data(
        x=x, edge_index=edge_index, y=y, train_mask=split < 0.5, val_mask=(split >= 0.5) & (split < 0.8),
        test_mask=split >= 0.8,
    )  # fmt: skip


class GCNStack(nn.Module):
    """Three ``GCNConv`` layers as attributes with ``F.relu`` between them."""

    def __init__(self, cin: int, hidden: int, cout: int) -> None:
        super().__init__()
        from torch_geometric.nn import GCNConv

        self.conv1, self.conv2, self.conv3 = (
            GCNConv(cin, hidden),
            GCNConv(hidden, hidden),
            GCNConv(hidden, cout),
        )

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        x = F.relu(self.conv1(x, edge_index))
        x = F.relu(self.conv2(x, edge_index))
        return self.conv3(x, edge_index)


class NodeClassifier(LightningModule):
    """Node classification on one graph: full-graph forward, loss on the train / val masks."""

    def __init__(self, gnn: nn.Module, data: Any, lr: float = 1e-2) -> None:
        super().__init__()
        self.gnn, self.data, self.lr = gnn, data, lr

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.gnn(x, edge_index)

    def _loss(self, batch: Any, mask: str) -> Tensor:
        out = self(batch.x, batch.edge_index)
        keep = batch[mask]
        return F.cross_entropy(out[keep], batch.y[keep])

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._loss(batch, "train_mask")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch, "val_mask"), batch_size=1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def _loader(self) -> Any:
        from torch_geometric.loader import DataLoader as GraphLoader

        return GraphLoader([self.data], batch_size=1)

    def train_dataloader(self) -> Any:
        return self._loader()

    def val_dataloader(self) -> Any:
        return self._loader()


def make_gcn(num_nodes: int = 1000, hidden: int = 64, num_layers: int = 4) -> NodeClassifier:
    """``torch_geometric.nn.models.GCN`` (ReLU module between layers) on an SBM graph."""
    from torch_geometric.nn.models import GCN

    torch.manual_seed(0)
    data = sbm_graph(num_nodes)
    return NodeClassifier(GCN(data.num_features, hidden, num_layers, out_channels=4), data)


def make_gcn_stack(num_nodes: int = 1000, hidden: int = 64) -> NodeClassifier:
    torch.manual_seed(0)
    data = sbm_graph(num_nodes)
    return NodeClassifier(GCNStack(data.num_features, hidden, 4), data)


#: name -> (factory at benchmark size, factory at test size)
ZOO: dict[str, tuple[Callable[[], LightningModule], Callable[[], LightningModule]]] = {
    "cifar_resnet18": (make_cifar_resnet18, lambda: make_cifar_resnet18(n_val=64, width=8, n_train=64)),
    "resnet50_224": (make_resnet50, lambda: make_resnet50(n_val=24, width=8, size=64, n_train=16)),
    "vit": (make_vit, lambda: make_vit(n_val=64, dim=24, depth=3, n_train=64)),
    "token_transformer": (
        make_token_transformer,
        lambda: make_token_transformer(n_val=64, dim=16, depth=3, n_train=64),
    ),
    "functional_cnn": (make_functional_cnn, lambda: make_functional_cnn(n_val=64, width=8, n_train=64)),
    "se_cnn": (make_se_cnn, lambda: make_se_cnn(n_val=64, width=8, n_train=64)),
    "gcn": (make_gcn, lambda: make_gcn(num_nodes=120, hidden=16)),
    "circles_mlp": (make_circles_mlp, lambda: make_circles_mlp(n_val=96, n_train=128)),
}
