"""Augmentation policies: sub-policies of (op, probability, level), as JSON, applied per image to uint8 batches.

Each image gets one sub-policy drawn uniformly; its ops run in order, each with its probability, signed ops
mirrored with probability 0.5. :class:`PolicyTransform` is the same as a ``torchvision.transforms.v2`` transform.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from leanvision._io import atomic_write_text
from leanvision.augment.ops import NUM_LEVELS, OP_NAMES, OPS, apply_op, check_level, get_op, value_table
from leanvision.engine.training import register_policy_loader
from leanvision.errors import ConfigError

Entry = tuple[str, float, int]  # (op, probability, level)
BatchTransform = Callable[[Tensor, "torch.Generator | None"], Tensor]  # uint8 [N, C, H, W] -> uint8, seeded


@dataclass(frozen=True)
class Policy:
    """Sub-policies, each a sequence of ``(op, probability, level)``; Adversarial AutoAugment's have probability 1."""

    sub_policies: tuple[tuple[Entry, ...], ...]

    def __post_init__(self) -> None:
        if not self.sub_policies:
            raise ConfigError("a policy needs at least one sub-policy: a list of [op, probability, level] entries")
        for i, sub in enumerate(self.sub_policies):
            if not sub:
                raise ConfigError(f"sub-policy {i} of the policy is empty: give at least one [op, probability, level]")
            for op, prob, level in sub:
                get_op(op)
                check_level(op, level, f" in sub-policy {i}")
                if not 0 <= prob <= 1:
                    raise ConfigError(f"probability {prob!r} of {op} in sub-policy {i} is out of range: give 0..1")

    @classmethod
    def from_json(cls, data: Any, source: str = "policy") -> Policy:
        """A policy from its JSON form ``{"sub_policies": [[[op, prob, level], ...], ...]}``."""
        subs = data.get("sub_policies") if isinstance(data, dict) else None
        if not isinstance(subs, list) or not all(isinstance(s, list) for s in subs):
            raise ConfigError(f'{source}: expected {{"sub_policies": [[[op, probability, level], ...], ...]}}')
        if isinstance(data, dict) and data.get("levels", NUM_LEVELS) != NUM_LEVELS:
            raise ConfigError(f"{source}: written for {data['levels']} magnitude levels, this version has {NUM_LEVELS}")
        entries = []
        for i, sub in enumerate(subs):
            if not all(isinstance(e, list) and len(e) == 3 and isinstance(e[0], str)
                       and isinstance(e[1], (int, float)) for e in sub):  # fmt: skip
                raise ConfigError(f"{source}: sub-policy {i} must be a list of [op, probability, level] entries")
            entries.append(tuple((e[0], float(e[1]), e[2]) for e in sub))
        return cls(tuple(entries))

    def to_json(self) -> dict[str, Any]:
        """The JSON form (see :meth:`from_json`)."""
        return {"levels": NUM_LEVELS, "sub_policies": [[list(e) for e in sub] for sub in self.sub_policies]}

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Policy:
        """Read a policy JSON file."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read policy file '{p}' ({e}): give a JSON file written by leanvision") from None
        return cls.from_json(data, str(p))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the policy as JSON (atomically), one sub-policy a line."""
        subs = ",\n  ".join(json.dumps(sub) for sub in self.to_json()["sub_policies"])
        return atomic_write_text(path, f'{{"levels": {NUM_LEVELS}, "sub_policies": [\n  {subs}\n]}}\n')

    def apply(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Apply to uint8 ``[N, C, H, W]`` images, one uniformly drawn sub-policy per image."""
        sub = torch.randint(len(self.sub_policies), (images.shape[0],), generator=generator)
        return apply_subpolicies(images, policy_table([self]), sub, generator=generator)

    def transform(self) -> PolicyTransform:
        """This policy as a ``torchvision.transforms.v2`` transform."""
        return PolicyTransform(self)


def policy_table(policies: Sequence[Policy]) -> tuple[Tensor, Tensor, Tensor]:
    """(op index, level, probability), each ``[S, K]``: the sub-policies of ``policies`` one after the other.

    Sub-policies shorter than the longest are padded with probability-0 entries.
    """
    subs = [sub for p in policies for sub in p.sub_policies]
    k = max(len(s) for s in subs)
    pad = [(OP_NAMES[0], 0.0, 0)]
    rows = [list(s) + pad * (k - len(s)) for s in subs]
    ops = torch.tensor([[OP_NAMES.index(e[0]) for e in r] for r in rows])
    levels = torch.tensor([[e[2] for e in r] for r in rows])
    return ops, levels, torch.tensor([[e[1] for e in r] for r in rows], dtype=torch.float64)


_VALUES = value_table()
_SIGNED = torch.tensor([OPS[n].signed for n in OP_NAMES])


def apply_subpolicies(images: Tensor, table: tuple[Tensor, Tensor, Tensor], sub: Tensor, *,
                      generator: torch.Generator | None = None) -> Tensor:  # fmt: skip
    """Apply sub-policy ``sub[i]`` of ``table`` (see :func:`policy_table`) to image i of a uint8 batch."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ConfigError(f"policies apply to uint8 [N, C, H, W] images (before ToDtype/Normalize), got "
                          f"{images.dtype} {tuple(images.shape)}")  # fmt: skip
    ops, levels, probs = (t[sub] for t in table)
    n, x = images.shape[0], images
    for k in range(ops.shape[1]):
        r = torch.rand(n, 4, generator=generator, dtype=torch.float64)  # apply?, mirror?, Cutout's centre
        partner = torch.randint(n, (n,), generator=generator)  # SamplePairing's other image
        op, active = ops[:, k], r[:, 0] < probs[:, k]
        values = _VALUES[op, levels[:, k]] * torch.where(_SIGNED[op] & (r[:, 1] < 0.5), -1.0, 1.0)
        out = x.clone()
        for o in op[active].unique().tolist():
            idx = (active & (op == o)).nonzero().flatten()
            pairs = x[partner[idx]] if OP_NAMES[o] == "SamplePairing" else None
            out[idx] = apply_op(OP_NAMES[o], x[idx], values[idx], u=r[idx, 2:], pairs=pairs)
        x = out
    return x


