"""Model files that run no code when read. A run folder may come from someone else (a team mate,
a Kaggle dataset), and unpickling a file can run any code it names, so:
- checkpoints and refit models are safetensors files: the tensors, found anywhere in the
  checkpoint's dict, in the safetensors body, and everything else as JSON in its header;
- resume states and `weights:` files are read with torch.load(weights_only=True), which builds
  tensors and plain containers only (safe from torch 2.6 on: CVE-2025-32434);
- a run folder saved as pickles by an older compete is refused by its run format (runs.check_format),
  with the command that rebuilds it.
Each refusal is one line that names the file.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from .atomic import write_atomically
from .errors import PipelineError

SUFFIX = ".safetensors"     # checkpoints and refit models
SETTINGS_KEY = "compete"    # the safetensors header entry that holds the JSON
TENSOR, ARRAY = "__tensor__", "__ndarray__"  # JSON stand-ins for a tensor or numpy array by name


def save_model_file(path: Path, state: dict) -> None:
    """Write `state` (nested dicts and lists of JSON values, tensors and numpy arrays) to `path`
    as safetensors, atomically."""
    from safetensors.torch import save
    tensors = {}
    settings = _split(state, "", tensors)
    body = save(tensors, metadata={SETTINGS_KEY: json.dumps(settings)})
    write_atomically(Path(path), lambda file: file.write(body))


def load_model_file(path: Path) -> dict:
    """The dict save_model_file wrote (lists where it had tuples), tensors on the CPU."""
    from safetensors import SafetensorError
    from safetensors.torch import load
    path = Path(path)
    body = path.read_bytes()
    try:
        tensors = load(body)
        settings = json.loads(_header(body).get("__metadata__", {})[SETTINGS_KEY])
    except (SafetensorError, ValueError, KeyError, TypeError) as error:
        raise PipelineError(f"{path} is not a compete model file (safetensors with its settings): "
                            f"{_first_line(error)}. Nothing in it was run; rebuild the run that made "
                            f"it with ./run.sh train.") from None
    return _join(settings, tensors)


def load_plain(path: Path, what: str, fix: str) -> dict:
    """torch.load of a file of tensors and plain containers only (weights_only=True): a pickle
    that names anything else (a function to call, a class to build) is refused unrun, in one
    line that names `what` it is and the `fix`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the unpickler's protocol note: the refusal says it all
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a refused pickle, or no torch file at all
        raise PipelineError(f"{what} {path} is not a readable state_dict of tensors ({_load_failure(error)}): "
                            f"refused, nothing in it was run. {fix}") from None


def read_weights(path: Path) -> dict:
    """A `weights:` file: safetensors, or a torch file of tensors (weights_only)."""
    if Path(path).suffix == SUFFIX:
        from safetensors.torch import load_file
        return load_file(path)
    return load_plain(path, "Weights file", "Save a state_dict (torch.save(model.state_dict(), FILE)) "
                      "or a .safetensors file.")


def _split(value, key: str, tensors: dict):
    """`value` with every tensor and array moved into `tensors` under its path, as JSON."""
    if isinstance(value, torch.Tensor):
        tensors[key] = value.detach().to("cpu").contiguous().clone()  # own storage: no shared views
        return {TENSOR: key}
    if isinstance(value, np.ndarray):
        tensors[key] = torch.from_numpy(np.ascontiguousarray(value)).clone()
        return {ARRAY: key}
    if isinstance(value, dict):
        if not all(isinstance(name, str) for name in value):
            raise TypeError(f"model file keys must be strings: {sorted(map(repr, value))[:3]} at '{key}'")
        return {name: _split(item, f"{key}/{name}" if key else name, tensors) for name, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_split(item, f"{key}/{i}", tensors) for i, item in enumerate(value)]
    return value.item() if isinstance(value, np.generic) else value


def _join(value, tensors: dict):
    """The inverse of _split."""
    if isinstance(value, dict):
        if set(value) == {TENSOR}:
            return tensors[value[TENSOR]]
        if set(value) == {ARRAY}:
            return tensors[value[ARRAY]].numpy()
        return {name: _join(item, tensors) for name, item in value.items()}
    if isinstance(value, list):
        return [_join(item, tensors) for item in value]
    return value


def _header(body: bytes) -> dict:
    """The JSON header of a safetensors file: 8 bytes of length, then the header."""
    size = int.from_bytes(body[:8], "little")
    return json.loads(body[8:8 + size])


def _load_failure(error: Exception) -> str:
    """Why a file could not be read, in one line: for torch's weights_only refusal, the line that
    says what was refused, never its advice to retry with weights_only=False (which would run
    whatever code a stranger's file holds)."""
    lines = [line.strip() for line in str(error).splitlines()]
    refused = next((line for line in lines if "GLOBAL" in line or line.startswith("Unsupported")), None)
    if refused is None and "WeightsUnpickler error:" in str(error):
        refused = str(error).split("WeightsUnpickler error:", 1)[1].split("Please use", 1)[0]
    if refused is None:
        return _first_line(error)
    return " ".join(refused.split("Check the documentation", 1)[0].split()).rstrip(". ")


def _first_line(error: Exception) -> str:
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
