"""Augmentation ops, policies, batch augmentation and the Adversarial AutoAugment controller (arXiv 1912.11188)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms import v2

from leanvision.augment import (
    NUM_LEVELS,
    OP_NAMES,
    BatchAugmentStep,
    Policy,
    PolicyController,
    apply_op,
    augment_copies,
    batch_transform,
    get_op,
    reinforce,
)
from leanvision.errors import ConfigError, UnknownNameError

# AutoAugment's 16 ops and the largest magnitude of each (None: no magnitude); signed ones are mirrored.
RANGES = {"ShearX": 0.3, "ShearY": 0.3, "TranslateX": 0.45, "TranslateY": 0.45, "Rotate": 30.0, "AutoContrast": None,
          "Invert": None, "Equalize": None, "Solarize": 256.0, "Posterize": 4.0, "Contrast": 0.9, "Color": 0.9,
          "Brightness": 0.9, "Sharpness": 0.9, "Cutout": 0.2, "SamplePairing": 0.4}  # fmt: skip
SIGNED = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Contrast", "Color", "Brightness", "Sharpness"}


def _images(n: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8)


def _apply(name: str, x: torch.Tensor, values: list[float], seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(len(x), 2, generator=g, dtype=torch.float64)
    return apply_op(name, x, torch.tensor(values, dtype=torch.float64), u=u, pairs=x.flip(0))


def test_the_16_ops_their_ranges_and_identity_at_level_zero() -> None:
    assert tuple(RANGES) == OP_NAMES
    x = _images()
    for name, top in RANGES.items():
        op = get_op(name)
        assert (op.max_value, op.signed) == (top, name in SIGNED), name
        if top is None:
            continue
        assert op.value(0) == 0 and op.value(NUM_LEVELS - 1) == pytest.approx(top), name
        assert torch.equal(_apply(name, x, [op.value(0)] * len(x)), x), f"{name} at level 0 is not the identity"
        strongest = _apply(name, x, [top] * len(x))
        assert not torch.equal(strongest, x), f"{name} at its top level changes nothing"
        if op.signed:
            assert not torch.equal(_apply(name, x, [-top] * len(x)), strongest), f"{name} is not mirrored"
    # The ends of the ranges, as AutoAugment defines them.
    assert torch.equal(_apply("Solarize", x, [256.0] * 6), 255 - x)  # threshold 0: every pixel inverted
    assert torch.all(_apply("Posterize", x, [4.0] * 6) % 16 == 0)  # 4 bits kept
    blend = (0.6 * x.float() + 0.4 * x.flip(0).float()).round().byte()  # 40% of the partner image
    assert torch.equal(_apply("SamplePairing", x, [0.4] * 6), blend)
    side = round(0.2 * 16)  # Cutout's square at the top level: a fifth of the image side
    assert ((_apply("Cutout", x, [0.2] * 6) != x).flatten(1).sum(1) <= 3 * side * side).all()


@pytest.mark.parametrize("name", list(RANGES))
def test_a_batch_equals_the_op_applied_image_by_image(name: str) -> None:
    op, x = get_op(name), _images(8)
    g = torch.Generator().manual_seed(2)
    levels = torch.randint(0, NUM_LEVELS, (8,), generator=g).tolist()
    signs = [(-1) ** int(s) if op.signed else 1 for s in torch.randint(0, 2, (8,), generator=g)]
    values = torch.tensor([s * op.value(lv) for s, lv in zip(signs, levels, strict=True)], dtype=torch.float64)
    u, pairs = torch.rand(8, 2, generator=g, dtype=torch.float64), _images(8, seed=5)
    batch = apply_op(name, x, values, u=u, pairs=pairs)
    one_by_one = torch.cat([apply_op(name, x[i : i + 1], values[i : i + 1], u=u[i : i + 1], pairs=pairs[i : i + 1])
                            for i in range(8)])  # fmt: skip
    assert torch.equal(batch, one_by_one)


def test_policy_json_round_trip_and_as_a_transforms_v2_transform(tmp_path) -> None:
    policy = Policy((
        (("Rotate", 1.0, 9), ("Color", 0.5, 3)),
        (("Invert", 1.0, 0), ("Cutout", 1.0, 9)),
    ))  # fmt: skip
    assert Policy.from_json(json.loads(json.dumps(policy.to_json()))) == policy
    assert Policy.load(policy.save(tmp_path / "p.json")) == policy
    t = policy.transform()
    assert isinstance(t, v2.Transform)
    x = _images(4)
    torch.manual_seed(0)
    batch = t(x)
    assert batch.shape == x.shape and batch.dtype == torch.uint8 and not torch.equal(batch, x)
    assert t(x[0]).shape == x[0].shape
    img = tv_tensors.Image(x[0])
    out, label = v2.Compose([t, v2.ToDtype(torch.float32, scale=True)])(img, 3)
    assert isinstance(out, tv_tensors.Image) and out.dtype == torch.float32 and label == 3
    pil = v2.functional.to_pil_image(x[0])
    assert t(pil).size == pil.size
    # The same seed, the same draws: a batch transform is reproducible from its generator.
    run = batch_transform(policy)
    assert torch.equal(run(x, torch.Generator().manual_seed(4)), run(x, torch.Generator().manual_seed(4)))


def test_unknown_op_or_magnitude_out_of_range_is_a_one_line_error(tmp_path) -> None:
    with pytest.raises(UnknownNameError, match=r"unknown augmentation op 'Rotat'; did you mean 'Rotate'\?"):
        Policy.from_json({"sub_policies": [[["Rotat", 1.0, 3]]]})
    with pytest.raises(ConfigError, match=r"magnitude 10 of Rotate in sub-policy 0 is out of range: .* 0\.\.9"):
        Policy.from_json({"sub_policies": [[["Rotate", 1.0, 10]]]})
    with pytest.raises(ConfigError, match=r"probability 1\.5 of Color"):
        Policy.from_json({"sub_policies": [[["Color", 1.5, 1]]]})
    for bad in (["Color", 1], ["Color", "often", 1]):
        with pytest.raises(ConfigError, match=r"sub-policy 0 must be a list of \[op, probability, level\]"):
            Policy.from_json({"sub_policies": [[bad]]})
    with pytest.raises(ConfigError, match="no such file and not one of autoaugment, randaugment, trivialaugment"):
        batch_transform(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="uint8"):
        Policy(((("Invert", 1.0, 0),),)).apply(torch.zeros(1, 3, 4, 4))


def _by_hand(ctrl: PolicyController, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p and entropy of ``actions`` from the LSTM equations written out."""
    n, hid = actions.shape[0], ctrl.hidden
    w_ih, w_hh, b = ctrl.lstm.weight_ih, ctrl.lstm.weight_hh, ctrl.lstm.bias_ih + ctrl.lstm.bias_hh
    h, c, token = torch.zeros(n, hid), torch.zeros(n, hid), torch.zeros(n, dtype=torch.long)
    log_p, entropy = torch.zeros(n), torch.zeros(n)
    for t in range(actions.shape[1]):
        gates = ctrl.embed.weight[token] @ w_ih.T + h @ w_hh.T + b
        i, f, g, o = gates[:, :hid].sigmoid(), gates[:, hid : 2 * hid].sigmoid(), gates[:, 2 * hid : 3 * hid].tanh(), \
            gates[:, 3 * hid :].sigmoid()  # fmt: skip
        c = f * c + i * g
        h = o * c.tanh()
        head = ctrl.op_head if t % 2 == 0 else ctrl.level_head
        z = h @ head.weight.T + head.bias
        logq = z - z.exp().sum(1, keepdim=True).log()
        log_p += logq[torch.arange(n), actions[:, t]]
        entropy -= (logq.exp() * logq).sum(1)
        token = actions[:, t] + 1 + (0 if t % 2 == 0 else len(OP_NAMES))
    return log_p, entropy


