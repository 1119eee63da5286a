"""Native generation engine over any transformers causal LM: batched sampling with a forkable KV cache.

Every sequence keeps the KV of all its tokens but the last (``_KV``: a chain of segments, each holding only
the tokens its sequence added, linked to its parent's chain, so forks share the prefix's memory as well as
its compute). A request feeds only what is not cached yet: the parent's last token plus the appended tokens
(a tool result is prefilled, nothing before it). One ``generate`` call works in two phases. First it
prefills each request's new tokens but the last (the request's *extension*; a prefill-only request's all),
in groups of similar length, longest first, so that padding at most doubles that work; each extension becomes
a KV segment of its row, which is also a ``fork_point`` request's fork point. Then it samples every row in
batches under ``token_budget``, each row feeding one token: rows are left-padded to a common cache width, the
new tokens of each row sit right after its own cache with pad slots between (masked in the 2D attention mask,
explicit per-row position ids), and decoding continues row-aligned until every row has stopped; a finished row
leaves the batch.

Sampling: temperature, then top-k and top-p filtering; the log-prob returned is the sampled token's under
that (filtered, renormalised) distribution; the entropy is the full-vocabulary entropy of the
temperature-scaled distribution, from ``arpo_kernels.logprob_entropy``. Stop strings are matched on the text
of each row's last few tokens after every step, so a tag split over several tokens is found; stop token ids
end a row at once. ``share_prefix=False`` turns caching off: every request re-prefills its whole history (the
baseline of an engine without prefix cache).
"""
from __future__ import annotations

import dataclasses
import inspect
import itertools

import torch

from arpo_kernels import logprob_entropy

from ..models import merged_weights

from .base import Request, Result, SamplingParams


@dataclasses.dataclass(eq=False)
class _KV:
    """KV of ``length`` tokens: the parent chain's, then this segment's ([kv_heads, n, head_dim] per layer)."""

    parent: _KV | None
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: int

    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        chain, node = [], self
        while node is not None:
            chain.append(node)
            node = node.parent
        chain = [n for n in reversed(chain) if n.keys and n.keys[0].shape[1] > 0]
        if not chain:
            return []
        return [(torch.cat([n.keys[i] for n in chain], 1), torch.cat([n.values[i] for n in chain], 1))
                for i in range(len(chain[0].keys))]


@dataclasses.dataclass(eq=False)
class _Seq:
    tokens: tuple[int, ...]
    kv: _KV | None  # covers tokens[:kv.length] (kv.length <= len(tokens) - 1); None = nothing cached


@dataclasses.dataclass(eq=False)
class _Row:
    """One request being served: what to feed, what has been generated."""

    request: Request
    history: tuple[int, ...]  # parent tokens + request tokens
    kv: _KV | None  # the parent's cache, then the segments this call adds (covers history[:cached])
    cached: int
    feed: list[int]  # tokens to prefill (history[cached:], minus the last one for prefill-only rows)
    generator: torch.Generator
    out: list[int] = dataclasses.field(default_factory=list)
    logprobs: list[float] = dataclasses.field(default_factory=list)
    entropies: list[float] = dataclasses.field(default_factory=list)
    finish: tuple[str, str | int | None] | None = None
    counts: tuple[int, int] = (0, 0)  # (prefilled, cached) as the request found them, for its Result
    fork_kv: _KV | None = None  # the KV of history[:-1] once extended (a fork point's)

    def extension(self) -> list[int]:
        """The tokens to prefill before sampling starts: all of a prefill-only row's, all but the last else."""
        return self.feed if self.finish is not None else self.feed[:-1]


