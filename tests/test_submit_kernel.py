"""`submit NAME --kernel` through a stand-in `kaggle` first on PATH: every step (dataset create or
version, kernel push, status, the code-competition submit) and each step's failure, which is one
line and records nothing."""
import json
import shutil
import sys

import pytest

from compete import codesubmit
from compete.cli import main

from helpers import TINY_PRESET, StandIn, install_stand_in, make_competition, only_run, workspace_at

SLUG = "tiny-challenge"
ONE_EPOCH = {**TINY_PRESET, "members": [{**TINY_PRESET["members"][0], "epochs": 1}]}
DATASET, KERNEL = "tester/tiny-compete-models", "tester/tiny-compete-kernel"

STAND_IN = '''#!{python}
"""Stand-in for the kaggle CLI (2.x wordings): records its arguments, acts from scenario.json
and keeps what the server holds in server.json."""
import json, os, sys
from pathlib import Path

home = Path(os.environ["KAGGLE_STAND_IN"])
scenario = json.loads((home / "scenario.json").read_text())
server_file = home / "server.json"
server = json.loads(server_file.read_text()) if server_file.exists() else {{"datasets": [], "kernel": 0,
                                                                             "statuses": 0, "submissions": []}}
args = sys.argv[1:]
with open(home / "calls.jsonl", "a") as log:
    log.write(json.dumps(args) + "\\n")
step = " ".join(args[:2])
failure = scenario.get("fail", {{}}).get(step)
if failure:
    print(failure, file=sys.stderr)
    sys.exit(1)
if step == "datasets status":
    if args[2] not in server["datasets"]:
        print("404 Client Error: Not Found for url: https://api.kaggle.com/v1/datasets", file=sys.stderr)
        sys.exit(1)
    print("ready")
elif step in ("datasets create", "datasets version"):
    folder = Path(args[args.index("-p") + 1])
    server["datasets"].append(json.loads((folder / "dataset-metadata.json").read_text())["id"])
    print("Dataset upload successful")
elif step == "kernels push":
    server["kernel"] += 1
    print(f"Kernel version {{server['kernel']}} successfully pushed.  Please check progress at https://www.kaggle.com/code/x")
elif step == "kernels status":
    statuses = scenario.get("kernel_statuses", ["running", "complete"])
    state = statuses[min(server["statuses"], len(statuses) - 1)]
    server["statuses"] += 1
    print(f'{{args[2]}} has status "KernelWorkerStatus.{{state.upper()}}"')
elif step == "competitions submit":
    ref = 2000 + len(server["submissions"])
    server["submissions"].insert(0, {{"ref": str(ref), "fileName": args[args.index("-f") + 1],
                                     "date": "2026-12-06 03:00:00", "description": args[args.index("-m") + 1]}})
    print(f"Submission ref: {{ref}}")
elif step == "competitions submissions":
    import csv
    writer = csv.writer(sys.stdout)
    fields = ["ref", "fileName", "date", "description", "status", "publicScore", "privateScore"]
    writer.writerow(fields)
    for row in server["submissions"]:
        row = {{**row, "status": "SubmissionStatus.COMPLETE", "publicScore": "0.8125", "privateScore": ""}}
        writer.writerow([row[field] for field in fields])
server_file.write_text(json.dumps(server))
'''

NO_CREDENTIALS = ("Authentication required to call the Kaggle API.\n\nIf you'd rather not use OAuth, "
                  "generate an API token at\n  https://www.kaggle.com/settings/api")
NO_NETWORK = ("HTTPSConnectionPool(host='api.kaggle.com', port=443): Max retries exceeded with url: "
              "/v1/kernels.KernelsApiService/SaveKernel (Caused by NameResolutionError(\"Failed to resolve "
              "'api.kaggle.com' ([Errno -2] Name or service not known)\"))")
DAILY_LIMIT = ("Submission not allowed:  Your team has used its daily Submission allowance (5) today, "
               "please try again tomorrow UTC (8.4 hours from now).")


