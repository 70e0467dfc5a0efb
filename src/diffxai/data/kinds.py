"""The module that builds each dataset kind, by config name.

``prepare_data`` imports only its dataset's module, and the workflow hashes only that module
into the job's params: an edit of the real-data adapters does not rebuild the synthetic
datasets (and re-run everything downstream of them), nor an edit of one generator the other.
"""

from __future__ import annotations

DATASET_MODULES: dict[str, str] = {
    "ellipses": "diffxai.data.ellipses",
    "attributes": "diffxai.data.attributes",
    "image_folder": "diffxai.data.adapters",
    "celeba": "diffxai.data.adapters",
    "hdf5": "diffxai.data.adapters",
}


def dataset_module(kind: str) -> str:
    """The module that generates or loads datasets of ``kind``."""
    try:
        return DATASET_MODULES[kind]
    except KeyError:
        raise ValueError(f"dataset kind {kind!r}: allowed {', '.join(DATASET_MODULES)}") from None
