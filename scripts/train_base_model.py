"""Train the embedded base model: a miniature Stable Diffusion (AutoencoderKL + UNet2DConditionModel +
CLIPTextModel + CLIPTokenizer + DDIM scheduler) learned from scratch on the relation world.

    python scripts/train_base_model.py --stage text --out checkpoints/base-model-v2/text --seed 0
    python scripts/train_base_model.py --stage vae --out checkpoints/base-model-v2/vae --seed 0
    python scripts/train_base_model.py --stage unet --text-from checkpoints/base-model-v2/text \\
        --vae-from checkpoints/base-model-v2/vae --out checkpoints/base-model-v2/pipeline --minutes 60

Stages (each continuable with --init-from, a folder holding that stage's output):
- text: masked-word prediction over the caption language (reversion_core/world/language.py), the encoder's layers
  run without the causal mask and the output tied to the input embedding table, so words that fill the same slot
  (the 56 basis prepositions) come to share a region of the table: the preposition prior the steering loss needs.
- vae: the autoencoder on rendered scenes, with an edge term that keeps shapes' corners.
- unet: the UNet (and the text encoder's layers; the input embedding table stays frozen, so the prior stays as the
  text stage left it) on the latents of a rendered pool, with EMA, scoring held-out prompts with the world's scorer
  every --eval-every steps and saving the pipeline every --save-minutes.
Each stage writes its folder plus train.log; the unet stage also train_log.csv and accuracy.csv.
"""
from __future__ import annotations

import argparse
import copy
import csv
import hashlib
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
from transformers import CLIPTextModel, CLIPTokenizer  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from reversion_core.architecture import (  # noqa: E402
    MAX_TOKENS, build_text_encoder, build_tokenizer, build_unet, build_vae, scheduler_config,
)
from reversion_core.prior import preposition_prior  # noqa: E402
from reversion_core.world.dataset import random_scene  # noqa: E402
from reversion_core.world.entities import COLOURS, PATTERNS, SHAPES  # noqa: E402
from reversion_core.world.language import training_caption  # noqa: E402
from reversion_core.world.prompt_accuracy import eval_prompts, evaluate  # noqa: E402
from reversion_core.world.relations import RELATION_NAMES, RELATIONS  # noqa: E402
from reversion_core.world.render import Scene, render_many  # noqa: E402
from reversion_core.world.scorer import score  # noqa: E402

CAPTIONS_PER_SCENE = 6
ENTITY_WORDS = list(COLOURS) + list(SHAPES) + list(PATTERNS)


def relation_list(text: str | None) -> tuple[str, ...]:
    names = tuple(RELATION_NAMES) if not text else tuple(t.strip() for t in text.split(","))
    unknown = [n for n in names if n not in RELATIONS]
    if unknown:
        raise SystemExit(f"unknown relations: {', '.join(unknown)}")
    return names


def random_scenes(n: int, rng: np.random.Generator, relations=RELATION_NAMES) -> list[Scene]:
    """``n`` training scenes, relations drawn uniformly from ``relations``."""
    return [random_scene(rng, relations[int(rng.integers(len(relations)))]) for _ in range(n)]


