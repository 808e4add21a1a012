"""Adversarial AutoAugment (arXiv 1912.11188): an LSTM controller samples M policies per epoch, the target network
trains on M augmented copies of every batch, and REINFORCE moves the controller toward the policies it found hardest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leanvision.augment.ops import NUM_LEVELS, OP_NAMES, cutout
from leanvision.augment.policy import Policy, augment_copies
from leanvision.data import normalize
from leanvision.engine.step import full_precision
from leanvision.errors import ConfigError


class PolicyController(nn.Module):
    """One autoregressive LSTM sequence of [op, level] decisions: ``sub_policies`` x ``ops_per_sub`` (op, level) pairs.

    Each sampled token is embedded and fed as the next input. The heads start at zero, so the first policies are
    uniformly random (and a controller that is never trained stays the uniform baseline).
    """

    def __init__(self, *, sub_policies: int = 5, ops_per_sub: int = 2, hidden: int = 100, embed: int = 32) -> None:
        super().__init__()
        self.sub_policies, self.ops_per_sub, self.hidden = sub_policies, ops_per_sub, hidden
        self.embed = nn.Embedding(1 + len(OP_NAMES) + NUM_LEVELS, embed)  # token 0 starts the sequence
        self.lstm = nn.LSTMCell(embed, hidden)
        self.op_head, self.level_head = nn.Linear(hidden, len(OP_NAMES)), nn.Linear(hidden, NUM_LEVELS)
        for head in (self.op_head, self.level_head):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    @property
    def decisions(self) -> int:
        """Length of one sequence: an op and a level per op of every sub-policy."""
        return 2 * self.sub_policies * self.ops_per_sub

    def forward(self, n: int | None = None, actions: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Sample ``n`` sequences, or score the given ``actions`` [n, decisions]: (actions, log p [n], entropy [n])."""
        if actions is None and n is None:
            raise ConfigError("PolicyController: pass n (how many policies to sample) or the actions to score")
        n = actions.shape[0] if actions is not None else n
        h = c = torch.zeros(n, self.hidden, device=self.op_head.weight.device)
        token = torch.zeros(n, dtype=torch.long, device=h.device)
        log_p, entropy, taken = h.new_zeros(n), h.new_zeros(n), []
        for t in range(self.decisions):
            h, c = self.lstm(self.embed(token), (h, c))
            is_op = t % 2 == 0
            logq = F.log_softmax((self.op_head if is_op else self.level_head)(h), dim=-1)
            a = actions[:, t] if actions is not None else torch.multinomial(logq.detach().exp(), 1).squeeze(1)
            log_p = log_p + logq.gather(1, a[:, None]).squeeze(1)
            entropy = entropy - (logq.exp() * logq).sum(1)
            taken.append(a)
            token = a + 1 + (0 if is_op else len(OP_NAMES))
        return torch.stack(taken, 1), log_p, entropy

    def policies(self, actions: Tensor) -> list[Policy]:
        """The :class:`Policy` of each sampled sequence (every op applied: probability 1)."""
        rows = actions.view(actions.shape[0], self.sub_policies, self.ops_per_sub, 2).tolist()
        return [Policy(tuple(tuple((OP_NAMES[o], 1.0, lv) for o, lv in sub) for sub in row)) for row in rows]


def reinforce(controller: PolicyController, optimizer: torch.optim.Optimizer, actions: Tensor, losses: Tensor, *,
              entropy_weight: float, maximise: bool = True) -> dict[str, float]:  # fmt: skip
    """One REINFORCE step that raises the probability of the policies with the higher (normalised) target loss.

    loss_θ = -mean_m(R_m log p(τ_m)) - w mean_m H_m with R = (L - mean L) / (std L + 1e-5): maximises the loss
    (``maximise=False``: R = -R, toward the lower loss).
    """
    reward = (losses - losses.mean()) / (losses.std() + 1e-5) * (1 if maximise else -1)
    _, log_p, entropy = controller(actions=actions)
    loss = -(reward.detach() * log_p).mean() - entropy_weight * entropy.mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"controller_entropy": entropy.mean().item(), "controller_loss": loss.item()}


