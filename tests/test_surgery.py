"""leanvision.models.replace_modules: in-place surgery by type or predicate on torchvision and leanvision models."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual

from leanvision.errors import ConfigError
from leanvision.models import arch_of, create_model, replace_modules


class Wrap(nn.Module):
    """Stands in for a converted layer (a Ghost or dynamic version): holds the original under `inner`."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def _wrap(_name: str, module: nn.Module) -> nn.Module:
    return Wrap(module)


def test_resnet18_every_conv_wrapped() -> None:
    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
    before = model.state_dict()
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    names = replace_modules(model, nn.Conv2d, _wrap)
    assert len(names) == 20 and names == convs
    assert isinstance(model.layer1[0].conv1, Wrap) and isinstance(model.layer2[0].downsample[0], Wrap)
    assert not any(isinstance(m, Wrap) for m in (w.inner for w in model.modules() if isinstance(w, Wrap)))
    after = model.state_dict()
    renamed = {f"{n}.weight": f"{n}.inner.weight" for n in convs}
    assert set(after) == {renamed.get(k, k) for k in before}  # same prefixes, one level deeper for the convs
    assert all(torch.equal(after[renamed.get(k, k)], v) for k, v in before.items())
    assert not any(w.training for w in model.modules())  # replacements took the eval mode of what they replaced
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)


def test_same_parameter_names_when_the_replacement_has_them() -> None:
    model = torchvision.models.resnet18()
    before = {k: v.shape for k, v in model.state_dict().items()}

    def fresh(_name: str, conv: nn.Conv2d) -> nn.Conv2d:  # e.g. a re-initialised or re-typed conv
        return nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=False)

    assert len(replace_modules(model, lambda _n, m: type(m) is nn.Conv2d, fresh)) == 20
    assert {k: v.shape for k, v in model.state_dict().items()} == before


def test_mobilenet_v2_replaced_blocks_are_not_visited_again() -> None:
    model = torchvision.models.mobilenet_v2().eval()
    seen: list[str] = []

    def make(name: str, module: nn.Module) -> nn.Module:
        seen.append(name)
        return Wrap(module)

    names = replace_modules(model, (InvertedResidual, nn.Conv2d), make)
    # 17 blocks; the only convs outside them are the stem (features.0.0) and the last 1x1 (features.18.0)
    assert len(names) == 19 and names == seen
    assert names[0] == "features.0.0" and names[-1] == "features.18.0" and "features.1" in names
    assert sum(isinstance(m, Wrap) for m in model.modules()) == 19  # convs inside the blocks were left alone
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 1000)


def test_predicate_module_list_dict_and_shared_modules() -> None:
    shared = nn.ReLU()
    model = nn.Module()
    model.seq = nn.Sequential(nn.Linear(2, 2), shared)
    model.lst = nn.ModuleList([nn.Linear(2, 2), shared])
    model.dct = nn.ModuleDict({"a": nn.Linear(2, 2), "b": nn.Sequential(nn.Linear(2, 2))})
    names = replace_modules(model, lambda name, m: isinstance(m, nn.ReLU) or name.endswith(".a"), _wrap)
    assert names == ["seq.1", "lst.1", "dct.a"]
    assert model.seq[1] is model.lst[1] and isinstance(model.lst[1], Wrap)  # still shared, wrapped once
    assert isinstance(model.dct["a"], Wrap) and isinstance(model.dct["b"][0], nn.Linear)


def test_make_may_decline_and_root_is_never_replaced() -> None:
    model = nn.Sequential(nn.Sequential(nn.Linear(2, 2)), nn.Linear(2, 2))
    names = replace_modules(model, nn.Sequential, lambda _n, m: m)  # declined: its children are still walked
    assert names == []
    assert replace_modules(model, (nn.Sequential, nn.Linear), lambda n, m: m if n == "0" else Wrap(m)) == [
        "0.0",
        "1",
    ]
    assert type(model) is nn.Sequential


def test_surgery_forgets_the_registered_architecture() -> None:
    model = create_model("resnet20")
    assert arch_of(model) is not None
    assert replace_modules(model, nn.Conv3d, _wrap) == []
    assert arch_of(model) is not None  # nothing replaced: still the registered build
    assert len(replace_modules(model, nn.Conv2d, _wrap)) == 19
    assert arch_of(model) is None


def test_bad_arguments() -> None:
    model = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="match must be a module type"):
        replace_modules(model, "Linear", _wrap)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"make\('0', module\) must return an nn.Module, got NoneType"):
        replace_modules(model, nn.Linear, lambda _n, _m: None)  # type: ignore[arg-type,return-value]
