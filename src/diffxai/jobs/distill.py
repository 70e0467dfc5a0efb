"""Job ``distill``: TIME's token distillation (thesis §5.3.2) → ``results/{dataset}/tokens/{name}/``.

1. Context tokens ``<context_k>`` (k < n_tokens) on training images with "a <context> picture".
2. For every class c, tokens ``<class{c}_k>`` on the training images the classifier *predicts*
   as c, with "a <context> image with a <class c>". The classifier is queried for
   probabilities only, through the black box (counted). Where it predicts fewer than
   ``min_class_images`` images as c (a weak or one-sided classifier), the images of highest
   probability of c are taken up to that many, and the record says so.

Writes ``tokens.safetensors`` ({token: embedding (D,)}) and ``tokens.json`` (the token names of
the context and of each class, images per concept, losses, classifier queries, provenance).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from diffxai.data.prepared import PreparedData
from diffxai.jobs.common import write_json
from diffxai.methods.time import Concepts
from diffxai.models.blackbox import BlackBox
from diffxai.models.io import load_model
from diffxai.models.t2i import TextToImage
from diffxai.provenance import provenance
from diffxai.training.supervised import to_m11
from diffxai.training.textual_inversion import learn_concept

log = logging.getLogger(__name__)
MODULES = ["diffxai.jobs.distill"]
TOKENS = "tokens.safetensors"
INDEX = "tokens.json"


def concept_names(n_tokens: int, num_classes: int) -> tuple[list[str], dict[int, list[str]]]:
    """Token strings of the context and of each class."""
    context = [f"<context_{k}>" for k in range(n_tokens)]
    return context, {c: [f"<class{c}_{k}>" for k in range(n_tokens)] for c in range(num_classes)}


def context_prompt(context: list[str]) -> str:
    return f"a {' '.join(context)} picture"


def check_prompts_fit(t2i: TextToImage, concepts: Concepts, t2i_name: str) -> None:
    """Refuse, before any training, prompts that the text encoder cannot read whole: longer than
    it reads (the tokens cut off would get no gradient and be saved at their initial embedding),
    or with words outside the vocabulary (an untrained row beside the learned tokens). Checks the
    distillation's prompts and TIME's without the context token."""
    prompts = [context_prompt(concepts.context)] + [
        concepts.prompt(cls, with_context) for cls in concepts.classes for with_context in (True, False)
    ]
    new_tokens = [*concepts.context, *(token for tokens in concepts.classes.values() for token in tokens)]
    t2i.check_fits(prompts, f"models.{t2i_name}.network.max_length", new_tokens)
    unknown = t2i.unknown_words(prompts, new_tokens)
    if unknown:
        raise ValueError(
            f"models.{t2i_name}.captions.templates: TIME's prompts use words the t2i model's "
            f"vocabulary lacks: {unknown} (its vocabulary is built from the training captions); "
            f"allowed: templates whose phrasings contain them, e.g. 'an image with {{}}' and "
            f"'a picture of {{}}'"
        )


@torch.no_grad()
def class_probabilities(blackbox: BlackBox, images_m11: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """The black box's probabilities (N, K) of images (N, C, H, W) in [-1, 1]."""
    return torch.cat([blackbox(chunk) for chunk in images_m11.split(batch_size)])


def class_images(probabilities: torch.Tensor, cls: int, min_images: int) -> tuple[torch.Tensor, str]:
    """Indices (M,) of the images (rows of probabilities (N, K)) that class ``cls``'s tokens are
    learned from, and how they were chosen: every image predicted as ``cls`` ("predicted");
    where fewer than ``min_images`` are, the min(min_images, N) images of highest probability
    of ``cls`` ("highest_probability"; the predicted ones come first)."""
    is_predicted = probabilities.argmax(dim=1) == cls
    if int(is_predicted.sum()) >= min_images:
        return is_predicted.nonzero().flatten(), "predicted"
    # probabilities are at most 1: + 2 ranks the predicted images first (with 3+ classes one
    # predicted at 0.4 can have a lower probability of cls than one not predicted, at 0.45)
    ranked = (probabilities[:, cls] + 2.0 * is_predicted).argsort(descending=True, stable=True)
    return ranked[: min(min_images, len(ranked))], "highest_probability"


def run(
    data_path: str | Path,
    t2i_dir: str | Path,
    classifier_dir: str | Path,
    out_dir: str | Path,
    settings: dict[str, Any],
    seed: int,
    device: torch.device,
) -> dict[str, Any]:
    """Distil the context and class tokens; settings: n_tokens, max_images, min_class_images,
    context and classes (each steps, batch_size, lr, ...)."""
    started = time.perf_counter()
    data = PreparedData(data_path)
    t2i, _ = load_model(t2i_dir)
    t2i.to(device)
    classifier, _ = load_model(classifier_dir)
    blackbox = BlackBox(classifier.to(device).eval().requires_grad_(False))
    train = data.subset("train", settings["max_images"], seed)
    images = to_m11(torch.from_numpy(data.array("images")[train])).to(device)
    probabilities = class_probabilities(blackbox, images).cpu()
    context, classes = concept_names(settings["n_tokens"], data.num_classes)
    concepts = Concepts(context, classes)
    check_prompts_fit(t2i, concepts, Path(t2i_dir).name)
    generator = torch.Generator().manual_seed(seed)
    embeddings, record = {}, {"context": context, "classes": {}, "class_images": {}, "history": {}}
    learned, history = learn_concept(
        t2i, images, context_prompt(context), context, settings["context"], generator, device
    )
    embeddings.update(learned)
    record["history"]["context"] = history
    for cls, tokens in classes.items():
        rows, selection = class_images(probabilities, cls, settings["min_class_images"])
        if selection != "predicted":
            predicted = int((probabilities.argmax(dim=1) == cls).sum())
            message = "the classifier predicts %d of %d images as class %d: tokens from the %d most probable"
            log.warning(message, predicted, len(images), cls, len(rows))
        chosen = images[rows.to(images.device)]
        prompt = concepts.prompt(cls, with_context=True)
        learned, history = learn_concept(t2i, chosen, prompt, tokens, settings["classes"], generator, device)
        embeddings.update(learned)
        record["classes"][str(cls)] = tokens
        record["class_images"][str(cls)] = {"images": len(rows), "selection": selection}
        record["history"][f"class{cls}"] = history
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(
        {name: value.detach().cpu().contiguous() for name, value in embeddings.items()}, out_dir / TOKENS
    )
    record["classifier_queries"] = blackbox.queries
    record["class_names"] = data.class_names
    record["provenance"] = provenance(settings, MODULES, seed, str(device), time.perf_counter() - started)
    write_json(out_dir / INDEX, record)
    log.info("distilled %d tokens in %.0f s", len(embeddings), time.perf_counter() - started)
    return record


def time_context(directory: str | Path) -> dict[str, Any]:
    """TIME's context from a ``distill`` output directory: the learned ``embeddings``
    ({token: (D,)}) and the ``concepts`` (token names of the context and of each class)."""
    directory = Path(directory)
    index = json.loads((directory / INDEX).read_text())
    classes = {int(cls): tokens for cls, tokens in index["classes"].items()}
    return {"embeddings": load_file(directory / TOKENS), "concepts": Concepts(index["context"], classes)}
