"""Image datasets held whole as uint8 tensors: MNIST, Fashion-MNIST, CIFAR-10, digits, npz.

`load_dataset(spec.dataset)` reads the standard files from the data directory
(`dataset.data_dir`, else $DRL_DATA_DIR, else ./data) and never downloads; `check_dataset`
checks the same files from their headers only (what a submit can afford);
`download_dataset` fetches MNIST / Fashion-MNIST when a user asks for it.
"""

from .core import DatasetError, ImageDataset, from_model_range, to_model_range
from .download import download_dataset
from .loader import check_dataset, dataset_files, load_dataset, resolve_data_dir

__all__ = [
    "DatasetError",
    "ImageDataset",
    "check_dataset",
    "dataset_files",
    "download_dataset",
    "from_model_range",
    "load_dataset",
    "resolve_data_dir",
    "to_model_range",
]
