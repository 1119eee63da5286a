"""The arpo_kernels in a plain PyTorch RL loop (GRPO), with no import of ``arpo``.

A tiny autoregressive policy (token + position embeddings, an MLP, an LM head) writes 8 tokens after a one-token
prompt; the reward is the fraction of its tokens equal to the prompt's "favourite" token (prompt + 1 mod V).
Each step samples a group of G completions per prompt, computes group-normalised advantages in plain torch, and
takes one AdamW step on the clipped GRPO loss, where the two kernels do the work:

    hidden [N, H], head [V, H] ──linear_logprob_entropy──▶ log-probs [N], entropy [N]   (no [N, V] fp32 logits)
    log-probs, old log-probs, advantages, mask ──policy_loss──▶ loss, metrics           (fused fwd + bwd)

Run: ``python examples/kernels_in_a_torch_loop.py --steps 60 --out runs/kernels-loop``; it writes
``metrics.jsonl`` (one line per step) and ``policy.pt`` (the final state dict, written atomically).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from torch import nn

from arpo_kernels import linear_logprob_entropy, policy_loss

VOCAB, LENGTH, HIDDEN = 16, 8, 64


class TinyPolicy(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, HIDDEN)
        self.pos = nn.Embedding(LENGTH + 1, HIDDEN)
        self.mlp = nn.Sequential(nn.Linear(2 * HIDDEN, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, HIDDEN), nn.Tanh())
        self.head = nn.Linear(HIDDEN, VOCAB, bias=False)

    def hidden(self, prompt: torch.Tensor, prev: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """[...] prompt, previous token, position -> [..., H] hidden state that predicts the next token."""
        return self.mlp(torch.cat([self.tok(prompt), self.tok(prev) + self.pos(pos)], -1))


def sample(policy: TinyPolicy, prompts: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """prompts [B] -> completions [B, LENGTH], sampled at temperature 1."""
    out, prev = [], prompts
    with torch.no_grad():
        for t in range(LENGTH):
            logits = policy.head(policy.hidden(prompts, prev, torch.full_like(prompts, t)))
            prev = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen).squeeze(-1)
            out.append(prev)
    return torch.stack(out, 1)


def logprobs(policy: TinyPolicy, prompts: torch.Tensor, tokens: torch.Tensor):
    """Teacher-forced log-probs and entropies of ``tokens`` [B, L] through the fused kernel: [B, L] each."""
    b, n = tokens.shape
    prev = torch.cat([prompts[:, None], tokens[:, :-1]], 1)
    pos = torch.arange(n).expand(b, n)
    h = policy.hidden(prompts[:, None].expand(b, n), prev, pos).reshape(b * n, HIDDEN)
    lp, ent = linear_logprob_entropy(h, policy.head.weight, tokens.reshape(-1))
    return lp.view(b, n), ent.view(b, n)


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """rewards [P, G] -> (r - group mean) / (group std + eps)."""
    return (rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + eps)


def train(steps: int, out: Path, *, prompts_per_step: int = 8, group: int = 8, lr: float = 3e-3,
          seed: int = 0) -> list[dict]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    policy = TinyPolicy()
    opt = torch.optim.AdamW(policy.parameters(), lr=lr)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    with open(out / "metrics.jsonl", "w") as log:
        for step in range(1, steps + 1):
            prompts = torch.randint(0, VOCAB, (prompts_per_step,), generator=gen).repeat_interleave(group)
            tokens = sample(policy, prompts, gen)  # [P*G, L]
            rewards = (tokens == ((prompts + 1) % VOCAB)[:, None]).float().mean(1)  # [P*G]
            adv = group_advantages(rewards.view(prompts_per_step, group)).reshape(-1, 1).expand_as(tokens)
            with torch.no_grad():
                old, _ = logprobs(policy, prompts, tokens)
            lp, ent = logprobs(policy, prompts, tokens)
            loss, metrics = policy_loss(lp, old, adv, torch.ones_like(tokens, dtype=torch.bool), entropy=ent,
                                        clip_low=0.2, clip_high=0.28, agg="seq-mean-token-mean")
            opt.zero_grad()
            loss.backward()
            opt.step()
            record = {"step": step, "reward_mean": float(rewards.mean()), "loss": float(loss.detach()),
                      "entropy_mean": float(metrics["entropy_mean"]), "ratio_max": float(metrics["ratio_max"])}
            records.append(record)
            log.write(json.dumps(record) + "\n")
    tmp = out / "policy.pt.tmp"
    torch.save(policy.state_dict(), tmp)
    os.replace(tmp, out / "policy.pt")
    return records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path("runs/kernels-loop"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    records = train(args.steps, args.out, seed=args.seed)
    first, last = records[0]["reward_mean"], records[-1]["reward_mean"]
    print(f"{args.steps} steps: reward {first:.3f} -> {last:.3f}; metrics in {args.out / 'metrics.jsonl'}")


if __name__ == "__main__":
    main()