def augment_copies(images: Tensor, policies: Sequence[Policy], *,
                   generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Batch augmentation: each image M = len(policies) times, copy m under policy m; returns (copies, index).

    Copies are ordered image by image (``[x1 p1, ..., x1 pM, x2 p1, ...]``); ``index[j]`` is copy j's policy.
    """
    m, b = len(policies), images.shape[0]
    counts = {len(p.sub_policies) for p in policies}
    if len(counts) != 1:
        raise ConfigError(f"batch augmentation needs policies with the same number of sub-policies, got {counts}")
    q = counts.pop()
    index = torch.arange(m).repeat(b)
    sub = index * q + torch.randint(q, (m * b,), generator=generator)
    return apply_subpolicies(images.repeat_interleave(m, 0), policy_table(policies), sub, generator=generator), index


class PolicyTransform(v2.Transform):
    """A :class:`Policy` as a transforms.v2 transform of uint8 images (tensor, ``tv_tensors.Image`` or PIL)."""

    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self.policy = policy

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """Apply the policy to an image or a batch of images; other inputs (labels, boxes) pass unchanged."""
        from PIL import Image

        if isinstance(inpt, Image.Image):
            return TF.to_pil_image(self.transform(TF.pil_to_tensor(inpt), params))
        if not isinstance(inpt, Tensor) or (isinstance(inpt, tv_tensors.TVTensor)
                                            and not isinstance(inpt, tv_tensors.Image)):  # fmt: skip
            return inpt
        x = inpt.as_subclass(Tensor)
        out = self.policy.apply(x if x.dim() == 4 else x[None])
        out = out if x.dim() == 4 else out[0]
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.Image) else out


# torchvision's own policies, by name: each image gets its own draw (called on a batch, they draw once for all).
TORCHVISION_POLICIES: dict[str, Callable[[], Callable[[Tensor], Tensor]]] = {
    "autoaugment": lambda: v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10),
    "randaugment": v2.RandAugment,
    "trivialaugment": v2.TrivialAugmentWide,
}


def batch_transform(policy: str | os.PathLike[str] | Policy) -> BatchTransform:
    """``(uint8 batch, generator) -> uint8 batch`` for a :class:`Policy`, a policy JSON file or a torchvision name."""
    if isinstance(policy, Policy):
        return policy.apply
    if str(policy) in TORCHVISION_POLICIES:
        tv = TORCHVISION_POLICIES[str(policy)]()

        def per_image(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
            seed = int(torch.randint(2**62, (1,), generator=generator))
            with torch.random.fork_rng(devices=[]):  # torchvision draws from the global RNG: seed it from ours
                torch.manual_seed(seed)
                return torch.stack([tv(img) for img in images]) if len(images) else images

        return per_image
    if not Path(policy).is_file():
        raise ConfigError(
            f"policy '{policy}': no such file and not one of {', '.join(TORCHVISION_POLICIES)}; give a "
            "policy JSON (e.g. the policy.json of a `leanvision augsearch` run) or one of those names"
        )
    return Policy.load(policy).apply


register_policy_loader(batch_transform)  # TrainConfig.policy, without the engine importing this room
