"""The module that builds each dataset kind, by config name.

``prepare_data`` imports only its dataset's module, and the workflow hashes only that module
into the job's params: an edit of the real-data adapters does not rebuild the synthetic
datasets (and re-run everything downstream of them), nor an edit of one generator the other.
"""

from __future__ import annotations

from diffxai.lookup import module_for

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


def dataset_module(kind: str) -> str:
    """The module that generates or loads datasets of ``kind``."""
    return module_for(DATASET_MODULES, kind, "dataset kind")