class BatchAugmentStep:
    """``fit(train_step=...)`` on uint8 batches: policies, Cutout, normalisation, then one SGD step of the target net.

    With a ``controller``: each image is trained ``copies`` (M) times, copy m under the epoch's policy m, on the mean
    of the per-policy losses; at the end of each epoch the per-policy losses averaged over the epoch are the rewards
    of a REINFORCE step (``train_controller``; toward the lower loss if not ``maximise``; otherwise the controller
    stays uniform: random batch augmentation),
    then M new policies are sampled. With ``fixed`` instead: one copy under that batch transform. ``probe`` (uint8
    images, targets) gets the clean and augmented loss in eval mode at every epoch's end. The state (controller, its
    Adam, the epoch's policies) is checkpointed by fit, so a resumed run continues exactly.
    """

    def __init__(self, *, mean: Tensor, std: Tensor, steps_per_epoch: int, controller: PolicyController | None = None,
                 copies: int = 8, train_controller: bool = True, maximise: bool = True, lr: float = 3.5e-4,
                 entropy_weight: float = 1e-5,
                 fixed: Callable[[Tensor, Any], Tensor] | None = None, cutout: int = 0,
                 probe: tuple[Tensor, Tensor] | None = None) -> None:  # fmt: skip
        if (controller is None) == (fixed is None):
            raise ConfigError("BatchAugmentStep: give a controller (batch augmentation) or a fixed transform")
        if controller is not None and train_controller and copies < 2:
            raise ConfigError("a trained controller compares policies: copies must be >= 2")
        self.mean, self.std, self.steps_per_epoch = mean, std, steps_per_epoch
        self.controller, self.copies, self.train_controller = controller, copies if controller else 1, train_controller
        self.maximise, self.entropy_weight, self.fixed, self.cutout = maximise, entropy_weight, fixed, cutout
        self.probe = probe
        self.optimizer = torch.optim.Adam(controller.parameters(), lr=lr) if controller is not None else None
        self.actions: Tensor | None = None
        self._loss_sum: Tensor | None = None
        self._batches = 0

    def _sample(self) -> None:
        with torch.no_grad():
            self.actions = self.controller(self.copies)[0]

    def augment(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(normalised copies, policy index per copy) of a uint8 batch, ordered image by image."""
        if self.controller is not None:
            if self.actions is None:
                self._sample()
            x, index = augment_copies(images, self.controller.policies(self.actions))
        else:
            x, index = self.fixed(images, None), torch.zeros(images.shape[0], dtype=torch.long)
        x = cutout(x, self.cutout, torch.rand(x.shape[0], 2))
        return normalize(x, self.mean, self.std), index

    def __call__(self, model: nn.Module, inputs: Tensor, targets: Tensor, ctx: Any) -> tuple[Tensor, Tensor]:
        x, index = (t.to(inputs.device) for t in self.augment(inputs.cpu()))  # the uint8 ops run on the CPU
        m, b = self.copies, targets.shape[0]
        outputs, y = model(x), targets.repeat_interleave(m)
        # each policy's mean loss over its own copies, found by the policy index each copy carries
        losses = torch.stack([ctx.loss_fn(outputs[index == j], y[index == j], x[index == j]) for j in range(m)])
        loss = losses.mean()
        ctx.update(loss)
        self._loss_sum = losses.detach() + (self._loss_sum if self._loss_sum is not None else 0)
        self._batches += 1
        if (ctx.step + 1) % self.steps_per_epoch == 0:
            with full_precision(outputs.device):  # the policy gradient and the probe in float32 under --precision bf16
                ctx.metrics.update(self._end_epoch(model, ctx.loss_fn))
        return loss.detach(), outputs.detach().view(b, m, -1).mean(1)

    def _end_epoch(self, model: nn.Module, loss_fn: Any) -> dict[str, Any]:
        losses = self._loss_sum / self._batches
        self._loss_sum, self._batches = None, 0
        row: dict[str, Any] = {**self._probe(model, loss_fn), "policy_losses": losses.tolist()}
        if self.controller is not None:
            ops = self.actions[:, 0::2].flatten()
            row["op_counts"] = torch.bincount(ops, minlength=len(OP_NAMES)).tolist()
            row["policies"] = [p.to_json()["sub_policies"] for p in self.controller.policies(self.actions)]
            if self.train_controller:
                row.update(reinforce(self.controller, self.optimizer, self.actions, losses,
                                     entropy_weight=self.entropy_weight, maximise=self.maximise))  # fmt: skip
            else:
                with torch.no_grad():
                    row["controller_entropy"] = self.controller(actions=self.actions)[2].mean().item()
            self._sample()
        return row

    def _probe(self, model: nn.Module, loss_fn: Any) -> dict[str, float]:
        if self.probe is None:
            return {}
        images, targets = self.probe
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                clean = normalize(images, self.mean, self.std).to(device)
                clean_loss = loss_fn(model(clean), targets.to(device), clean).item()
                x, _ = self.augment(images)
                x = x.to(device)
                aug_loss = loss_fn(model(x), targets.repeat_interleave(self.copies).to(device), x).item()
        finally:
            model.train(was_training)
        return {"probe_clean_loss": clean_loss, "probe_aug_loss": aug_loss}

    def state_dict(self) -> dict[str, Any]:
        """Controller, its optimizer and the current epoch's policies (for fit's checkpoint)."""
        if self.controller is None:
            return {}
        return {"controller": self.controller.state_dict(), "optimizer": self.optimizer.state_dict(),
                "actions": self.actions}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`."""
        if self.controller is None or not state:
            return
        self.controller.load_state_dict(state["controller"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.actions = state["actions"]
