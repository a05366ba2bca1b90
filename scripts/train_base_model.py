"""Train the embedded base model: a miniature Stable Diffusion (AutoencoderKL + UNet2DConditionModel +
CLIPTextModel + CLIPTokenizer + DDIM scheduler) learned from scratch on the relation world.

    python scripts/train_base_model.py --out assets/base-model --seed 0 --minutes 60

Stages: render a pool of world scenes; train the VAE on them; encode the pool once; train UNet and text encoder
jointly on the latents with EMA, scoring held-out prompts with the world's scorer every --eval-every steps
(relation accuracy is what matters, not the loss). Writes the pipeline folder plus train_log.csv,
accuracy.csv, curves.png and TRAINING.md beside the weights.
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

from reversion_core.tokenizer_files import write_clip_tokenizer  # noqa: E402
from reversion_core.world.captions import full_caption, world_vocabulary  # noqa: E402
from reversion_core.world.dataset import held_out_pairs, random_scene  # noqa: E402
from reversion_core.world.relations import RELATION_NAMES, RELATIONS  # noqa: E402
from reversion_core.world.render import SIZE, Scene, render  # noqa: E402
from reversion_core.world.scorer import score  # noqa: E402

MAX_TOKENS = 32
# 16 latent channels at 8x8 (3x compression): 4 channels blurred the thin noses, strings and patterns away.
LATENT_CHANNELS = 16


def build_components(tok_dir: Path):
    write_clip_tokenizer(tok_dir, world_vocabulary(), model_max_length=MAX_TOKENS)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=128, intermediate_size=512, num_hidden_layers=3,
            num_attention_heads=4, max_position_embeddings=MAX_TOKENS, projection_dim=128,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        )
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS, sample_size=SIZE,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=16,
    )
    unet = UNet2DConditionModel(
        sample_size=SIZE // 4, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, layers_per_block=1,
        block_out_channels=(64, 128, 128),
        down_block_types=("CrossAttnDownBlock2D",) * 3, up_block_types=("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=128, attention_head_dim=4, norm_num_groups=32,
    )
    return tokenizer, text_encoder, vae, unet


def scheduler_config():
    return dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")


def render_pool(n: int, seed: int):
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng) for _ in range(n)]
    images = np.stack([render(s, seed=int(rng.integers(2**31))) for s in scenes])
    return images, scenes


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def train_vae(vae, images, steps, batch, lr, log):
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(1)
    t0 = time.time()
    for step in range(1, steps + 1):
        idx = torch.randint(len(images), (batch,), generator=g)
        x = to_tensor(images[idx.numpy()])
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=None)).sample
        kl = post.kl().mean()
        loss = F.mse_loss(rec, x) + 0.1 * F.l1_loss(rec, x) + 1e-6 * kl
        lr_now = lr * min(1.0, step / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        for gr in opt.param_groups:
            gr["lr"] = lr_now
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps:
            log(f"vae step {step}/{steps} loss {loss.item():.4f} kl {kl.item():.1f} {time.time() - t0:.0f}s")


@torch.no_grad()
def encode_pool(vae, images, batch=256):
    means, stds = [], []
    for i in range(0, len(images), batch):
        d = vae.encode(to_tensor(images[i : i + batch])).latent_dist
        means.append(d.mean)
        stds.append(d.std)
    return torch.cat(means), torch.cat(stds)


def tokenize(tokenizer, texts):
    return tokenizer(texts, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt").input_ids


def eval_prompts(per_relation: int, seed: int = 123):
    rng = np.random.default_rng(seed)
    out = []
    for r in RELATION_NAMES:
        pairs = held_out_pairs(r)
        for i in rng.permutation(len(pairs))[:per_relation]:
            a, b = pairs[i]
            out.append((r, a, b, full_caption(Scene(r, a, b), 2)))
    return out


@torch.no_grad()
def evaluate(pipe, prompts, steps, guidance, seed=0, batch=64):
    results = []
    for i in range(0, len(prompts), batch):
        chunk = prompts[i : i + batch]
        g = torch.Generator().manual_seed(seed + i)
        imgs = pipe([p[3] for p in chunk], num_inference_steps=steps, guidance_scale=guidance, generator=g,
                    output_type="np", height=SIZE, width=SIZE).images
        for (r, a, b, _), img in zip(chunk, imgs):
            s = score(img, r, a, b)
            results.append((r, s.relation_ok, s.entities_ok))
    per = {r: float(np.mean([ok for rr, ok, _ in results if rr == r])) for r in RELATION_NAMES}
    ent = float(np.mean([e for _, _, e in results]))
    return float(np.mean(list(per.values()))), ent, per


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="assets/base-model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pool", type=int, default=40000)
    p.add_argument("--vae-steps", type=int, default=1500)
    p.add_argument("--steps", type=int, default=20000, help="UNet steps at most; --minutes may stop earlier")
    p.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget for the UNet stage")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ema", type=float, default=0.998)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--eval-per-relation", type=int, default=8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--work", default="runs/base-model")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--vae-batch", type=int, default=32)
    p.add_argument("--init-from", default=None, help="continue from a saved pipeline folder (its VAE is kept as is)")
    p.add_argument("--step-offset", type=int, default=0, help="UNet steps already done by --init-from, for the logs")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    logf = open(work / "train.log", "a")

    def log(msg):
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        logf.write(line + "\n")
        logf.flush()

    log(f"args {vars(args)}")
    tokenizer, text_encoder, vae, unet = build_components(work / "tokenizer")
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    log(f"params unet {n(unet)/1e6:.2f}M vae {n(vae)/1e6:.2f}M text {n(text_encoder)/1e6:.2f}M vocab {len(tokenizer)}")

    t = time.time()
    images, scenes = render_pool(args.pool, args.seed)
    log(f"rendered {len(images)} scenes in {time.time() - t:.0f}s")

    vae_path = work / "vae"
    if args.init_from:
        init = Path(args.init_from)
        tokenizer = CLIPTokenizer.from_pretrained(init / "tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(init / "text_encoder")
        unet = UNet2DConditionModel.from_pretrained(init / "unet")
        vae = AutoencoderKL.from_pretrained(init / "vae")
        log(f"continuing from {init}")
    elif (vae_path / "config.json").exists():
        vae = AutoencoderKL.from_pretrained(vae_path)
        log("reusing trained VAE")
    else:
        train_vae(vae, images, args.vae_steps, args.vae_batch, 2e-3, log)
        vae.save_pretrained(vae_path)
    vae.eval().requires_grad_(False)
    means, stds = encode_pool(vae, images)
    scaling = float(vae.config.scaling_factor) if args.init_from else float(1.0 / means.std())
    vae.register_to_config(scaling_factor=scaling)
    log(f"latents {tuple(means.shape)} scaling_factor {scaling:.4f}")
    # Check the VAE preserves what the scorer reads: the base model can do no better than its decoder.
    with torch.no_grad():
        rec = vae.decode(means[:400]).sample
    rec = ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    ok = [score(r, s.relation, s.entity_a, s.entity_b) for r, s in zip(rec, scenes[:400])]
    log(f"VAE reconstructions: relation {np.mean([o.relation_ok for o in ok]):.3f} entities {np.mean([o.entities_ok for o in ok]):.3f}")

    # Levels 1-3 of the benchmark, plus level 2 without articles ("red circle above blue square"): the form of the
    # inference templates and of the app's entity boxes.
    captions = [[full_caption(s, lv) for s in scenes] for lv in (1, 2, 3)]
    captions.append([" ".join(w for w in c.split() if w != "a") for c in captions[1]])
    ids = torch.stack([tokenize(tokenizer, c) for c in captions], 1)
    empty = tokenize(tokenizer, [""])[0]
    sched = DDPMScheduler(**{k: v for k, v in scheduler_config().items() if k not in ("set_alpha_to_one", "steps_offset")})
    dev = torch.device(args.device)
    unet.to(dev).train()
    text_encoder.to(dev).train()
    vae.to(dev)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-2)
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
    ema_params = list(ema_unet.parameters()) + list(ema_text.parameters())
    prompts = eval_prompts(args.eval_per_relation)
    g = torch.Generator().manual_seed(args.seed + 1)
    level_p = torch.tensor([0.15, 0.3, 0.3, 0.25])
    train_log = open(work / "train_log.csv", "w", newline="")
    acc_log = open(work / "accuracy.csv", "w", newline="")
    tw, aw = csv.writer(train_log), csv.writer(acc_log)
    tw.writerow(["step", "loss", "lr", "seconds"])
    aw.writerow(["step", "relation_accuracy", "entity_accuracy"] + list(RELATION_NAMES))
    t0, step, loss_avg = time.time(), args.step_offset, None
    best = None

    def pipeline(u, te):
        return StableDiffusionPipeline(
            vae=vae, text_encoder=te, tokenizer=tokenizer, unet=u, scheduler=DDIMScheduler(**scheduler_config()),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )

    def run_eval():
        pipe = pipeline(ema_unet, ema_text).to(dev)
        pipe.set_progress_bar_config(disable=True)
        rel, ent, per = evaluate(pipe, prompts, steps=20, guidance=4.0)
        aw.writerow([step, f"{rel:.4f}", f"{ent:.4f}"] + [f"{per[r]:.3f}" for r in RELATION_NAMES])
        acc_log.flush()
        log(f"eval step {step}: relation {rel:.3f} entities {ent:.3f} " + " ".join(f"{r}={per[r]:.2f}" for r in RELATION_NAMES))
        return rel, ent

    while step - args.step_offset < args.steps and (time.time() - t0) < args.minutes * 60:
        step += 1
        idx = torch.randint(len(images), (args.batch,), generator=g)
        levels = torch.multinomial(level_p, args.batch, replacement=True, generator=g)
        tok = ids[idx, levels]
        drop = torch.rand(args.batch, generator=g) < 0.1
        tok[drop] = empty
        lat = (means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=g)) * scaling
        noise = torch.randn(lat.shape, generator=g)
        t = torch.randint(0, 1000, (args.batch,), generator=g)
        noisy = sched.add_noise(lat, noise, t)
        cond = text_encoder(tok.to(dev))[0]
        pred = unet(noisy.to(dev), t.to(dev), cond).sample
        loss = F.mse_loss(pred, noise.to(dev))
        warm = min(1.0, (step - args.step_offset) / 300)
        lr_now = args.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, (time.time() - t0) / (args.minutes * 60)))))
        for gr in opt.param_groups:
            gr["lr"] = lr_now
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            torch._foreach_lerp_(ema_params, params, 1 - decay)
        loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
        if step % 50 == 0:
            tw.writerow([step, f"{loss_avg:.5f}", f"{lr_now:.6f}", f"{time.time() - t0:.1f}"])
            train_log.flush()
        if step % 200 == 0:
            log(f"step {step} loss {loss_avg:.4f} lr {lr_now:.2e} {(time.time() - t0) / (step - args.step_offset):.3f}s/step")
        if step % args.eval_every == 0:
            run_eval()
            save(pipeline(ema_unet, ema_text), work / "latest", log)
    run_eval()
    final = pipeline(ema_unet.cpu(), ema_text.cpu())
    save(final, out, log)
    shutil.copy(work / "train_log.csv", out / "train_log.csv")
    shutil.copy(work / "accuracy.csv", out / "accuracy.csv")
    log(f"done: {step} UNet steps in {(time.time() - t0) / 60:.1f} min")


def save(pipe, folder: Path, log):
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    keep = [f for f in ("train_log.csv", "accuracy.csv", "curves.png", "TRAINING.md") if (folder / f).exists()]
    for f in keep:
        shutil.copy(folder / f, tmp / f)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    log(f"saved {folder}")


if __name__ == "__main__":
    main()