@pytest.fixture
def kaggle(tmp_path_factory, monkeypatch) -> StandIn:
    monkeypatch.setattr(codesubmit, "KERNEL_POLL_S", 0)
    return install_stand_in(tmp_path_factory.mktemp("kaggle"), STAND_IN.format(python=sys.executable), monkeypatch)


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    root = tmp_path_factory.mktemp("packaged")
    with workspace_at(root), pytest.MonkeyPatch.context() as patch:
        patch.setenv("KAGGLE_USERNAME", "tester")
        make_competition(root, kaggle=SLUG, preset=ONE_EPOCH)
        assert main(["train", "tiny"]) == 0
        assert main(["package", "tiny"]) == 0
    return root


@pytest.fixture
def workspace(packaged, tmp_path, monkeypatch):
    root = tmp_path / "workspace"
    shutil.copytree(packaged, root)
    monkeypatch.setenv("COMPETE_ROOT", str(root))
    return root


def uploads(workspace) -> list:
    path = only_run(workspace, "tiny") / "uploads.json"
    return json.loads(path.read_text()) if path.exists() else []


def one_line(capsys) -> str:
    message = capsys.readouterr().err.split("error: ", 1)[1].strip()
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.mark.slow  # trains and packages the tiny competition once (about 15 s)
def test_submit_kernel_creates_the_dataset_pushes_waits_and_submits_its_output(workspace, kaggle):
    assert main(["submit", "tiny", "--kernel"]) == 0
    kaggle_dir = workspace / "submissions" / "tiny" / "kaggle"
    calls = kaggle.calls()
    assert calls[:2] == [["datasets", "status", DATASET],
                         ["datasets", "create", "-p", str(kaggle_dir / "dataset"), "--dir-mode", "zip"]]
    assert calls[2:6] == [["datasets", "status", DATASET], ["kernels", "push", "-p", str(kaggle_dir / "kernel")],
                          ["kernels", "status", KERNEL], ["kernels", "status", KERNEL]]  # running, then complete
    submit = calls[6]
    assert submit[:9] == ["competitions", "submit", SLUG, "-k", KERNEL, "-v", "1", "-f", "submission.csv"]
    assert calls[7] == ["competitions", "submissions", SLUG, "-v"]
    [upload] = uploads(workspace)
    assert upload["kernel"] == KERNEL and upload["kernel_version"] == 1 and upload["message"] == submit[10]
    assert upload["status"] == "complete" and upload["public_score"] == 0.8125
    assert main(["submit", "tiny", "--kernel", "-m", "second"]) == 0  # the dataset exists: a new version
    assert ["datasets", "version", "-p", str(kaggle_dir / "dataset"), "-m",
            f"run {only_run(workspace, 'tiny').name}", "--dir-mode", "zip"] in kaggle.calls()
    assert [u["kernel_version"] for u in uploads(workspace)] == [1, 2]


@pytest.mark.slow
@pytest.mark.parametrize("scenario,args,says", [
    ({"fail": {"datasets create": NO_CREDENTIALS}}, [], "kaggle.json"),
    ({"fail": {"datasets status": NO_NETWORK}}, [], "Cannot reach kaggle.com"),
    ({"fail": {"kernels push": NO_NETWORK}}, [], "Cannot reach kaggle.com"),
    ({"kernel_statuses": ["running", "error"]}, [], "ended with status error"),
    ({"kernel_statuses": ["running"]}, ["--kernel-wait", "0"], "was still running after 0 s"),
    ({"fail": {"competitions submit": DAILY_LIMIT}}, [], "midnight UTC"),
], ids=["no credentials", "no network", "push fails", "kernel error", "kernel too slow", "daily limit"])
def test_each_failed_step_is_one_line_and_records_nothing(workspace, kaggle, capsys, scenario, args, says):
    kaggle.script(**scenario)
    assert main(["submit", "tiny", "--kernel", *args]) == 2
    assert says in one_line(capsys)
    assert uploads(workspace) == []


@pytest.mark.slow
def test_submit_kernel_needs_a_packaged_run(workspace, kaggle, capsys):
    shutil.rmtree(workspace / "submissions" / "tiny" / "kaggle")
    assert main(["submit", "tiny", "--kernel"]) == 2
    assert "run ./run.sh package tiny first" in one_line(capsys) and kaggle.calls() == []
