"""`package` and the offline Kaggle kernel: a trained run packaged as a dataset (models, settings,
the project's wheel) and a kernel that, run in a fresh process with the network cut and the
project's src/ out of reach, reads /kaggle/input as Kaggle lays it out and writes the same
submission.csv as `./run.sh predict`."""
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys

import pytest

from compete.cli import main
from compete.config import PipelineError
from compete.imagestore import POOL_MIN_IMAGES
from compete.kernel import check_versions

from helpers import make_competition, workspace_at

SLUG = "tiny-challenge"  # the competition's Kaggle slug: its files are /kaggle/input/SLUG
cannot_cut_network = subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    """A tiny competition trained, predicted and packaged once for the module."""
    root = tmp_path_factory.mktemp("packaged")
    with workspace_at(root), pytest.MonkeyPatch.context() as patch:
        patch.setenv("KAGGLE_USERNAME", "tester")
        make_competition(root, kaggle=SLUG, n_test=POOL_MIN_IMAGES)  # decoded by spawned processes
        assert main(["train", "tiny"]) == 0
        assert main(["predict", "tiny"]) == 0
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert main(["package", "tiny", "--time-limit", "600", "--test-images", "1000"]) == 0
    (root / "package-output.txt").write_text(printed.getvalue())
    return root


@pytest.mark.slow  # trains and packages the tiny competition once (about 20 s)
def test_package_writes_the_dataset_and_kernel_metadata(packaged):
    kaggle = packaged / "submissions" / "tiny" / "kaggle"
    dataset = json.loads((kaggle / "dataset" / "dataset-metadata.json").read_text())
    kernel = json.loads((kaggle / "kernel" / "kernel-metadata.json").read_text())
    assert dataset["id"] == "tester/tiny-compete-models"
    assert kernel["dataset_sources"] == [dataset["id"]] and kernel["competition_sources"] == [SLUG]
    assert kernel["enable_internet"] is False and kernel["enable_gpu"] is False  # trained on a CPU
    assert (kaggle / "kernel" / kernel["code_file"]).is_file()
    files = {path.relative_to(kaggle / "dataset").as_posix() for path in (kaggle / "dataset").rglob("*")}
    assert {"competition.yaml", "run/config.json", "run/summary.json", "run/members/m0_f0.safetensors"} <= files
    assert [name for name in files if name.endswith(".whl")] and not [n for n in files if "resume_" in n]
    assert "TIME_LIMIT = 600.0" in (kaggle / "kernel" / kernel["code_file"]).read_text()


@pytest.mark.slow
def test_package_prints_the_expected_runtime_for_the_hidden_test(packaged):
    printed = (packaged / "package-output.txt").read_text()
    assert "Expected runtime for 1000 test images on this machine" in printed
    assert "The kernel's time limit is 600 s: it fits." in printed


def kaggle_layout(packaged, tmp_path):
    """/kaggle/input as a notebook sees it: the competition's files under its slug, the attached
    dataset under its slug; and an empty /kaggle/working."""
    inputs, working = tmp_path / "input", tmp_path / "working"
    shutil.copytree(packaged / "inputs" / "tiny", inputs / SLUG, ignore=shutil.ignore_patterns(".cache"))
    shutil.copytree(packaged / "submissions" / "tiny" / "kaggle" / "dataset", inputs / "tiny-compete-models")
    working.mkdir()
    return inputs, working


def offline_env(inputs, working) -> dict:
    """No PYTHONPATH, no workspace: the kernel finds the project only in the attached dataset."""
    keep = {key: os.environ[key] for key in ("PATH", "HOME", "LANG") if key in os.environ}
    return {**keep, "COMPETE_KAGGLE_INPUT": str(inputs), "COMPETE_KAGGLE_WORKING": str(working)}


@pytest.mark.slow
@pytest.mark.skipif(cannot_cut_network, reason="unshare -n needs root (or user namespaces)")
def test_the_kernel_offline_writes_the_submission_predict_wrote(packaged, tmp_path):
    inputs, working = kaggle_layout(packaged, tmp_path)
    env = offline_env(inputs, working)
    script = packaged / "submissions" / "tiny" / "kaggle" / "kernel" / "compete_kernel.py"
    # the project is out of reach of this interpreter without the dataset's wheel
    assert subprocess.run([sys.executable, "-c", "import compete"], env=env, cwd=tmp_path).returncode != 0
    done = subprocess.run(["unshare", "-n", sys.executable, str(script)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"compete from {working / 'compete-lib' / 'compete'}" in done.stdout
    assert "images/s" in done.stdout  # progress and throughput are printed
    expected = (packaged / "submissions" / "tiny" / "submission.csv").read_bytes()
    assert (working / "submission.csv").read_bytes() == expected


@pytest.mark.slow
@pytest.mark.skipif(cannot_cut_network, reason="unshare -n needs root (or user namespaces)")
def test_the_kernel_without_the_competitions_files_says_so_in_one_line(packaged, tmp_path):
    inputs, working = kaggle_layout(packaged, tmp_path)
    shutil.rmtree(inputs / SLUG)
    script = packaged / "submissions" / "tiny" / "kaggle" / "kernel" / "compete_kernel.py"
    done = subprocess.run(["unshare", "-n", sys.executable, str(script)], env=offline_env(inputs, working),
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert not (working / "submission.csv").exists()


def test_the_version_check_names_the_package_that_is_too_old():
    import numpy
    with pytest.raises(PipelineError, match=f"numpy {numpy.__version__} is too old; the code needs numpy>=99.0"):
        check_versions(["numpy>=99.0", "pandas>=1.0"])
    check_versions(["numpy>=2.0", "Pillow>=10.0", "tqdm>=999"])  # tqdm is not among those checked
