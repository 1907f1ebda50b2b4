"""The embedded default competition: scikit-learn's handwritten digits (1,797 8x8 images),
written out on first use exactly as a competition site would hand it out."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

TEST_FRACTION = 0.2  # fixed stratified train/test cut
SEED = 0


def ensure_digits(folder: Path) -> Path:
    """Write the digits competition into `folder` unless it is already there."""
    if (folder / "sample_submission.csv").is_file():
        return folder
    digits = load_digits()
    images = (digits.images * (255 / 16)).round().astype(np.uint8)  # pixel values are 0..16
    ids = np.arange(1, len(images) + 1)
    train_ids, test_ids = train_test_split(ids, test_size=TEST_FRACTION, random_state=SEED,
                                           stratify=digits.target)
    partial = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    for split, split_ids in (("train", np.sort(train_ids)), ("test", np.sort(test_ids))):
        (partial / split).mkdir(parents=True)
        for image_id in split_ids:
            Image.fromarray(images[image_id - 1], mode="L").save(partial / split / f"{image_id}.png")
    train = np.sort(train_ids)
    pd.DataFrame({"id": train, "label": digits.target[train - 1]}).to_csv(partial / "train.csv", index=False)
    test = np.sort(test_ids)
    pd.DataFrame({"id": test}).to_csv(partial / "test.csv", index=False)
    pd.DataFrame({"id": test, "label": 0}).to_csv(partial / "sample_submission.csv", index=False)
    folder.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, folder)  # a half-written competition is never left in place
    print(f"Wrote the embedded digits competition to {folder}")
    return folder
