"""The measurement pipeline: probes, output selectors, reductions, default layers, scalars."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_ricci import ricci_flow
from lightning_ricci.capture import ActivationCapture, CaptureError
from lightning_ricci.layers import default_layers, spread_layers
from lightning_ricci.pipeline import Pipeline
from lightning_ricci.probes import make_probe
from lightning_ricci.reduce import reduce_output
from lightning_ricci.scalars import degenerate_message, history_entry, payload, scalars


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU())


# --------------------------------------------------------------------------- probes


def test_make_probe_kinds() -> None:
    x, y = torch.randn(12, 3), torch.arange(12) % 3
    tensor = make_probe(x)
    assert tensor.num_points == 12 and tensor.labels is None and not tensor.is_graph
    pair = make_probe((x, y))
    assert torch.equal(pair.labels, y)
    assert make_probe((x, torch.randn(12))).labels is None  # float targets are no class ids
    batch = make_probe({"pixel_values": x, "target": y.float()})
    assert batch.input_key == "pixel_values" and torch.equal(batch.labels, y)
    chunks = list(make_probe({"inp": x, "lab": y}, input_key="inp", label_key="lab").chunks(5))
    assert [c["inp"].shape[0] for c in chunks] == [5, 5, 2] and torch.equal(chunks[2]["lab"], y[10:])
    custom = make_probe({"a": {"b": x}}, batch_to_input=lambda batch: batch["a"]["b"])
    assert custom.num_points == 12
    with pytest.raises(ValueError, match=r"`label_key` must be a key of the batch \(got 'z'"):
        make_probe({"x": x}, label_key="z")
    with pytest.raises(TypeError, match=r"must be a tensor \[N, \.\.\.\], a tuple .* \(got str\)"):
        make_probe("points")


def test_graph_probe_nodes_and_labels() -> None:
    pyg = pytest.importorskip("torch_geometric.data")
    x = torch.randn(10, 4)
    mask = torch.tensor([True, False] * 5)
    data = pyg.Data(x=x, edge_index=torch.tensor([[0, 1], [1, 0]]), y=torch.arange(10) % 2, val_mask=mask)
    probe = make_probe(data)
    assert probe.is_graph and probe.nodes.tolist() == [0, 2, 4, 6, 8]
    assert probe.labels.tolist() == [0, 0, 0, 0, 0]
    assert make_probe(data, node_mask=None).nodes.tolist() == list(range(10))
    sampled = make_probe(data, node_mask=None, max_points=4, seed=1)
    assert len(sampled.nodes) == 4 and sampled.nodes.tolist() == sorted(sampled.nodes.tolist())
    assert len(list(probe.chunks(2))) == 1  # a graph runs whole


# --------------------------------------------------------------------------- reductions and selectors


def test_reductions_match_their_definitions() -> None:
    maps = torch.randn(3, 64, 16, 16)
    pooled, how = reduce_output(maps)  # 16384 values > 4096: pooled to s x s with 64 s^2 <= 1024 -> s = 4
    assert how == "pool4x4"
    torch.testing.assert_close(pooled, F.adaptive_avg_pool2d(maps, 4).flatten(1))
    torch.testing.assert_close(reduce_output(maps, "mean")[0], maps.mean(dim=(2, 3)))
    wide = torch.randn(3, 2048, 3, 3)  # the channels alone exceed the pool budget: global mean
    block, how = reduce_output(wide)
    assert how == "mean"
    torch.testing.assert_close(block, wide.mean(dim=(2, 3)))
    tokens = torch.randn(3, 65, 192)
    torch.testing.assert_close(reduce_output(tokens)[0], tokens.mean(dim=1))
    torch.testing.assert_close(reduce_output(tokens, "cls")[0], tokens[:, 0])
    small = torch.randn(3, 3, 32, 32)  # 3072 values: flattened, as the papers flatten inputs
    block, how = reduce_output(small)
    assert how == "flatten"
    torch.testing.assert_close(block, small.flatten(1))
    torch.testing.assert_close(reduce_output(small, lambda t: t.amax(dim=(2, 3)))[0], small.amax(dim=(2, 3)))
    assert reduce_output(torch.ones(3, 4, dtype=torch.bfloat16))[0].dtype == torch.float32
    with pytest.raises(CaptureError, match="torch.int64"):
        reduce_output(torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.int64"):  # also a TypeError
        reduce_output(torch.ones(3, 4, dtype=torch.long))


def test_output_selectors_for_tuples_and_dicts() -> None:
    class Block(nn.Module):
        def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
            return OrderedDict(attentions=x.sum(-1, keepdim=True), hidden_states=2 * x)

    class Pair(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x + 1, x - 1

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block, self.pair = Block(), Pair()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.pair(self.block(x)["hidden_states"])[1]

    model, x = Model(), torch.randn(5, 3)
    capture = ActivationCapture(model, ["block[hidden_states]", "pair[1]", "pair[0]"])
    with capture:
        capture.forward(lambda: model(x), batch_size=5)
    acts = capture.activations()
    assert list(acts) == ["block[hidden_states]", "pair[1]", "pair[0]"]
    torch.testing.assert_close(acts["block[hidden_states]"], 2 * x)
    torch.testing.assert_close(acts["pair[1]"], 2 * x - 1)
    torch.testing.assert_close(acts["pair[0]"], 2 * x + 1)
    bad = ActivationCapture(model, ["pair[7]"])
    with bad, pytest.raises(CaptureError, match=r"cannot select \[7\] from a tuple"):
        bad.forward(lambda: model(x))


def test_buffers_fill_in_place_and_check_rows() -> None:
    net, x = mlp(), torch.randn(23, 3)
    capture = ActivationCapture(net, ["1", "5"], num_rows=23)
    with capture:
        for start in range(0, 23, 10):
            capture.forward(
                lambda start=start: net(x[start : start + 10]), batch_size=len(x[start : start + 10])
            )
    with torch.no_grad():
        h1 = torch.relu(net[0](x))
        expected = torch.relu(net[4](torch.relu(net[2](h1))))
    torch.testing.assert_close(capture.activations()["1"], h1)
    torch.testing.assert_close(capture.activations()["5"], expected)
    short = ActivationCapture(net, ["1"], num_rows=23)
    with short:
        short.forward(lambda: net(x[:10]))
    with pytest.raises(CaptureError, match="gave 10 rows, not the 23 expected"):
        short.activations()


# --------------------------------------------------------------------------- default layers


def test_default_layers_exclude_gates_and_attention_weights() -> None:
    class Gate(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.act = nn.Conv2d(4, 4, 1), nn.Sigmoid()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.fc(x.mean(dim=(2, 3), keepdim=True)))  # [B, 4, 1, 1]

    class Net(nn.Module):  # no blocks: activations, without the gate's sigmoid
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.relu, self.gate = nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), Gate()
            self.conv2, self.relu2 = nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.relu(self.conv(x))
            h = h * self.gate(h)
            return self.relu2(self.conv2(h))

    net = Net()
    names, rule = default_layers(net, lambda: net(torch.randn(2, 3, 8, 8)), rows=2)
    assert (names, rule) == (["relu", "relu2"], "activations")

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(8, 8), nn.GELU())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _weights = self.attn(x, x, x)
            return x + self.mlp(x + out)

    class ViT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList([Attention() for _ in range(3)])
            self.head = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for block in self.blocks:
                x = block(x)
            return self.head(x[:, 0])

    vit = ViT()
    names, rule = default_layers(vit, lambda: vit(torch.randn(2, 5, 8)), rows=2)
    assert (names, rule) == (["blocks.0", "blocks.1", "blocks.2", "head"], "blocks")


def test_parallel_branches_are_no_blocks() -> None:
    class Branch(nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.fc, self.act = nn.Linear(4, width), nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.fc(x))

    class Inception(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.branches = nn.ModuleList([Branch(3), Branch(5)])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([b(x) for b in self.branches], dim=1)

    net = Inception()
    names, rule = default_layers(net, lambda: net(torch.randn(2, 4)), rows=2)
    assert rule == "activations" and names == ["branches.0.act", "branches.1.act"]


def test_spread_layers_keeps_first_and_last() -> None:
    names = [f"b{i}" for i in range(17)]
    kept = spread_layers(names, 12)
    assert len(kept) == 12 and kept[0] == "b0" and kept[-1] == "b16"
    gaps = [int(b[1:]) - int(a[1:]) for a, b in zip(kept, kept[1:])]
    assert set(gaps) <= {1, 2} and sum(gaps) == 16
    assert spread_layers(names[:5], 12) == names[:5]


# --------------------------------------------------------------------------- scalars and failures


def test_scalars_against_the_result_fields() -> None:
    generator = torch.Generator().manual_seed(1)
    layers = [torch.randn(40, 4, generator=generator) for _ in range(5)]
    labels = torch.arange(40) % 2
    result = ricci_flow(layers, 5, convention="hehl", labels=labels)
    names = ["input", "a", "b", "c", "d"]
    values = scalars(result, names)
    finite = result.local[~result.local.isnan()]
    assert values["ricci/local_mean"] == pytest.approx(float(finite.mean()))
    assert values["ricci/local_negative_share"] == pytest.approx(float((finite < 0).double().mean()))
    assert values["ricci/curvature/c"] == float(result.total_curvature[3])
    assert values["ricci/geodesic_sum/a"] == float(result.geodesic_sum[1])
    assert values["ricci/class/modularity"] == float(result.class_modularity[-1])
    assert values["ricci/class/mixing/b"] == float(result.class_mixing[2])
    expected = result.coefficient if math.isfinite(result.coefficient) else result.coefficient_connected
    assert values["ricci/coefficient"] == pytest.approx(expected, nan_ok=True)
    with pytest.raises(ValueError, match=r"`layer_names` must name the 5 layers \(got 2\)"):
        scalars(result, names[:2])


def test_degenerate_layer_counts() -> None:
    assert "correlation of 2 point(s)" in degenerate_message("baptista", 3)
    assert degenerate_message("baptista", 4) is None
    assert "correlation of 2 point(s)" in degenerate_message("hehl", 2)
    assert degenerate_message("hehl", 3) is None


def test_analyze_warns_for_two_point_correlations() -> None:
    from lightning_ricci import analyze

    net = mlp()
    with pytest.warns(UserWarning, match='convention="baptista" with 3 chosen layers'):
        analyze(net, torch.randn(30, 3))


def test_cost_estimate_formula() -> None:
    cost = Pipeline().estimate([3072, 64, 128, 10], 1000, seconds_per_point=0.002)
    assert cost.activation_mb == pytest.approx(1000 * (3072 + 64 + 128 + 10) * 4 / 2**20)
    assert cost.forward_seconds == pytest.approx(2.0)
    assert not cost.over_budget()
    assert Pipeline().estimate([100_000] * 4, 1000, 0.0).over_budget()  # 1.5 GB of activations


def test_keyword_inputs_and_forward_fn() -> None:
    from lightning_ricci import analyze

    class KeywordModel(nn.Module):  # a Hugging Face-style forward(input_ids=..., attention_mask=...)
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.embed = nn.Embedding(20, 8)
            self.fc = nn.ModuleList([Residual() for _ in range(4)])

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            h = self.embed(input_ids) * attention_mask[..., None]
            for block in self.fc:
                h = block(h)
            return h.mean(dim=1)

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.tanh(self.lin(x))

    model = KeywordModel()
    generator = torch.Generator().manual_seed(2)
    batch = {
        "input_ids": torch.randint(0, 20, (30, 6), generator=generator),
        "attention_mask": torch.ones(30, 6),
    }
    via_dict = analyze(model, batch, batch_to_input=lambda b: b, k=5)  # a dict input: model(**inputs)
    via_fn = analyze(model, batch, forward_fn=lambda m, ids: m(ids, batch["attention_mask"][: len(ids)]), k=5)
    assert via_dict.layer_names == via_fn.layer_names == ("input", "fc.0", "fc.1", "fc.2", "fc.3")
    torch.testing.assert_close(via_dict.total_curvature, via_fn.total_curvature)
    # Independently: the input layer is the token ids as floats, then each residual block's output.
    layers = [batch["input_ids"].float()]
    with torch.no_grad():
        h = model.embed(batch["input_ids"]) * batch["attention_mask"][..., None]
        for block in model.fc:
            h = block(h)
            layers.append(h.flatten(1))
    torch.testing.assert_close(via_dict.total_curvature, ricci_flow(layers, 5).total_curvature)


def test_payload_and_history_entry_of_a_scan_and_of_a_failure() -> None:
    g = torch.Generator().manual_seed(1)
    layers = [torch.randn(40, 3, generator=g) for _ in range(5)]
    names = ["input", "a", "b", "c", "d"]
    pipeline = Pipeline(k=[6, 4])
    captured = pipeline_captured(layers, names)
    scan = pipeline.compute(captured)
    sent = payload(scan, captured, names)
    first = ricci_flow(layers, 6)  # the first k, alone
    assert sent["error"] is None and sent["dims"] == [3] * 5 and sent["reductions"] == captured.reductions
    assert sent["values"] == scalars(scan, names)
    assert sent["extra"]["layer"] == pytest.approx(first.layer_coefficient.tolist(), nan_ok=True)
    assert sent["extra"]["coefficient_paper"] == pytest.approx(first.coefficient, nan_ok=True)
    sent["seconds"] = 0.5
    logged = {k: (v if math.isfinite(v) else -7.0) for k, v in sent["values"].items()}
    entry = history_entry(sent, logged, {"ricci/x"}, names, epoch=3, global_step=12, stage="validate")
    assert list(entry)[:3] == ["epoch", "global_step", "stage"] and entry["epoch"] == 3
    assert entry["coefficient"] == logged["ricci/coefficient"] and entry["carried"] == ["ricci/x"]
    assert entry["curvature"]["b"] == pytest.approx(float(first.total_curvature[2]))
    assert entry["critical_layer"] == first.critical_layer and not entry["failed"]

    failed = payload(None, None, names, RuntimeError("boom"))
    assert failed["error"] == "RuntimeError: boom" and failed["values"] == {}
    failed["seconds"] = 0.1
    entry = history_entry(
        failed,
        {
            "ricci/coefficient": 1.0,
            "ricci/excluded": 1.0,
            "ricci/local_mean": 1.0,
            "ricci/local_negative_share": 0.0,
        },
        set(),
        names,
    )
    assert entry["failed"] and math.isnan(entry["coefficient_paper"]) and entry["critical_layer"] == -1


def pipeline_captured(layers: list[torch.Tensor], names: list[str]) -> Any:
    from lightning_ricci.pipeline import Captured

    return Captured(names, layers, {name: "flatten" for name in names})


def test_setup_resolves_and_collects_the_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net, self.spare = mlp(), nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

    probe = make_probe(torch.randn(30, 3))
    model = Unused()
    setup = Pipeline(layers=["net.1", "net.3", "net.5"]).setup(model, probe)
    assert setup.names == ["net.1", "net.3", "net.5"] and setup.layer_names == ["input", *setup.names]
    assert setup.dims == [3, 8, 8, 8] and setup.cost is not None
    # three chosen layers under "baptista": a correlation of 2 points
    assert [key for key, _ in setup.warnings] == ["degenerate"]
    assert [
        key
        for key, _ in Pipeline(layers=["net.1", "net.3", "net.5"], convention="hehl")
        .setup(model, probe)
        .warnings
    ] == []
    # a named layer that does not run: raised, or (lenient) kept with a warning and no dims
    with pytest.raises(CaptureError, match="'spare' did not run"):
        Pipeline(layers=["net.1", "spare"]).setup(model, probe)
    lenient = Pipeline(layers=["net.1", "spare"], convention="hehl").setup(model, probe, lenient=True)
    assert lenient.dims == [] and lenient.cost is None
    assert [key for key, _ in lenient.warnings] == ["setup", "degenerate"]
    # unknown names are never lenient
    with pytest.raises(ValueError, match="does not exist"):
        Pipeline(layers=["nope"]).setup(model, probe, lenient=True)
    # over the activation budget: the cost warning names the numbers and the knobs
    import lightning_ricci.pipeline as pipeline_module

    monkeypatch.setattr(pipeline_module, "ACTIVATION_BUDGET_MB", 1e-6)
    costly = Pipeline(convention="hehl").setup(model, probe)
    assert [key for key, _ in costly.warnings] == ["cost"]
    assert "MB of activations" in costly.warnings[0][1] and "`num_samples`" in costly.warnings[0][1]
