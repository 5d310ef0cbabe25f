"""Tests of lightning_ricci.capture: hooks by name, wrapper prefixes, flattening, forward order, cleanup."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_ricci.capture import ActivationCapture, normalize_name
from lightning_ricci.layers import activation_module_names, candidate_module_names, find_layers
from lightning_ricci.reduce import flatten_output


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 2))


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("net.0", "net.0"),
        ("module.net.0", "net.0"),
        ("_orig_mod.net.0", "net.0"),
        ("_forward_module.module._orig_mod.net.0", "net.0"),
        ("body._fsdp_wrapped_module.0", "body.0"),
        ("body._checkpoint_wrapped_module.act", "body.act"),
        ("head.module", "head.module"),  # a leaf called `module` keeps its name
    ],
)
def test_normalize_name(name: str, expected: str) -> None:
    assert normalize_name(name) == expected


def test_capture_by_name_matches_manual_forward() -> None:
    net = _mlp()
    x = torch.randn(10, 3)
    capture = ActivationCapture(net, ["1", "3"])
    with capture:
        out = capture.forward(lambda: net(x), batch_size=10)
    acts = capture.activations()
    assert list(acts) == ["1", "3"]
    h1 = torch.relu(net[0](x))
    torch.testing.assert_close(acts["1"], h1)
    torch.testing.assert_close(acts["3"], nn.functional.gelu(net[2](h1)))
    torch.testing.assert_close(out, net(x))
    assert acts["1"].dtype == torch.float32 and not acts["1"].requires_grad
    assert _hook_count(net) == 0


def test_batches_are_concatenated_in_order() -> None:
    net = _mlp()
    x = torch.randn(25, 3)
    capture = ActivationCapture(net, ["3"])
    with capture:
        for start in range(0, 25, 10):
            capture.forward(lambda start=start: net(x[start : start + 10]))
    with torch.no_grad():
        expected = nn.functional.gelu(net[2](torch.relu(net[0](x))))
    torch.testing.assert_close(capture.activations()["3"], expected)


def test_unknown_name_lists_existing_modules() -> None:
    with pytest.raises(
        ValueError, match=r"does not exist in Sequential \(got 'relu'\).*Modules that exist: '0', '1'"
    ):
        ActivationCapture(_mlp(), ["relu"])


def test_bad_layer_arguments() -> None:
    with pytest.raises(TypeError, match="`layers` must be a sequence of module names"):
        ActivationCapture(_mlp(), "1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one module"):
        ActivationCapture(_mlp(), [])
    with pytest.raises(ValueError, match="same layer twice"):
        ActivationCapture(_mlp(), ["1", "1"])


def test_wrapper_prefixes_are_normalised_for_compiled_submodule() -> None:
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = torch.compile(nn.Sequential(nn.Linear(3, 4), nn.ReLU()), backend="eager")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

    model = Model()
    assert "body._orig_mod.1" in dict(model.named_modules())
    capture = ActivationCapture(model, ["body.1"])
    assert capture.names == ["body.1"]
    x = torch.randn(6, 3)
    with capture, torch.compiler.set_stance("force_eager"):
        capture.forward(lambda: model(x))
    assert capture.activations()["body.1"].shape == (6, 4)
    # The compiled module itself, named without the prefix, resolves to the module it wraps.
    assert ActivationCapture(model, ["body"]).names == ["body"]


def test_checkpoint_wrapper_prefix() -> None:
    wrappers = pytest.importorskip("torch.distributed.algorithms._checkpoint.checkpoint_wrapper")
    model = nn.Sequential(
        nn.Linear(3, 4), wrappers.checkpoint_wrapper(nn.Sequential(nn.Linear(4, 4), nn.Tanh()))
    )
    assert "1._checkpoint_wrapped_module.1" in dict(model.named_modules())
    capture = ActivationCapture(model, ["1.1"])
    with capture:
        capture.forward(lambda: model(torch.randn(5, 3)))
    assert capture.activations()["1.1"].shape == (5, 4)


def test_ddp_style_module_prefix() -> None:
    class Wrapper(nn.Module):  # the `module.` prefix of DDP/DataParallel
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.module(x)

    wrapped = Wrapper(_mlp())
    capture = ActivationCapture(wrapped, ["1", "module.3"])
    assert capture.names == ["1", "3"]


def test_shared_module_gives_one_layer_per_call() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(3, 4), nn.Linear(4, 5)
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.fc2(self.act(self.fc1(x))))

    model = Shared()
    x = torch.randn(7, 3)
    capture = ActivationCapture(model, ["act"])
    with capture:
        capture.forward(lambda: model(x))
    acts = capture.activations()
    assert [(k, v.shape[1]) for k, v in acts.items()] == [("act:0", 4), ("act:1", 5)]
    only_second = ActivationCapture(model, ["act:1"])
    with only_second:
        only_second.forward(lambda: model(x))
    torch.testing.assert_close(only_second.activations()["act:1"], acts["act:1"])
    assert find_layers(model, lambda: model(x)) == ["act:0", "act:1"]


def test_find_layers_follows_forward_order_not_registration_order() -> None:
    class Reordered(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.late = nn.Tanh()  # registered first, runs last
            self.fc1, self.fc2 = nn.Linear(2, 4), nn.Linear(4, 4)
            self.early = nn.SiLU()
            self.unused = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.late(self.fc2(self.early(self.fc1(x))))

    model = Reordered()
    assert activation_module_names(model) == ["late", "early", "unused"]
    assert find_layers(model, lambda: model(torch.zeros(3, 2))) == ["early", "late"]
    assert find_layers(model, lambda: model(torch.zeros(3, 2)), nn.Linear) == ["fc1", "fc2"]
    assert find_layers(model, lambda: model(torch.zeros(3, 2)), lambda n, m: n == "fc2") == ["fc2"]
    assert _hook_count(model) == 0


def test_find_layers_functional_activations_raises_with_candidates() -> None:
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.fc(x))

    model = Functional()
    with pytest.raises(ValueError, match=r"no layer of Functional matches the layer selection.*from: 'fc'"):
        find_layers(model, lambda: model(torch.zeros(2, 2)))
    assert candidate_module_names(model) == ["fc"]


def test_find_layers_selected_modules_never_run() -> None:
    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.spare = nn.Linear(2, 2), nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    model = Unused()
    with pytest.raises(ValueError, match="none of the selected modules"):
        find_layers(model, lambda: model(torch.zeros(2, 2)))


def test_flatten_rules() -> None:
    conv = torch.randn(4, 3, 5, 5)
    assert flatten_output(conv).shape == (4, 75)
    tokens = torch.randn(4, 6, 8)
    torch.testing.assert_close(flatten_output(tokens), tokens.reshape(4, 48))
    assert flatten_output(torch.randn(4)).shape == (4, 1)
    nested = ([torch.randn(4, 2)], torch.randn(9))
    torch.testing.assert_close(flatten_output(nested), nested[0][0])
    as_dict = {"logits": torch.randn(4, 3), "hidden": torch.randn(4, 7)}
    torch.testing.assert_close(flatten_output(as_dict), as_dict["logits"])
    assert flatten_output(torch.randn(4, 2, dtype=torch.bfloat16)).dtype == torch.float32
    assert flatten_output(torch.randn(4, 2, dtype=torch.float64)).dtype == torch.float64
    with pytest.raises(TypeError, match="holds no tensor"):
        flatten_output(("a", 1), "x")
    with pytest.raises(TypeError, match="torch.int64"):
        flatten_output(torch.ones(4, 2, dtype=torch.long), "x")
    with pytest.raises(ValueError, match="0-dim"):
        flatten_output(torch.tensor(1.0), "x")


def test_lstm_and_attention_outputs() -> None:
    class Seq(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(3, 5, batch_first=True)
            self.attn = nn.MultiheadAttention(5, 1, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h, _ = self.lstm(x)
            out, _ = self.attn(h, h, h)
            return out

    model = Seq()
    capture = ActivationCapture(model, ["lstm", "attn"])
    with capture:
        capture.forward(lambda: model(torch.randn(4, 6, 3)), batch_size=4)
    assert {k: tuple(v.shape) for k, v in capture.activations().items()} == {"lstm": (4, 30), "attn": (4, 30)}


def test_capture_is_a_copy() -> None:
    class InPlace(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.act(x)
            h += 100.0
            return h

    model = InPlace()
    x = torch.randn(3, 2)
    capture = ActivationCapture(model, ["act"])
    with capture:
        capture.forward(lambda: model(x))
    torch.testing.assert_close(capture.activations()["act"], torch.relu(x))


def test_wrong_sample_dim_is_reported() -> None:
    class Transposed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(x.t())

    model = Transposed()
    capture = ActivationCapture(model, ["act"])
    with capture, pytest.raises(ValueError, match="dim 0 of every output to be the sample dim"):
        capture.forward(lambda: model(torch.randn(4, 3)), batch_size=4)


def test_hooks_removed_on_exception_and_idempotent() -> None:
    net = _mlp()
    capture = ActivationCapture(net, ["1", "3"])
    with pytest.raises(RuntimeError, match="shape"), capture:
        assert _hook_count(net) == 2 and capture.attached
        capture.forward(lambda: net(torch.randn(4, 5)))  # wrong input width
    assert _hook_count(net) == 0 and not capture.attached
    capture.remove()
    with pytest.raises(RuntimeError, match="attached hooks"):
        capture.forward(lambda: net(torch.randn(4, 3)))


def test_module_that_does_not_run() -> None:
    net = _mlp()
    outer = nn.ModuleDict({"net": net, "spare": nn.ReLU()})
    capture = ActivationCapture(outer, ["spare"])
    with capture, pytest.raises(RuntimeError, match="did not run"):
        capture.forward(lambda: net(torch.randn(2, 3)))