def test_controller_log_prob_and_entropy_match_a_hand_computation() -> None:
    ctrl = PolicyController(sub_policies=5, hidden=12, embed=6)
    # Zero heads: every decision uniform, so the numbers are known in closed form.
    actions, log_p, entropy = ctrl(3)
    uniform = 10 * math.log(len(OP_NAMES)) + 10 * math.log(NUM_LEVELS)
    assert actions.shape == (3, 20)
    assert torch.allclose(log_p, torch.full((3,), -uniform)) and torch.allclose(entropy, torch.full((3,), uniform))
    torch.manual_seed(1)
    for head in (ctrl.op_head, ctrl.level_head):
        nn.init.normal_(head.weight)
        nn.init.normal_(head.bias)
    actions = ctrl(4)[0]
    _, log_p, entropy = ctrl(actions=actions)
    hand_p, hand_h = _by_hand(ctrl, actions)
    assert torch.allclose(log_p, hand_p, atol=1e-5) and torch.allclose(entropy, hand_h, atol=1e-5)
    assert (actions[:, 0::2] < len(OP_NAMES)).all() and (actions[:, 1::2] < NUM_LEVELS).all()
    policies = ctrl.policies(actions)
    assert len(policies) == 4 and all(len(p.sub_policies) == 5 for p in policies)
    assert policies[0].sub_policies[0][0] == (OP_NAMES[actions[0, 0]], 1.0, int(actions[0, 1]))


