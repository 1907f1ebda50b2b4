"""download, submit and score read-back through a stand-in `kaggle` executable first on PATH.

The stand-in records its arguments and acts as the real tool would (kaggle 2.2.5's argument
names and output): a download writes SLUG.zip, a submission joins a listing that
`competitions submissions -v` prints as CSV, and a scripted failure prints the real tool's own
message and exits 1. No test reaches a real kaggle: PATH starts with the stand-in's folder.
"""
import json
import shutil
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from compete.cli import main

from helpers import TINY_PRESET, StandIn, install_stand_in, make_competition, only_run, run_summary, workspace_at

SLUG = "tiny-challenge"
ONE_EPOCH = {**TINY_PRESET, "members": [{**TINY_PRESET["members"][0], "epochs": 1}]}

STAND_IN = '''#!{python}
"""Stand-in for the kaggle CLI: records its arguments, acts from scenario.json."""
import csv, json, os, shutil, sys, time
from pathlib import Path

home = Path(os.environ["KAGGLE_STAND_IN"])
scenario = json.loads((home / "scenario.json").read_text())
args = sys.argv[1:]
with open(home / "calls.jsonl", "a") as log:
    log.write(json.dumps(args) + "\\n")
command, slug = args[1], args[2]
failure = scenario.get("fail", {{}}).get(command)
if failure is not None:  # kaggle 2.x exits 0 on some failures ("exit": 0)
    print(failure, file=sys.stderr if scenario.get("stderr", True) else sys.stdout)
    sys.exit(scenario.get("exit", 1))
server = home / "server.json"
listed = json.loads(server.read_text()) if server.exists() else []
if command == "download":
    shutil.copy(scenario["zip"], Path(args[args.index("-p") + 1]) / f"{{slug}}.zip")
elif command == "submit":
    ref = 1000 + len(listed)
    listed.insert(0, {{"ref": str(ref), "fileName": Path(args[args.index("-f") + 1]).name,
                      "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                      "description": args[args.index("-m") + 1]}})
    server.write_text(json.dumps(listed))
    print(f"Submission ref: {{ref}}")
    print("4 submissions remaining today.")
elif command == "submissions":
    fields = scenario.get("fields", ["ref", "fileName", "date", "description", "status",
                                     "publicScore", "privateScore"])
    if scenario.get("warning"):
        print("Warning: Looks like you're using an outdated API Version, please consider updating")
    writer = csv.writer(sys.stdout)
    writer.writerow(fields)
    for row in listed:  # scored as scenario.json says now
        row = {{**row, "status": scenario.get("status", "SubmissionStatus.COMPLETE"),
               "publicScore": scenario.get("score", "0.91234"), "privateScore": ""}}
        writer.writerow([row[field] for field in fields])
'''

# What kaggle 2.2.5 prints for each failure (its own wording; the last two are the server's).
NO_CREDENTIALS = ("Authentication required to call the Kaggle API.\n\nIf you'd rather not use OAuth, "
                  "generate an API token at\n  https://www.kaggle.com/settings/api")
RULES = ("403 Client Error: Forbidden for url: https://api.kaggle.com/v1/competitions.CompetitionApiService/"
         "CreateSubmission\n\nYou don't have access to this resource.\nIf this is a competition, you may "
         "need to accept its rules first at\n  https://www.kaggle.com/competitions/<competition>/rules")
NO_NETWORK = ("HTTPSConnectionPool(host='api.kaggle.com', port=443): Max retries exceeded with url: "
              "/v1/competitions.CompetitionApiService/StartSubmissionUpload (Caused by NameResolutionError"
              "(\"HTTPSConnection(host='api.kaggle.com', port=443): Failed to resolve 'api.kaggle.com' "
              "([Errno -2] Name or service not known)\"))")
DAILY_LIMIT = ("Submission not allowed:  Your team has used its daily Submission allowance (5) today, "
               "please try again tomorrow UTC (8.4 hours from now).")

RATE_LIMIT = ("429 Client Error: Too Many Requests for url: https://api.kaggle.com/v1/competitions."
              "CompetitionApiService/CreateSubmission")
SILENT_FAILURE = "Could not submit to competition"  # kaggle 2.x, exit status 0


