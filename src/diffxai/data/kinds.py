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


def dataset_module(kind: str) -> str:
    """The module that generates or loads datasets of ``kind``."""
    return module_for(DATASET_MODULES, kind, "dataset kind")