@pytest.mark.parametrize("maximise", [True, False])
def test_reinforce_moves_the_controller_toward_the_policies_with_the_higher_loss(maximise: bool) -> None:
    # maximise=False (the cooperative control) moves it the other way, toward the lower loss
    torch.manual_seed(0)
    ctrl = PolicyController(sub_policies=1, hidden=16, embed=8)
    opt = torch.optim.Adam(ctrl.parameters(), lr=0.05)
    target = OP_NAMES.index("Rotate")

    def p_target() -> float:
        with torch.no_grad():
            h, _ = ctrl.lstm(ctrl.embed(torch.zeros(1, dtype=torch.long)))
            return ctrl.op_head(h).softmax(-1)[0, target].item()

    before = p_target()
    for _ in range(40):
        with torch.no_grad():
            actions = ctrl(16)[0]
        loss = (actions[:, 0::2] == target).float().sum(1)  # the "target loss" is high where Rotate was picked
        reinforce(ctrl, opt, actions, loss, entropy_weight=1e-5, maximise=maximise)
    assert before == pytest.approx(1 / 16)
    assert p_target() > 0.5 if maximise else p_target() < 0.01


def test_batch_augmentation_keeps_each_copy_with_its_policy() -> None:
    invert = Policy(((("Invert", 1.0, 0), ("Brightness", 1.0, 0)),))
    keep = Policy(((("Brightness", 1.0, 0), ("Rotate", 1.0, 0)),))
    solar = Policy(((("Solarize", 1.0, 9), ("Posterize", 1.0, 0)),))
    x = _images(5)
    copies, index = augment_copies(x, [invert, keep, solar])
    assert copies.shape == (15, 3, 16, 16) and index.tolist() == [0, 1, 2] * 5
    for i in range(5):  # image i's copies sit at 3i .. 3i + 2, copy m under policy m
        assert torch.equal(copies[3 * i], 255 - x[i]) and torch.equal(copies[3 * i + 1], x[i])
        assert torch.equal(copies[3 * i + 2], 255 - x[i])
    # The train step's per-policy losses come from the same slicing: copy m of every image under policy m.
    from leanvision.engine import StepContext, cross_entropy

    ctrl = PolicyController(sub_policies=1)
    step = BatchAugmentStep(mean=torch.zeros(3, 1, 1), std=torch.ones(3, 1, 1), steps_per_epoch=1, controller=ctrl,
                            copies=2)  # fmt: skip
    inv, bri = OP_NAMES.index("Invert"), OP_NAMES.index("Brightness")
    step.actions = torch.tensor([[inv, 0, bri, 0], [bri, 0, bri, 0]])  # policy 0 inverts, policy 1 keeps
    torch.manual_seed(0)
    model, y = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10)), torch.arange(5)
    with torch.no_grad():
        expected = [nn.functional.cross_entropy(model(im.float() / 255), y).item() for im in (255 - x, x)]
    ctx = StepContext(optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=cross_entropy, grad_clip=None,
                      epoch=0, step=0, params=list(model.parameters()))  # fmt: skip
    loss, outputs = step(model, x, y, ctx)
    assert outputs.shape == (5, 10) and loss.item() == pytest.approx(sum(expected) / 2, rel=1e-5)
    assert ctx.metrics["policy_losses"] == pytest.approx(expected, rel=1e-5)  # the epoch's rewards, per policy
    assert ctx.metrics["op_counts"][inv] == 1 and ctx.metrics["op_counts"][bri] == 3
    assert not torch.equal(step.actions, torch.tensor([[inv, 0, bri, 0], [bri, 0, bri, 0]]))  # new epoch, new draw