class HFEngine:
    """Batched sampling over ``model`` (a transformers causal LM) with shared-prefix KV reuse.

    token_budget: tokens (cached + new, padding included) one forward batch may hold; a request alone over
                  the budget runs by itself. share_prefix: False = no KV reuse (benchmark baseline).
    """

    def __init__(self, model, tokenizer, *, token_budget: int = 65536, share_prefix: bool = True,
                 seed: int = 0):
        if token_budget < 1:
            raise ValueError(f"HFEngine: token_budget must be >= 1, got {token_budget}")
        sliding = [t for t in getattr(model.config, "layer_types", None) or [] if t != "full_attention"]
        if sliding or getattr(model.config, "use_sliding_window", False):
            raise ValueError(f"HFEngine: {type(model).__name__} uses sliding-window attention "
                             f"({sorted(set(sliding)) or 'use_sliding_window'}); its trimmed KV cache cannot be "
                             "forked here: use a full-attention config or the sglang engine")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.token_budget = token_budget
        self.share_prefix = share_prefix
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        self._seqs: dict[int, _Seq] = {}
        self._ids = itertools.count()
        self.device = next(model.parameters()).device  # every tensor of a batch lives here
        self._rng = torch.Generator(self.device).manual_seed(seed)
        self._cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self._pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    # ------------------------------------------------------------------------------------------ public API
    def tokens(self, handle: int) -> tuple[int, ...]:
        return self._seq(handle).tokens

    def release(self, handles: list[int]) -> None:
        for h in handles:
            self._seq(h)
            del self._seqs[h]

    def update_weights(self, model) -> None:
        """Use ``model``'s weights from now on; every cached KV is stale and dropped (histories stay)."""
        if model is not self.model:
            self._copy_weights(merged_weights(model))
        for seq in self._seqs.values():
            seq.kv = None

    @torch.no_grad()
    def _copy_weights(self, weights) -> None:
        """Copy ``(name, tensor)`` pairs (every one of the model's state-dict names, matching shapes) into the
        model, one at a time: a LoRA model's merged weights are made one tensor at a time and never all at once."""
        own, seen = self.model.state_dict(), set()
        for name, t in weights:
            if name not in own or own[name].shape != t.shape:
                got = "no such weight" if name not in own else f"shape {tuple(own[name].shape)}"
                raise ValueError(f"update_weights: {name} {tuple(t.shape)} does not fit the engine's model "
                                 f"({got})")
            own[name].copy_(t)
            seen.add(name)
        if seen != own.keys():
            raise ValueError(f"update_weights: missing weights {sorted(own.keys() - seen)[:5]}")

    @torch.no_grad()
    def generate(self, requests: list[Request]) -> list[Result]:
        rows = [self._row(i, r) for i, r in enumerate(requests)]
        for group in self._groups(rows):
            self._extend(group)
        for row in rows:
            row.fork_kv = row.kv
        for batch in self._batches(rows):
            self._run(batch)
        return [self._finish(row) for row in rows]

    # ------------------------------------------------------------------------------------------ set-up
    def _seq(self, handle: int) -> _Seq:
        try:
            return self._seqs[handle]
        except KeyError:
            raise KeyError(f"HFEngine: unknown or released sequence handle {handle}") from None

    def _row(self, index: int, req: Request) -> _Row:
        parent = self._seq(req.parent) if req.parent is not None else _Seq((), None)
        history = parent.tokens + tuple(req.tokens)
        if not history:
            raise ValueError(f"request {index}: no tokens and no parent: nothing to continue from")
        kv = parent.kv if self.share_prefix else None
        cached = kv.length if kv is not None else 0
        feed = list(history[cached:])
        if req.params.max_new_tokens == 0:
            feed = feed[:-1]  # a sequence caches all but its last token
        seed = req.params.seed
        gen = torch.Generator(self.device).manual_seed(seed) if seed is not None else self._rng
        row = _Row(req, history, kv, cached, feed, gen, counts=(len(feed), cached))
        if req.params.max_new_tokens == 0:
            row.finish = ("length", None)
        return row

    def _groups(self, rows: list[_Row]) -> list[list[_Row]]:
        """Rows with tokens to prefill before sampling, longest first, cut where a row's extension is under half
        the group's longest (so padding at most doubles the work) or the group would not fit ``token_budget``."""
        todo = sorted((r for r in rows if r.extension()), key=lambda r: -len(r.extension()))
        groups: list[list[_Row]] = []
        for row in todo:
            cur = groups[-1] if groups else [row]
            longest = len(cur[0].extension())
            size = (len(cur) + 1) * (max(r.cached for r in cur + [row]) + longest)
            if groups and 2 * len(row.extension()) >= longest and size <= self.token_budget:
                cur.append(row)
            else:
                groups.append([row])
        return groups

    def _batches(self, rows: list[_Row]) -> list[list[_Row]]:
        """Rows left to sample (one token to feed each), sorted by cache length and cut to fit ``token_budget``."""
        todo = sorted((r for r in rows if r.feed), key=lambda r: (r.cached, len(r.feed)))
        batches: list[list[_Row]] = []
        for row in todo:
            cur = batches[-1] if batches else None
            if cur is not None and _footprint(cur + [row]) <= self.token_budget:
                cur.append(row)
            else:
                batches.append([row])
        return batches

    # ------------------------------------------------------------------------------------------ forward
    def _forward(self, ids, mask, positions, cache):
        from transformers import DynamicCache

        if cache is None:
            cache = DynamicCache(config=self.model.config)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         logits_to_keep=1, **{self._cache_kw: cache})
        return out.logits[:, -1].float(), getattr(out, self._cache_kw)  # `cache` in transformers 5

    def _extend(self, group: list[_Row]) -> None:
        """Prefill each row's extension into a new KV segment of the row (kept for this call even when
        ``share_prefix`` is off); what is left to feed is the one token sampling starts from, or nothing."""
        tokens = [r.extension() for r in group]
        _, cache, mask = self._prefill(group, tokens)
        for b, (row, ext) in enumerate(zip(group, tokens)):
            self._append_segment(row, b, cache, mask)
            row.feed = row.feed[len(ext):]

    def _prefill(self, batch: list[_Row], feeds: list[list[int]]):
        """Left-padded caches + ``feeds`` (new tokens per row) → next-token logits [B, V], cache, mask [B, S]."""
        width = max(r.cached for r in batch)
        feed = max(len(f) for f in feeds)
        cache = self._batch_cache(batch, width)
        ids = torch.full((len(batch), feed), self._pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width + feed), dtype=torch.long)
        positions = torch.zeros((len(batch), feed), dtype=torch.long)
        for b, (r, f) in enumerate(zip(batch, feeds)):
            n = len(f)
            ids[b, feed - n:] = torch.tensor(f)
            mask[b, width - r.cached: width] = 1
            mask[b, width + feed - n:] = 1
            positions[b, feed - n:] = torch.arange(r.cached, r.cached + n)
        dev = self.device
        logits, cache = self._forward(ids.to(dev), mask.to(dev), positions.to(dev), cache)
        return logits, cache, mask

    def _batch_cache(self, batch: list[_Row], width: int):
        if width == 0:
            return None
        from transformers import DynamicCache

        per_row = [r.kv.layers() if r.kv is not None else None for r in batch]
        proto = next(layers for layers in per_row if layers)
        data = []
        for i, (k0, v0) in enumerate(proto):
            ks = k0.new_zeros((len(batch), k0.shape[0], width, k0.shape[2]))
            vs = v0.new_zeros((len(batch), v0.shape[0], width, v0.shape[2]))
            for b, layers in enumerate(per_row):
                if layers:
                    n = layers[i][0].shape[1]
                    ks[b, :, width - n:], vs[b, :, width - n:] = layers[i]
            data.append((ks, vs))
        return DynamicCache(ddp_cache_data=data, config=self.model.config)

    # ------------------------------------------------------------------------------------------ decoding
    def _run(self, rows: list[_Row]) -> None:
        logits, cache, mask = self._prefill(rows, [r.feed for r in rows])
        while rows:
            tokens = self._sample(rows, logits)
            done = [self._check_stop(r) for r in rows]
            if any(done):  # the cache holds every token fed so far: all but the one just sampled
                self._store(rows, cache, mask, done)
                keep = [b for b, d in enumerate(done) if not d]
                if not keep:
                    return
                cache.batch_select_indices(torch.tensor(keep, device=self.device))
                rows, mask, tokens = [rows[b] for b in keep], mask[keep], tokens[keep]
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], 1)
            logits, cache = self._forward(tokens[:, None], mask, _positions(rows).to(self.device), cache)

    def _sample(self, rows: list[_Row], logits: torch.Tensor) -> torch.Tensor:
        """Sample one token per row from logits [B, V]; record log-prob and entropy. Returns tokens [B]."""
        temps = torch.tensor([r.request.params.temperature for r in rows], device=logits.device)
        scaled = logits / temps[:, None]
        probs = torch.softmax(scaled, -1)
        for b, r in enumerate(rows):  # top-k / top-p only where asked
            if r.request.params.top_k > 0 or r.request.params.top_p < 1.0:
                probs[b] = _filtered_probs(scaled[b], r.request.params)
        tokens = torch.stack([torch.multinomial(probs[b], 1, generator=r.generator)[0]
                              for b, r in enumerate(rows)])
        full_lp, entropy = logprob_entropy(scaled, tokens)
        picked = probs.gather(1, tokens[:, None])[:, 0].log()
        filtered = torch.tensor([r.request.params.top_k > 0 or r.request.params.top_p < 1.0 for r in rows],
                                device=logits.device)
        logprobs = torch.where(filtered, picked, full_lp)
        for r, t, lp, h in zip(rows, tokens.tolist(), logprobs.tolist(), entropy.tolist()):  # one transfer each
            r.out.append(t)
            r.logprobs.append(lp)
            r.entropies.append(h)
        return tokens

    def _check_stop(self, row: _Row) -> bool:
        p = row.request.params
        last = row.out[-1]
        if last in p.stop_token_ids:
            row.finish = ("eos", last)
        elif p.stop:
            tail = self.tokenizer.decode(row.out[-_STOP_WINDOW:])
            hit = next((s for s in p.stop if s in tail), None)
            if hit is not None:
                row.finish = ("stop", hit)
        if row.finish is None and len(row.out) >= p.max_new_tokens:
            row.finish = ("length", None)
        return row.finish is not None

    def _store(self, rows: list[_Row], cache, mask: torch.Tensor, done: list[bool]) -> None:
        """Give each finished row the KV of the tokens it fed (copied out of the batch cache [B, h, S, d])."""
        if not self.share_prefix:
            return
        for b, (row, d) in enumerate(zip(rows, done)):
            if d:
                self._append_segment(row, b, cache, mask)

    @staticmethod
    def _append_segment(row: _Row, b: int, cache, mask: torch.Tensor) -> None:
        """Chain the KV of what row ``b`` of the batch fed after its own cache (copied out of [B, h, S, d])."""
        fed = mask[b].nonzero()[row.cached:, 0]
        keys = [layer.keys[b].index_select(1, fed) for layer in cache.layers]
        values = [layer.values[b].index_select(1, fed) for layer in cache.layers]
        row.kv = _KV(row.kv, keys, values, row.cached + len(fed))
        row.cached += len(fed)

    def _finish(self, row: _Row) -> Result:
        handle = next(self._ids)
        self._seqs[handle] = _Seq(row.history + tuple(row.out), row.kv if self.share_prefix else None)
        fork = None
        if row.request.fork_point:
            fork = next(self._ids)
            self._seqs[fork] = _Seq(row.history, row.fork_kv if self.share_prefix else None)
        return Result(handle, tuple(row.out), tuple(row.logprobs), tuple(row.entropies), row.finish[0],
                      row.finish[1], *row.counts, fork)


_STOP_WINDOW = 16  # tokens decoded to look for a stop string (tags are a few tokens long at most)


def _footprint(batch: list[_Row]) -> int:
    width = max(r.cached for r in batch)
    new = max(len(r.feed) + r.request.params.max_new_tokens for r in batch)
    return len(batch) * (width + new)


def _filtered_probs(scaled: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """Sampling distribution [V] after top-k and top-p filtering of temperature-scaled logits [V]."""
    logits = scaled
    if p.top_k > 0 and p.top_k < logits.numel():
        kth = torch.topk(logits, p.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, -1)
    if p.top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        outside = sorted_p.cumsum(0) - sorted_p >= p.top_p  # keep the smallest prefix reaching top_p
        probs = probs.scatter(0, order[outside], 0.0)
        probs = probs / probs.sum()
    return probs


def _positions(rows: list[_Row]) -> torch.Tensor:
    """Position id of each row's newest token (its history length before it + generated so far - 1)."""
    return torch.tensor([[len(r.history) + len(r.out) - 1] for r in rows])


