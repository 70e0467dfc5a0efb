"""Dataset kinds by config name: the module that builds each, the files it reads, its flips.

``prepare_data`` imports only its dataset's module, and the workflow hashes only that module
into the job's params: an edit of the real-data adapters does not rebuild the synthetic
datasets (and re-run everything downstream of them), nor an edit of one generator the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffxai.lookup import module_for
from diffxai.paths import resolve

DATASET_MODULES: dict[str, str] = {
    "ellipses": "diffxai.data.ellipses",
    "attributes": "diffxai.data.attributes",
    "image_folder": "diffxai.data.adapters",
    "celeba": "diffxai.data.adapters",
    "hdf5": "diffxai.data.adapters",
}


MIRROR_SYMMETRIC_KINDS = {"ellipses", "celeba"}  # a mirror image is as likely as the image
ASYMMETRIC_KINDS = {"attributes"}  # the corner mark (top left) and dot (top right) never swap sides


def resolve_flips(hflip: bool | str, kind: str) -> bool:
    """A diffusion model's ``train.hflip`` on a dataset of ``kind``: ``auto`` flips the
    mirror-symmetric kinds only (a user's image folder or HDF5 file may not be)."""
    return kind in MIRROR_SYMMETRIC_KINDS if hflip == "auto" else bool(hflip)


def source_files(cfg: dict[str, Any], base_dir: str | Path = ".") -> list[str]:
    """The files a real-data config reads its labels, attributes, split or images from (the
    image folder's CSV, CelebA's attribute and partition files, the HDF5 file): the inputs of
    ``prepare_data``, so editing one re-prepares the dataset. Generated kinds have none; image
    files under a folder are not listed (replace an image under a new name, or edit the CSV)."""
    kind = cfg["kind"]
    if kind == "image_folder":
        return [str(resolve(cfg["image_folder"]["csv"], base_dir))]
    if kind == "celeba":
        names = ["attr_file", "partition_file"]
        return [str(celeba_file(cfg["celeba"], name, base_dir)) for name in names if cfg["celeba"][name]]
    if kind == "hdf5":
        return [str(resolve(cfg["hdf5"]["path"], base_dir))]
    return []


def celeba_file(params: dict[str, Any], name: str, base_dir: str | Path = ".") -> Path:
    """CelebA's ``attr_file`` or ``partition_file`` (``name``): relative paths are relative to
    the parent of ``root``, the image folder (CelebA ships them beside it)."""
    return resolve(params[name], resolve(params["root"], base_dir).parent)


def dataset_module(kind: str) -> str:
    """The module that generates or loads datasets of ``kind``."""
    return module_for(DATASET_MODULES, kind, "dataset kind")
