#!/usr/bin/env python3
"""PyTorch's CPU attention on bench_attention's shapes, for its `--peer FILE` table.

Times, per (S, D): dense SDPA forward and forward+backward, and FlexAttention (compiled) with
a block mask of the requested sparsity (each (head, query block) keeps the same number of key
blocks, drawn at random), forward and, where PyTorch has one on this device, backward. Writes
JSON rows keyed like bench_attention's (seq, head_dim, sparsity, block).

    python3 -m venv .venv-peer
    .venv-peer/bin/pip install torch numpy
    .venv-peer/bin/python scripts/peer/attention.py --seq 4096,8192,16384 --head-dims 64,128 \
        --heads 8 --sparsity 0.9 --block 128 --threads 2 --out out/peer_attention.json
"""
import argparse
import json
import os
import statistics
import time

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # CPU timings; no driver probing
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def timed(fn, repeats):
    """Median seconds of `repeats` calls after one warm-up (which also compiles)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def block_keep(heads, blocks_q, blocks_k, keep, seed):
    """[heads, blocks_q, blocks_k] bool: `keep` random key blocks per (head, query block)."""
    gen = torch.Generator().manual_seed(seed)
    scores = torch.rand(heads, blocks_q, blocks_k, generator=gen)
    chosen = scores.topk(keep, dim=-1).indices
    mask = torch.zeros(heads, blocks_q, blocks_k, dtype=torch.bool)
    mask.scatter_(-1, chosen, True)
    return mask


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seq", default="4096,8192,16384")
    p.add_argument("--head-dims", default="64,128")
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--sparsity", default="0.9")
    p.add_argument("--block", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="out/peer_attention.json")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    rows = []
    for d in [int(x) for x in a.head_dims.split(",")]:
        for s in [int(x) for x in a.seq.split(",")]:
            # A fresh compile per shape: reusing one lets dynamo turn the shapes dynamic after
            # the second, whose kernels run two orders of magnitude slower on CPU.
            torch._dynamo.reset()
            flex = torch.compile(flex_attention, dynamic=False)
            q, k, v, w = (torch.randn(1, a.heads, s, d) for _ in range(4))
            qa, ka, va = (x.clone().requires_grad_() for x in (q, k, v))

            def dense_fwd():
                with torch.no_grad():
                    F.scaled_dot_product_attention(q, k, v)

            def dense_fb():
                (F.scaled_dot_product_attention(qa, ka, va) * w).sum().backward()

            sdpa_fwd = timed(dense_fwd, a.repeats)
            sdpa_fb = timed(dense_fb, a.repeats)
            for sparsity in [float(x) for x in a.sparsity.split(",")]:
                blocks = -(-s // a.block)
                keep = max(1, round((1 - sparsity) * blocks))
                table = block_keep(a.heads, blocks, blocks, keep, seed=s + d)

                def mask_mod(b, h, q_idx, kv_idx):
                    return table[h, q_idx // a.block, kv_idx // a.block]

                mask = create_block_mask(
                    mask_mod, 1, a.heads, s, s, device="cpu", BLOCK_SIZE=a.block
                )

                def flex_fwd():
                    with torch.no_grad():
                        flex(q, k, v, block_mask=mask)

                def flex_fb():
                    (flex(qa, ka, va, block_mask=mask) * w).sum().backward()

                flex_fwd_s = timed(flex_fwd, a.repeats)
                try:
                    flex_fb_s = timed(flex_fb, a.repeats)
                    flex_fb_error = None
                except Exception as e:  # PyTorch has no FlexAttention backward on CPU
                    flex_fb_s, flex_fb_error = None, str(e).splitlines()[0][:200]
                row = {
                    "seq": s, "head_dim": d, "heads": a.heads, "sparsity": sparsity,
                    "block": a.block, "kept_blocks": keep, "blocks": blocks,
                    "sdpa_fwd_s": sdpa_fwd, "sdpa_fwd_bwd_s": sdpa_fb,
                    "flex_fwd_s": flex_fwd_s, "flex_fwd_bwd_s": flex_fb_s,
                    "flex_fwd_bwd_error": flex_fb_error,
                }
                print(json.dumps(row), flush=True)
                rows.append(row)
    report = {
        "torch": torch.__version__, "threads": a.threads, "repeats": a.repeats, "rows": rows,
    }
    with open(a.out, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
