"""Watch an MLP's Ricci flow while it learns to separate two concentric circles.

The papers' synthetic task (Hehl et al., Syn-I: ``make_circles(noise=0.03)``; Baptista et al.'s
5 x 50 ReLU MLP): a RicciFlowMonitor with its defaults (a 1000-point probe sampled from the
validation set with its labels, the outputs of the ReLU modules, k = 50), TensorBoard logs, and early
stopping on the plateau of the class modularity of the last measured layer:
``EarlyStopping(monitor="ricci/class/modularity", mode="max", min_delta=0.01, patience=5)``.

Why this rule (``examples/early_stopping_study.py``, ``docs/studies/early_stopping.json``; 4 seeds,
against ``EarlyStopping(monitor="val_loss", patience=5)``): on the last hidden layer it saved 10.5
epochs on circles, 10.0 / 8.0 on MNIST 1v7 / 6v9 and 3.2 on Fashion-MNIST 5v9 while losing at most
0.1 pp of test accuracy. It fails where accuracy keeps rising after the class structure has
stalled: on four_discs it stopped at epoch ~5, at the majority-class accuracy (84.5 %), 9.2 pp below
validation loss. No Ricci or class-structure key matched validation loss's accuracy on every data set.

Run::

    python examples/two_circles.py            # under a minute on a laptop CPU
    tensorboard --logdir runs                 # scalars under ricci/, histograms, the flow figure
    python examples/two_circles.py --figure two_circles  # also two PNG figures
    python examples/two_circles.py --fast     # a few seconds (used by the tests)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
import datasets

from lightning_ricci import RicciFlowMonitor


def two_circles(
    n: int, noise: float = 0.03, factor: float = 0.5, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``sklearn.datasets.make_circles`` (``datasets.circles``): [n, 2] points, [n] labels (1 = inner circle)."""
    return datasets.circles(n, seed=seed, noise=noise, factor=factor)


class CirclesMLP(LightningModule):
    """depth x Linear(width) + ReLU, then one logit (binary cross-entropy)."""

    def __init__(self, width: int = 50, depth: int = 5, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        layers: list[nn.Module] = []
        fan_in = 2
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width), nn.ReLU()]
            fan_in = width
        self.net = nn.Sequential(*layers, nn.Linear(fan_in, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def _step(self, batch: Any, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, y.float())
        self.log(f"{stage}_loss", loss, prog_bar=stage == "val")
        self.log(f"{stage}_acc", ((logits > 0).long() == y).float().mean(), prog_bar=stage == "val")
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="tiny data and 2 epochs (for tests)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--out", default="runs", help="TensorBoard log directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--figure", help="also save the coefficient-over-training and flow figures (PNG prefix)"
    )
    args = parser.parse_args(argv)

    seed_everything(args.seed, verbose=False)
    n_train, n_val, epochs = (256, 128, 2) if args.fast else (1000, 1000, args.epochs)
    train = TensorDataset(*two_circles(n_train, seed=args.seed))
    val = TensorDataset(*two_circles(n_val, seed=args.seed + 1))

    monitor = RicciFlowMonitor()  # zero configuration: probe, layers and k from the defaults
    trainer = Trainer(
        max_epochs=epochs,
        accelerator="cpu" if args.fast else "auto",
        devices=1,
        callbacks=[
            monitor,
            # The class modularity's plateau; it needs probe labels (here: the validation dataset's).
            EarlyStopping(monitor="ricci/class/modularity", mode="max", min_delta=0.01, patience=5),
        ],
        logger=TensorBoardLogger(args.out, name="two_circles"),
        enable_checkpointing=False,
        enable_progress_bar=not args.fast,
        enable_model_summary=not args.fast,
        log_every_n_steps=10,
    )
    trainer.fit(
        CirclesMLP(),
        DataLoader(train, batch_size=64, shuffle=True),
        DataLoader(val, batch_size=256),
    )

    last = monitor.history[-1]
    note = " (paper's rule undefined: both-layers-connected value)" if last["excluded"] else ""
    excluded = sum(bool(entry["excluded"]) for entry in monitor.history)
    print(f"layers: {', '.join(monitor.layer_names)}")
    print(
        f"ricci/coefficient was the connected-pairs coefficient (ricci/excluded = 1) in {excluded} of "
        f"{len(monitor.history)} evaluations"
    )
    print(f"val_acc: {float(trainer.callback_metrics['val_acc']):.3f}")
    if "ricci/class/modularity" in trainer.callback_metrics:
        print(
            f"stopped after epoch {last['epoch']}: ricci/class/modularity "
            f"{float(trainer.callback_metrics['ricci/class/modularity']):.4f} "
            f"(mixing {float(trainer.callback_metrics['ricci/class/mixing']):.4f})"
        )
    print(f"final ricci/coefficient: {last['coefficient']:+.4f}{note} at epoch {last['epoch']}")
    print(
        f"mean local coefficient: {last['local_mean']:+.4f}, negative share {last['local_negative_share']:.2f}"
    )
    if args.figure and monitor.last_result is not None:  # needs `pip install 'lightning-ricci[plots]'`
        from lightning_ricci.plotting import flow_figure, history_figure

        history_figure(monitor.history).savefig(f"{args.figure}_history.png", dpi=120)
        flow_figure(monitor.last_result, monitor.layer_names).savefig(f"{args.figure}_flow.png", dpi=120)
        print(f"figures: {args.figure}_history.png, {args.figure}_flow.png")
    return float(last["coefficient"])


if __name__ == "__main__":
    main()
