"""Metrics for Stable Diffusion runs, where no renderer knows the truth (paper, appendix A.3).

- Entity score: the CLIP score, cosine similarity between the image and the text "E_A, E_B" (entities only).
- Relation score: the share of images a relation classifier assigns to the exemplars' relation. The paper feeds
  PSGFormer features to linear SVMs; PSGFormer is not packaged, so the classifier is pluggable and the one
  provided is a linear probe on CLIP image features, trained on images the user labels (for example the official
  benchmark's exemplar folders, one folder per relation).

The CLIP model is any transformers ``CLIPModel`` folder or hub id (default ``openai/clip-vit-large-patch14``);
nothing is downloaded when the weights are missing, the error says how to provide them.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Protocol, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from .errors import ReVersionError
from .exemplars import IMAGE_EXTENSIONS, open_image

DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"
PROBE_FORMAT = "reversion-relation-probe/1"


def clip_on_disk(model: str | os.PathLike = DEFAULT_CLIP_MODEL) -> bool:
    """Is this CLIP model a local folder, or a hub id already in the Hugging Face cache (nothing is downloaded)?"""
    if Path(model).expanduser().is_dir():
        return True
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(str(model), "config.json"), str)
    except Exception:  # not a hub id either (a path that does not exist)
        return False


class RelationClassifier(Protocol):
    """Anything that names the relation shown in each image (one of ``labels``)."""

    labels: list[str]

    def predict(self, images: Sequence[Image.Image]) -> list[str]: ...


def entity_text(entity_a: str, entity_b: str) -> str:
    """The revised prompt the entity score compares against: ``"E_A, E_B"``."""
    return f"{entity_a.strip()}, {entity_b.strip()}"


class ClipFeatures:
    """A CLIP model and its processor: unit-length image and text features, and the CLIP score."""

    def __init__(
        self, model: str | os.PathLike = DEFAULT_CLIP_MODEL, device: str | torch.device = "cpu", batch_size: int = 32,
        local_files_only: bool = False,
    ) -> None:
        """``local_files_only``: never download (a training's validation uses CLIP only when it is on disk)."""
        from transformers import CLIPModel, CLIPProcessor

        self.model_id, self.device, self.batch_size = str(model), torch.device(device), int(batch_size)
        offline = local_files_only or Path(model).expanduser().is_dir() or os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        try:
            self.model = CLIPModel.from_pretrained(str(model), local_files_only=offline).to(self.device).eval()
            self.processor = CLIPProcessor.from_pretrained(str(model), local_files_only=offline)
        except (OSError, ValueError) as exc:
            raise ReVersionError(
                f"The CLIP model {str(model)!r} could not be loaded ({str(exc).splitlines()[0][:160]}); download it where "
                "there is network access and pass its local folder with --clip-model (in the app, or its variable "
                "REVERSION_CLIP_MODEL)."
            ) from None

    @torch.no_grad()
    def image_features(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """[N, D] unit-length image embeddings (fp32, CPU)."""
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = [image.convert("RGB") for image in images[start : start + self.batch_size]]
            pixels = self.processor(images=chunk, return_tensors="pt")["pixel_values"].to(self.device)
            out.append(_as_tensor(self.model.get_image_features(pixel_values=pixels)).float().cpu())
        return F.normalize(torch.cat(out), dim=-1) if out else torch.empty(0)

    @torch.no_grad()
    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """[N, D] unit-length text embeddings (fp32, CPU)."""
        out = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.processor(text=list(texts[start : start + self.batch_size]), return_tensors="pt", padding=True, truncation=True)
            tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
            out.append(_as_tensor(self.model.get_text_features(**tokens)).float().cpu())
        return F.normalize(torch.cat(out), dim=-1) if out else torch.empty(0)

    def clip_score(self, images: Sequence[Image.Image], texts: Sequence[str]) -> list[float]:
        """Cosine similarity of each image with its text (the paper's CLIP score, not scaled by 100)."""
        if len(images) != len(texts):
            raise ReVersionError(f"The CLIP score needs one text per image; got {len(images)} images and {len(texts)} texts.")
        return (self.image_features(images) * self.text_features(texts)).sum(-1).tolist()

    def entity_scores(self, images: Sequence[Image.Image], pairs: Sequence[tuple[str, str]]) -> list[float]:
        """The entity score of each image: its CLIP score with ``"E_A, E_B"``."""
        return self.clip_score(images, [entity_text(a, b) for a, b in pairs])


def _as_tensor(output) -> torch.Tensor:
    """``get_*_features`` return a tensor in transformers 4 and a model output (pooled embeddings) in newer ones."""
    if isinstance(output, torch.Tensor):
        return output
    for name in ("pooler_output", "image_embeds", "text_embeds"):
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return value
    raise ReVersionError("The CLIP model returned features in a form this version does not understand.")


class LinearProbe:
    """A linear classifier (multinomial logistic regression) on unit-length CLIP image features."""

    def __init__(self, labels: Sequence[str], weight: torch.Tensor, bias: torch.Tensor) -> None:
        self.labels = list(labels)
        self.weight, self.bias = weight.float(), bias.float()

    @classmethod
    def fit(
        cls, features: torch.Tensor, labels: Sequence[str], epochs: int = 300, lr: float = 0.1, weight_decay: float = 1e-3, seed: int = 0
    ) -> "LinearProbe":
        """Train on ``features`` [N, D] with one label per row; full-batch AdamW, deterministic for a seed."""
        names = sorted(set(labels))
        if len(names) < 2:
            raise ReVersionError("A relation classifier needs labelled images of at least two relations.")
        if len(features) != len(labels):
            raise ReVersionError(f"Got {len(features)} feature rows but {len(labels)} labels.")
        x = F.normalize(features.float(), dim=-1)
        y = torch.tensor([names.index(label) for label in labels])
        generator = torch.Generator().manual_seed(seed)
        weight = (torch.randn(len(names), x.shape[1], generator=generator) * 0.01).requires_grad_(True)
        bias = torch.zeros(len(names), requires_grad=True)
        optimizer = torch.optim.AdamW([weight, bias], lr=lr, weight_decay=weight_decay)
        # CLIP cosine similarities span a small range; a fixed logit scale (as CLIP's own) lets the probe fit quickly.
        for _ in range(int(epochs)):
            optimizer.zero_grad()
            loss = F.cross_entropy(100.0 * x @ weight.T + bias, y)
            loss.backward()
            optimizer.step()
        return cls(names, weight.detach(), bias.detach())

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return 100.0 * F.normalize(features.float(), dim=-1) @ self.weight.T + self.bias

    def predict_features(self, features: torch.Tensor) -> list[str]:
        return [self.labels[i] for i in self.logits(features).argmax(-1).tolist()]

    def save(self, path: str | os.PathLike) -> Path:
        """Write the probe as ``.safetensors`` (weights) with its labels in the metadata."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"weight": self.weight.contiguous(), "bias": self.bias.contiguous()}, str(path),
                  metadata={"format": PROBE_FORMAT, "labels": json.dumps(self.labels)})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LinearProbe":
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise ReVersionError(f"Relation probe {path} does not exist.")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                weight, bias = f.get_tensor("weight"), f.get_tensor("bias")
        except Exception:
            raise ReVersionError(f"{path.name} is not a readable relation probe (.safetensors).") from None
        if meta.get("format") != PROBE_FORMAT:
            raise ReVersionError(f"{path.name} is not a relation probe of this project.")
        return cls(json.loads(meta["labels"]), weight, bias)


class ClipProbeClassifier:
    """The pluggable relation classifier provided: CLIP image features -> :class:`LinearProbe`."""

    def __init__(self, clip: ClipFeatures, probe: LinearProbe) -> None:
        self.clip, self.probe = clip, probe
        self.labels = probe.labels

    def predict(self, images: Sequence[Image.Image]) -> list[str]:
        return self.probe.predict_features(self.clip.image_features(images))


def labelled_images(folder: str | os.PathLike) -> tuple[list[Image.Image], list[str]]:
    """Images from ``folder/<relation>/`` (any depth), labelled by the first folder level: the official benchmark's layout."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReVersionError(f"Labelled image folder {folder} does not exist.")
    images, labels = [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(sub.rglob("*")):
            if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
                images.append(open_image(path, max_side=512))
                labels.append(sub.name)
    if not images:
        raise ReVersionError(f"Folder {folder} holds no labelled images; put each relation's images in a subfolder named after it.")
    return images, labels


def train_relation_probe(clip: ClipFeatures, images: Sequence[Image.Image], labels: Sequence[str], **fit_kwargs) -> LinearProbe:
    """Fit a linear probe on the CLIP features of labelled images."""
    return LinearProbe.fit(clip.image_features(images), labels, **fit_kwargs)