@pytest.fixture
def kaggle(tmp_path_factory, monkeypatch) -> StandIn:
    return install_stand_in(tmp_path_factory.mktemp("kaggle"), STAND_IN.format(python=sys.executable), monkeypatch)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny Kaggle competition trained for one epoch and predicted: the workspace to copy."""
    root = tmp_path_factory.mktemp("trained")
    with workspace_at(root):
        tiny = make_competition(root, kaggle=SLUG, preset=ONE_EPOCH)
        assert main(["train", tiny.name, "--device", "cpu"]) == 0
        assert main(["predict", tiny.name, "--device", "cpu"]) == 0
    return root


@pytest.fixture
def workspace_with_run(trained, tmp_path, monkeypatch) -> Path:
    root = tmp_path / "workspace"
    shutil.copytree(trained, root)
    monkeypatch.setenv("COMPETE_ROOT", str(root))
    return root


def folder_state(folder: Path) -> dict:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as out:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                out.write(path, str(path.relative_to(folder)))
    return archive


def published(workspace: Path, tmp_path: Path, kaggle: StandIn, **options) -> None:
    """A tiny competition as Kaggle serves it (one zip of its files), and its yaml in `workspace`."""
    site = tmp_path / "site"
    (site / "competition").mkdir(parents=True)
    source = make_competition(site, kaggle=SLUG, **options)
    shutil.copy(site / "competition" / "tiny.yaml", workspace / "competition")
    kaggle.script(zip=str(zip_folder(source.data_dir, tmp_path / "download.zip")))


def test_download_fetches_the_zip_that_the_pipeline_reads_in_place(workspace, kaggle, tmp_path, capsys):
    published(workspace, tmp_path, kaggle)
    assert main(["download", "tiny"]) == 0
    folder = workspace / "inputs" / "tiny"
    assert kaggle.calls() == [["competitions", "download", SLUG, "-p", str(folder)]]
    assert sorted(p.name for p in folder.iterdir()) == [f"{SLUG}.zip"]
    assert "./run.sh check tiny" in capsys.readouterr().out
    assert main(["check", "tiny"]) == 0  # every file is read from inside the zip


def test_zips_inside_the_download_are_put_beside_it(workspace, kaggle, tmp_path):
    published(workspace, tmp_path, kaggle, zipped=True)  # train.zip, test.zip and the CSVs
    assert main(["download", "tiny"]) == 0
    folder = workspace / "inputs" / "tiny"
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{SLUG}.zip", "test.zip", "train.zip"])
    assert main(["check", "tiny"]) == 0


def test_init_with_a_slug_downloads_the_files_and_writes_the_slug(workspace, kaggle, tmp_path, capsys):
    published(workspace, tmp_path, kaggle)
    (workspace / "competition" / "tiny.yaml").unlink()  # a new competition: only its slug is known
    assert main(["init", "tiny", "--kaggle", SLUG]) == 0
    folder = workspace / "inputs" / "tiny"
    assert kaggle.calls() == [["competitions", "download", SLUG, "-p", str(folder)]]
    assert yaml.safe_load((workspace / "competition" / "tiny.yaml").read_text())["kaggle"] == SLUG
    assert main(["check", "tiny"]) == 0
    assert main(["init", "tiny", "--kaggle", SLUG, "--force"]) == 0  # files there: no second download
    assert len(kaggle.calls()) == 1


def test_a_site_without_an_api_gets_instructions_and_no_call(workspace, kaggle, capsys):
    make_competition(workspace)  # no kaggle: slug
    assert main(["download", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "by hand" in out and str(workspace / "inputs" / "tiny") in out
    assert kaggle.calls() == []


@pytest.mark.slow
def test_submit_uploads_with_the_runs_message_and_records_the_public_score(workspace_with_run, kaggle, capsys):
    run_dir = only_run(workspace_with_run, "tiny")
    summary = run_summary(run_dir)
    kaggle.script(score="0.87500")
    assert main(["submit", "tiny"]) == 0
    before, submitted, listed = kaggle.calls()  # the list read before and after the upload
    assert before == listed
    path = workspace_with_run / "submissions" / "tiny" / "submission.csv"
    assert submitted[:5] == ["competitions", "submit", SLUG, "-f", str(path)] and submitted[5] == "-m"
    message = submitted[6]
    for part in (run_dir.name, "default", "cnn", f"{summary['ensemble_score']:.4f}"):
        assert part in message
    assert listed == ["competitions", "submissions", SLUG, "-v"]
    [upload] = json.loads((run_dir / "uploads.json").read_text())
    assert upload["message"] == message and upload["file"] == str(path) and upload["ref"] == "1000"
    assert upload["status"] == "complete" and upload["public_score"] == 0.875
    assert f"public score 0.875 (uploaded {upload['submitted_at']}); local {summary['ensemble_score']:.4f}, 95% [" \
        in capsys.readouterr().out  # to read beside each other
    assert main(["runs", "tiny"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if run_dir.name in line)
    fields = row.split()  # *, run, preset, local score, its interval (two words), public score
    assert [fields[3], fields[6]] == [f"{summary['ensemble_score']:.4f}", "0.8750"]


@pytest.mark.slow
def test_a_pending_score_is_read_back_later(workspace_with_run, kaggle, capsys):
    run_dir = only_run(workspace_with_run, "tiny")
    kaggle.script(status="SubmissionStatus.PENDING", score="")
    assert main(["submit", "tiny", "-m", "first try", "--wait", "0"]) == 0
    assert kaggle.calls()[1][-2:] == ["-m", "first try"]
    assert json.loads((run_dir / "uploads.json").read_text())[0]["status"] == "pending"
    assert "./run.sh scores tiny" in capsys.readouterr().out
    assert main(["runs", "tiny"]) == 0
    assert "pending" in capsys.readouterr().out
    # kaggle 1.x: a version warning first, no ref column, plain status words
    kaggle.script(status="complete", score="0.9", warning=True,
                  fields=["fileName", "date", "description", "status", "publicScore", "privateScore"])
    assert main(["scores", "tiny"]) == 0
    [upload] = json.loads((run_dir / "uploads.json").read_text())
    assert upload["status"] == "complete" and upload["public_score"] == 0.9


@pytest.mark.slow
def test_each_upload_of_a_run_is_kept(workspace_with_run, kaggle):
    run_dir = only_run(workspace_with_run, "tiny")
    for score in ("0.8", "0.9"):
        kaggle.script(score=score)
        assert main(["submit", "tiny", "-m", "same words"]) == 0
    uploads = json.loads((run_dir / "uploads.json").read_text())
    assert [(u["ref"], u["public_score"]) for u in uploads] == [("1000", 0.8), ("1001", 0.9)]


@pytest.mark.parametrize("failure,output,fix", [
    ("credentials", NO_CREDENTIALS, "kaggle.json"),
    ("rules", RULES, f"https://www.kaggle.com/competitions/{SLUG}/rules"),
    ("daily limit", DAILY_LIMIT, "midnight UTC"),
    ("no network", NO_NETWORK, "Cannot reach kaggle.com"),
    ("rate limit", RATE_LIMIT, "wait a few minutes"),
])
@pytest.mark.slow
def test_a_failed_upload_says_what_to_do_and_changes_nothing(workspace_with_run, kaggle, capsys,
                                                              failure, output, fix):
    run_dir = only_run(workspace_with_run, "tiny")
    before = folder_state(run_dir)
    kaggle.script(fail={"submit": output}, stderr=failure != "credentials")  # 2.x prints that one on stdout
    assert main(["submit", "tiny"]) == 2
    err = capsys.readouterr().err
    assert fix in err and "Traceback" not in err
    assert folder_state(run_dir) == before


def test_download_without_credentials_or_network_says_what_to_do(workspace, kaggle, capsys):
    make_competition(workspace, kaggle=SLUG)
    for output, fix in ((NO_CREDENTIALS, "https://www.kaggle.com/settings/api"), (NO_NETWORK, "no network")):
        kaggle.script(fail={"download": output})
        assert main(["download", "tiny", "--data", str(workspace / "fresh")]) == 2
        assert fix in capsys.readouterr().err
        assert not (workspace / "fresh").exists()


@pytest.mark.slow
def test_without_the_kaggle_tool_the_error_says_how_to_install_it(workspace_with_run, kaggle, tmp_path,
                                                                  monkeypatch, capsys):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    before = folder_state(only_run(workspace_with_run, "tiny"))
    assert main(["submit", "tiny"]) == 2
    assert "pip install kaggle" in capsys.readouterr().err
    assert folder_state(only_run(workspace_with_run, "tiny")) == before


@pytest.mark.slow
def test_a_submission_that_no_longer_matches_the_sample_is_not_uploaded(workspace_with_run, kaggle, capsys):
    path = workspace_with_run / "submissions" / "tiny" / "submission.csv"
    frame = pd.read_csv(path, dtype=str)
    frame.iloc[:-1].to_csv(path, index=False)  # a row lost
    assert main(["submit", "tiny"]) == 2
    assert "rows" in capsys.readouterr().err and kaggle.calls() == []


@pytest.mark.slow
def test_submit_refuses_a_run_that_did_not_make_submission_csv(workspace_with_run, kaggle, capsys):
    assert main(["submit", "tiny", "--run", "20000101-000000-other"]) == 2
    assert "./run.sh predict tiny --run 20000101-000000-other" in capsys.readouterr().err
    assert kaggle.calls() == []


@pytest.mark.slow
def test_scores_with_nothing_waiting_asks_kaggle_nothing(workspace_with_run, kaggle, capsys):
    assert main(["scores", "tiny"]) == 0
    assert "No upload of tiny is waiting" in capsys.readouterr().out and kaggle.calls() == []


@pytest.mark.parametrize("output,status", [(SILENT_FAILURE, 0), ("", 0), ("", 1)],
                         ids=["could-not-submit-exit-0", "silent-exit-0", "silent-exit-1"])
@pytest.mark.slow
def test_an_upload_missing_from_the_list_read_back_is_not_recorded(workspace_with_run, kaggle, capsys,
                                                                   output, status):
    run_dir = only_run(workspace_with_run, "tiny")
    before = folder_state(run_dir)
    kaggle.script(fail={"submit": output}, exit=status)  # the upload never joins the listing
    assert main(["submit", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and "(kaggle said: )" not in err
    assert ("did not reach Kaggle" if status == 0 else "failed on") in err
    assert (SILENT_FAILURE if output else f"exit status {status}; run `kaggle competitions submit") in err
    assert folder_state(run_dir) == before  # no pending upload recorded
    assert main(["runs", "tiny"]) == 0
    assert "pending" not in capsys.readouterr().out