def render_pool(n: int, seed: int, relations=RELATION_NAMES, cache: Path | None = None, workers: int = 1):
    """``n`` scenes and their renders, deterministic for a seed whatever ``workers`` (processes) renders them. With
    ``cache`` (a folder), the images are kept there as .npy and read back by later runs with the same arguments
    (rendering is minutes on a busy CPU)."""
    rng = np.random.default_rng(seed)
    scenes = random_scenes(n, rng, relations)
    key = "-".join(str(RELATION_NAMES.index(r)) for r in relations)
    path = Path(cache) / f"pool-{n}-{seed}-{key}.npy" if cache else None
    if path is not None and path.exists():
        return np.load(path), scenes
    seeds = [int(rng.integers(2**31)) for _ in scenes]  # drawn in order, so the pool is the same for any workers
    images = render_many(scenes, seeds, workers)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path.with_suffix(".tmp.npy"), images)
        os.replace(path.with_suffix(".tmp.npy"), path)
    return images, scenes


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def tokenize(tokenizer, texts):
    return tokenizer(texts, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt").input_ids


def encode_captions(tokenizer, texts) -> torch.Tensor:
    """Token ids of caption-language texts, as ``tokenizer`` gives them, by table lookup: every caption word is one
    token, so BPE has nothing to do (and is slow over a pool's captions)."""
    vocab = tokenizer.get_vocab()
    ids = torch.full((len(texts), MAX_TOKENS), tokenizer.eos_token_id, dtype=torch.int32)
    ids[:, 0] = tokenizer.bos_token_id
    for i, t in enumerate(texts):
        toks = [vocab[w + "</w>"] for w in t.lower().replace(",", " ,").split()][: MAX_TOKENS - 2]
        ids[i, 1 : 1 + len(toks)] = torch.tensor(toks, dtype=torch.int32)
    return ids


class Logger:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(path, "a")

    def __call__(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        self.f.write(line + "\n")
        self.f.flush()


def save_folder(write, folder: Path) -> None:
    """Write into a temporary sibling with ``write(tmp)``, then rename it into place (never half-written)."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def copy_logs(args, folder: Path) -> None:
    """Put the run's logs beside its weights, so a committed checkpoint carries how it was made."""
    for f in ("train.log", "train_log.csv", "accuracy.csv"):
        if (Path(args.work) / f).exists():
            shutil.copy(Path(args.work) / f, folder / f)


def cosine_lr(base: float, progress: float, warm: float = 1.0, floor: float = 0.05) -> float:
    return base * warm * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


# ------------------------------------------------------------------------------------------------ text stage
def mlm_logits(text_encoder: CLIPTextModel, ids: torch.Tensor, masked: torch.Tensor, mask_vector: torch.Tensor, bias):
    """Logits at the masked positions: masked inputs replaced by ``mask_vector``, attention in both directions,
    output tied to the input embedding table."""
    table = text_encoder.get_input_embeddings().weight
    x = table[ids]
    x = torch.where(masked[..., None], mask_vector.expand_as(x), x)
    h = text_encoder.embeddings(inputs_embeds=x)
    h = text_encoder.encoder(inputs_embeds=h, attention_mask=None, is_causal=False).last_hidden_state
    h = text_encoder.final_layer_norm(h[masked])
    return h @ table.T + bias


def prior_line(text_encoder, tokenizer) -> str:
    f = preposition_prior(text_encoder.get_input_embeddings().weight.detach(), tokenizer, ENTITY_WORDS)
    return f"prior: separation {f.separation:.3f} (within {f.within:.3f}, to entities {f.to_entities:.3f}) 5-NN prepositions {f.neighbour_fraction:.3f}"


def train_text(args, log) -> None:
    out = Path(args.out)
    if args.init_from:
        tokenizer = CLIPTokenizer.from_pretrained(Path(args.init_from) / "tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(Path(args.init_from) / "text_encoder")
    else:
        tokenizer = build_tokenizer(Path(args.work) / "tokenizer")
        text_encoder = build_text_encoder(tokenizer)
    log(f"text encoder {sum(p.numel() for p in text_encoder.parameters()) / 1e6:.2f}M params, vocab {len(tokenizer)}")
    log(prior_line(text_encoder, tokenizer))
    width = text_encoder.config.hidden_size
    mask_vector = torch.nn.Parameter(torch.randn(width) * 0.02)
    bias = torch.nn.Parameter(torch.zeros(len(tokenizer)))
    params = list(text_encoder.parameters()) + [mask_vector, bias]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    rng = np.random.default_rng(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    pool = random_scenes(args.pool, rng, relation_list(args.relations))  # captions are drawn afresh at every step
    text_encoder.train()
    t0, avg = time.time(), None
    for step in range(1, args.text_steps + 1):
        scenes = [pool[i] for i in rng.integers(len(pool), size=args.batch)]
        ids = encode_captions(tokenizer, [training_caption(s, rng) for s in scenes]).long()
        ids = ids[:, : int((ids != tokenizer.eos_token_id).sum(1).max()) + 1]  # padding beyond the longest is wasted work
        real = (ids != tokenizer.eos_token_id) & (ids != tokenizer.bos_token_id)
        masked = real & (torch.rand(ids.shape, generator=g) < args.mask_rate)
        logits = mlm_logits(text_encoder, ids, masked, mask_vector, bias)
        loss = F.cross_entropy(logits, ids[masked])
        for gr in opt.param_groups:
            gr["lr"] = cosine_lr(args.lr, step / args.text_steps, min(1.0, step / 100))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        if step % 200 == 0 or step == args.text_steps:
            log(f"text step {step}/{args.text_steps} loss {avg:.4f} {time.time() - t0:.0f}s")
        if step % 500 == 0 or step == args.text_steps:
            log(prior_line(text_encoder, tokenizer))

    def write(tmp: Path) -> None:
        tokenizer.save_pretrained(tmp / "tokenizer")
        text_encoder.save_pretrained(tmp / "text_encoder", safe_serialization=True)
        copy_logs(args, tmp)

    save_folder(write, out)
    log(f"saved {out}")


# ------------------------------------------------------------------------------------------------- VAE stage
def edge_loss(rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 between the images' horizontal and vertical differences: a blurred corner costs here what it cannot in MSE."""
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    return F.l1_loss(dx(rec), dx(x)) + F.l1_loss(dy(rec), dy(x))


@torch.no_grad()
def vae_check(vae, n: int, seed: int, relations=RELATION_NAMES) -> tuple[float, float, dict]:
    """Decode the encoder's own latents (means) of ``n`` fresh renders; the scorer's relation and entity accuracy."""
    images, scenes = render_pool(n, seed, relations)
    rec = vae.decode(vae.encode(to_tensor(images)).latent_dist.mean).sample
    rec = ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    ok = [score(r, s.relation, s.entity_a, s.entity_b) for r, s in zip(rec, scenes)]
    per = {r: float(np.mean([o.relation_ok for o, s in zip(ok, scenes) if s.relation == r] or [float("nan")])) for r in relations}
    return float(np.mean([o.relation_ok for o in ok])), float(np.mean([o.entities_ok for o in ok])), per


def train_vae(args, log) -> None:
    out = Path(args.out)
    relations = relation_list(args.relations)
    vae = AutoencoderKL.from_pretrained(Path(args.init_from) / "vae") if args.init_from else build_vae()
    log(f"vae {sum(p.numel() for p in vae.parameters()) / 1e6:.2f}M params")
    t = time.time()
    images, _ = render_pool(args.pool, args.seed, relations, args.pool_cache)
    log(f"rendered {len(images)} scenes of {len(relations)} relations in {time.time() - t:.0f}s")
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(args.seed + 1)
    t0, avg = time.time(), None
    vae.train()
    for step in range(1, args.vae_steps + 1):
        idx = torch.randint(len(images), (args.vae_batch,), generator=g)
        x = to_tensor(images[idx.numpy()])
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=g)).sample
        kl = post.kl().mean()
        edge = edge_loss(rec, x)
        loss = F.mse_loss(rec, x) + 0.1 * F.l1_loss(rec, x) + args.edge_weight * edge + 1e-6 * kl
        warm = 1.0 if args.init_from else min(1.0, step / 100)
        for gr in opt.param_groups:
            gr["lr"] = cosine_lr(args.vae_lr, step / args.vae_steps, warm, floor=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        if step % 100 == 0 or step == args.vae_steps:
            log(f"vae step {step}/{args.vae_steps} loss {avg:.4f} edge {edge.item():.4f} kl {kl.item():.1f} {time.time() - t0:.0f}s")
        if step % args.vae_check_every == 0 or step == args.vae_steps:
            vae.eval()
            rel, ent, per = vae_check(vae, 400, 10_000 + args.seed, relation_list(None))
            vae.train()
            log(f"VAE reconstructions of 400 fresh renders at step {step}: relation {rel:.3f} entities {ent:.3f} "
                + " ".join(f"{r}={v:.2f}" for r, v in per.items()))
            save_folder(lambda tmp: (vae.save_pretrained(tmp / "vae", safe_serialization=True), copy_logs(args, tmp)), out)
    log(f"saved {out}")


# ------------------------------------------------------------------------------------------------ UNet stage
def encode_latents(vae, images: np.ndarray, vae_folder: Path, args) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE's latent means and standard deviations of the pool, kept in --pool-cache under the VAE weights' hash
    (encoding 30000 images is minutes on a busy CPU, and every continuation needs the same latents)."""
    weights = next(Path(vae_folder).glob("*.safetensors"))
    key = hashlib.sha1(weights.read_bytes()).hexdigest()[:12]
    path = Path(args.pool_cache) / f"latents-{args.pool}-{args.seed}-{key}.npz" if args.pool_cache else None
    if path is not None and path.exists():
        z = np.load(path)
        return torch.from_numpy(z["means"]), torch.from_numpy(z["stds"])
    means, stds = [], []
    with torch.no_grad():
        for i in range(0, len(images), 256):
            d = vae.encode(to_tensor(images[i : i + 256]).to(vae.device)).latent_dist
            means.append(d.mean.cpu())
            stds.append(d.std.cpu())
    means, stds = torch.cat(means), torch.cat(stds)
    if path is not None:
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, means=means.numpy(), stds=stds.numpy())
        os.replace(tmp, path)
    return means, stds


def caption_ids(tokenizer, scenes, seed: int) -> torch.Tensor:
    """``CAPTIONS_PER_SCENE`` training captions per scene, as token ids (scenes x captions x tokens)."""
    rng = np.random.default_rng(seed)
    texts = [training_caption(s, rng) for s in scenes for _ in range(CAPTIONS_PER_SCENE)]
    return encode_captions(tokenizer, texts).view(len(scenes), CAPTIONS_PER_SCENE, MAX_TOKENS)


def train_unet(args, log) -> None:
    out, work = Path(args.out), Path(args.work)
    src_text = Path(args.init_from or args.text_from)
    src_vae = Path(args.init_from or args.vae_from)
    tokenizer = CLIPTokenizer.from_pretrained(src_text / "tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(src_text / "text_encoder")
    vae = AutoencoderKL.from_pretrained(src_vae / "vae")
    unet = UNet2DConditionModel.from_pretrained(Path(args.init_from) / "unet") if args.init_from else build_unet()
    log(f"text from {src_text}, vae from {src_vae}, unet {'from ' + args.init_from if args.init_from else 'new'}; "
        f"unet {sum(p.numel() for p in unet.parameters()) / 1e6:.2f}M params")
    log(prior_line(text_encoder, tokenizer))
    vae.eval().requires_grad_(False)

    t = time.time()
    images, scenes = render_pool(args.pool, args.seed, relation_list(args.relations), args.pool_cache, args.workers)
    # The pool, its latents and every random draw stay on the CPU (the same stream on any device); the models move.
    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    vae.to(dev)
    means, stds = encode_latents(vae, images, src_vae / "vae", args)
    del images
    scaling = float(vae.config.scaling_factor) if args.init_from else float(1.0 / means.std())
    vae.register_to_config(scaling_factor=scaling)
    unet.to(dev)
    text_encoder.to(dev)
    ids = caption_ids(tokenizer, scenes, args.seed)
    log(f"pool of {len(scenes)} scenes rendered, encoded and captioned in {time.time() - t:.0f}s; latents "
        f"{tuple(means.shape)} scaling_factor {scaling:.4f}")
    empty = tokenize(tokenizer, [""])[0]

    sched = DDPMScheduler(**{k: v for k, v in scheduler_config().items() if k not in ("set_alpha_to_one", "steps_offset")})
    unet.train()
    text_encoder.train()
    # The input embedding table keeps the text stage's prior; the layers learn what the words should draw.
    text_encoder.get_input_embeddings().weight.requires_grad_(args.text_train == "all")
    if args.text_train == "none":
        text_encoder.requires_grad_(False)
    params = [p for p in list(unet.parameters()) + list(text_encoder.parameters()) if p.requires_grad]
    table = text_encoder.get_input_embeddings().weight
    groups = [{"params": [p for p in params if p is not table], "mult": 1.0}]
    if table.requires_grad:  # --text-train all: the table may learn faster than the layers (--embed-lr-mult)
        groups.append({"params": [table], "mult": args.embed_lr_mult})
    opt = torch.optim.AdamW(groups, lr=args.lr, weight_decay=1e-2)
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
    pairs = [(pe, p) for pe, p in zip(list(ema_unet.parameters()) + list(ema_text.parameters()),
                                      list(unet.parameters()) + list(text_encoder.parameters())) if p.requires_grad]
    ema_params, live_params = [a for a, _ in pairs], [b for _, b in pairs]
    prompts = eval_prompts(args.eval_per_relation)
    g = torch.Generator().manual_seed(args.seed + 1)
    work.mkdir(parents=True, exist_ok=True)
    new_logs = not (work / "train_log.csv").exists()
    train_log = open(work / "train_log.csv", "w" if new_logs else "a", newline="")
    acc_log = open(work / "accuracy.csv", "w" if new_logs else "a", newline="")
    tw, aw = csv.writer(train_log), csv.writer(acc_log)
    if new_logs:
        tw.writerow(["step", "loss", "lr", "seconds"])
        aw.writerow(["step", "relation_accuracy_named", "entity_accuracy_named"] + list(RELATION_NAMES))
    t0, step, loss_avg = time.time(), args.step_offset, None
    last_save = time.time()
    budget = args.minutes * 60

    def pipeline(u, te):
        return StableDiffusionPipeline(
            vae=vae, text_encoder=te, tokenizer=tokenizer, unet=u, scheduler=DDIMScheduler(**scheduler_config()),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )

    def run_eval():
        pipe = pipeline(ema_unet, ema_text)
        pipe.set_progress_bar_config(disable=True)
        te = time.time()
        rel, ent, per = evaluate(pipe, prompts, steps=20, guidance=4.0)
        aw.writerow([step, f"{rel:.4f}", f"{ent:.4f}"] + [f"{per.get(r, float('nan')):.3f}" for r in RELATION_NAMES])
        acc_log.flush()
        log(f"eval step {step}: named relations {rel:.3f} entities {ent:.3f} | " + " ".join(f"{r}={v:.2f}" for r, v in per.items())
            + f" ({time.time() - te:.0f}s)")

    def checkpoint():
        def write(tmp: Path) -> None:
            unet16 = copy.deepcopy(ema_unet).half()  # fp16 keeps the folder small; it loads in fp32
            pipeline(unet16, ema_text).save_pretrained(tmp, safe_serialization=True)
            copy_logs(args, tmp)

        train_log.flush()
        log(f"saving {out} at step {step}")  # before the copy, so the checkpoint's own log names its step
        save_folder(write, out)
        log(f"saved {out} at step {step}")
        log(prior_line(ema_text, tokenizer))  # the prior's bars are checked at every save

    while step - args.step_offset < args.steps and (time.time() - t0) < budget:
        step += 1
        idx = torch.randint(len(scenes), (args.batch,), generator=g)
        which = torch.randint(CAPTIONS_PER_SCENE, (args.batch,), generator=g)
        tok = ids[idx, which].long()
        drop = torch.rand(args.batch, generator=g) < 0.1
        tok[drop] = empty
        lat = (means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=g)) * scaling
        noise = torch.randn(lat.shape, generator=g)
        tt = torch.randint(0, 1000, (args.batch,), generator=g)
        lat, noise, tt, tok = lat.to(dev), noise.to(dev), tt.to(dev), tok.to(dev)
        noisy = sched.add_noise(lat, noise, tt)
        cond = text_encoder(tok)[0]
        pred = unet(noisy, tt, cond).sample
        loss = F.mse_loss(pred, noise)
        warm = min(1.0, (step - args.step_offset) / 300)
        lr_now = cosine_lr(args.lr, (time.time() - t0) / budget, warm)
        for gr in opt.param_groups:
            gr["lr"] = lr_now * gr["mult"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            torch._foreach_lerp_(ema_params, live_params, 1 - decay)
            # a running mean kept on the device: reading it every step would stall a GPU on each one
            loss_avg = loss.detach().clone() if loss_avg is None else loss_avg.lerp_(loss.detach(), 0.02)
        if step % 50 == 0:
            tw.writerow([step, f"{loss_avg.item():.5f}", f"{lr_now:.6f}", f"{time.time() - t0:.1f}"])
        if step % 200 == 0:
            log(f"step {step} loss {loss_avg.item():.4f} lr {lr_now:.2e} "
                f"{(time.time() - t0) / (step - args.step_offset):.3f}s/step")
        if step % args.eval_every == 0:
            run_eval()
        if time.time() - last_save > args.save_minutes * 60:
            checkpoint()
            last_save = time.time()
    run_eval()
    checkpoint()
    log(f"done: {step - args.step_offset} UNet steps (to step {step}) in {(time.time() - t0) / 60:.1f} min")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=("text", "vae", "unet", "pool"), required=True, help="pool: only render --pool into --pool-cache")
    p.add_argument("--out", required=True, help="the stage's output folder (replaced atomically at each save)")
    p.add_argument("--work", default=None, help="logs and scratch (default: runs/<last two parts of --out>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init-from", default=None, help="continue this stage from a folder it wrote")
    p.add_argument("--relations", default=None, help="comma-separated relations for the pool (default: all)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--workers", type=int, default=1, help="processes rendering the pool (the pool is the same for any)")
    p.add_argument("--device", default="cpu", help="unet stage: cpu or cuda (the heavy stage, where a GPU is lent)")
    t = p.add_argument_group("text stage")
    t.add_argument("--text-steps", type=int, default=3000)
    t.add_argument("--mask-rate", type=float, default=0.25)
    v = p.add_argument_group("vae stage")
    v.add_argument("--vae-steps", type=int, default=3000)
    v.add_argument("--vae-batch", type=int, default=24)
    v.add_argument("--vae-lr", type=float, default=2e-3)
    v.add_argument("--edge-weight", type=float, default=0.5, help="weight of the edge (image-gradient L1) term")
    v.add_argument("--vae-check-every", type=int, default=500)
    u = p.add_argument_group("unet stage")
    u.add_argument("--text-from", default=None, help="the text stage's folder")
    u.add_argument("--vae-from", default=None, help="the vae stage's folder")
    u.add_argument("--text-train", choices=("layers", "all", "none"), default="layers",
                   help="which text-encoder weights the UNet stage trains (layers: all but the input embedding table)")
    u.add_argument("--embed-lr-mult", type=float, default=1.0,
                   help="with --text-train all: the input embedding table's learning rate as a multiple of --lr")
    u.add_argument("--step-offset", type=int, default=0, help="UNet steps already done by --init-from")
    u.add_argument("--steps", type=int, default=100000, help="UNet steps at most; --minutes may stop earlier")
    u.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget of this run (sets the cosine LR)")
    u.add_argument("--save-minutes", type=float, default=12.0)
    u.add_argument("--ema", type=float, default=0.998)
    u.add_argument("--eval-every", type=int, default=1000)
    u.add_argument("--eval-per-relation", type=int, default=8)
    p.add_argument("--pool", type=int, default=30000)
    p.add_argument("--pool-cache", default="runs/pool-cache", help="folder keeping rendered pools between runs ('' for none)")
    p.add_argument("--batch", type=int, default=None, help="text stage 256, unet stage 64")
    p.add_argument("--lr", type=float, default=None, help="text stage 2e-3, unet stage 1e-3")
    args = p.parse_args(argv)
    if args.device != "cpu" and args.stage != "unet":
        p.error("--device applies to the unet stage only")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: no CUDA GPU is visible to torch on this machine")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.batch = args.batch or (256 if args.stage == "text" else 64)
    args.lr = args.lr or (2e-3 if args.stage == "text" else 1e-3)
    args.work = args.work or str(Path("runs") / "-".join(Path(args.out).parts[-2:]))
    if args.stage == "unet" and not args.init_from and not (args.text_from and args.vae_from):
        p.error("the unet stage needs --text-from and --vae-from, or --init-from")
    hf_logging.disable_progress_bar()
    torch.manual_seed(args.seed)
    if args.init_from and (Path(args.init_from) / "train.log").exists() and not (Path(args.work) / "train.log").exists():
        Path(args.work).mkdir(parents=True, exist_ok=True)
        copy_logs(argparse.Namespace(work=args.init_from), Path(args.work))  # a continuation's logs extend its source's
    log = Logger(Path(args.work) / "train.log")
    log(f"args {vars(args)}")
    if args.stage == "pool":
        render_pool(args.pool, args.seed, relation_list(args.relations), args.pool_cache or None)
        log(f"pool of {args.pool} scenes (seed {args.seed}) in {args.pool_cache}")
        return
    {"text": train_text, "vae": train_vae, "unet": train_unet}[args.stage](args, log)


if __name__ == "__main__":
    main()
