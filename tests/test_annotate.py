"""Annotation server: token, refusals (class, row, stale version), CSV write-through that the files oracle
accepts, atomic writes, only its own routes, the CLI's --then-train and no jax on its import path."""
import json
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from boostmis_jax.annotate.server import Annotator, ApiError, make_server
from boostmis_jax.errors import UserError
from boostmis_jax.oracle import FilesOracle, Query, cycle_paths

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["normal", "pneumonia", "covid"]
TOKEN = "t0ken-for-tests"


def _queries():
    return [
        Query(index=7, id="img_007.png", selector="aus", score=0.91, predicted=0, selectors=("aus", "bus"),
              confidence=0.55),
        Query(index=2, id="img_002.png", selector="bus", score=0.5, predicted=2, confidence=0.8),
        Query(index=11, id="img_011.png", selector="aus", score=0.1, predicted=1, confidence=0.4),
    ]


def _write(workdir, command=None, cwd=None, images=True):
    imgs = (np.random.default_rng(0).random((20, 8, 8, 1)) * 255).astype(np.uint8) if images else None
    oracle = FilesOracle(3, CLASSES, imgs, command=command or ["true"], cwd=cwd or str(workdir))
    assert oracle.answer(0, _queries(), workdir) is None
    return oracle


@pytest.fixture
def served(tmp_path):
    oracle = _write(tmp_path)
    server = make_server(tmp_path, port=0, token=TOKEN)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield server, oracle, tmp_path
    server.shutdown()
    server.server_close()


def call(server, path, body=None, token=TOKEN, headers=None):
    """(status, parsed JSON or bytes) for GET (body None) or POST JSON."""
    host, port = server.server_address[:2]
    sep = "&" if "?" in path else "?"
    url = f"http://{host}:{port}{path}" + (f"{sep}token={token}" if token is not None else "")
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    hdrs = {"Content-Type": "application/json"} if body is not None else {}
    req = urllib.request.Request(url, data=data, headers={**hdrs, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, raw, ctype = r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        status, raw, ctype = e.code, e.read(), e.headers.get("Content-Type", "")
    return status, (json.loads(raw) if ctype.startswith("application/json") else raw)


def row(server, index):
    _, s = call(server, "/api/state")
    return next(r for r in s["rows"] if r["index"] == index)


def put(server, index, label, version=None):
    v = row(server, index)["version"] if version is None else version
    return call(server, "/api/answer", {"index": index, "label": label, "version": v})


@pytest.mark.parametrize("token", [None, "", "wrong"], ids=["missing", "empty", "wrong"])
@pytest.mark.parametrize("path,body", [("/", None), ("/api/state", None), ("/img/0.png", None),
                                       ("/api/answer", {"index": 7, "label": 1, "version": "x"})])
def test_every_route_needs_the_token(served, token, path, body):
    server, _, wd = served
    before = cycle_paths(0, wd).csv.read_bytes()
    status, out = call(server, path, body, token=token)
    assert status == 403 and b"token" in out
    assert cycle_paths(0, wd).csv.read_bytes() == before


def test_token_in_header_works(served):
    server = served[0]
    status, s = call(server, "/api/state", token=None, headers={"X-Token": TOKEN})
    assert status == 200 and s["total"] == 3


def test_state_shows_model_info(served):
    server = served[0]
    status, s = call(server, "/api/state")
    assert status == 200
    assert s["class_names"] == CLASSES and s["answered"] == 0 and not s["complete"] and s["has_images"]
    r = s["rows"][0]
    assert (r["pos"], r["index"], r["id"], r["predicted_name"], r["confidence"], r["label"]) == \
        (0, 7, "img_007.png", "normal", 0.55, None)
    assert r["selectors"] == ["aus", "bus"]
    assert s["command"].endswith("&& true")


def test_answers_write_through_and_the_files_oracle_accepts_them(served):
    server, oracle, wd = served
    assert put(server, 7, 1)[0] == 200
    assert put(server, 2, 0)[0] == 200
    assert put(server, 2, None)[0] == 200            # unsure: the row is empty again
    assert put(server, 11, "Covid")[0] == 200         # names are accepted, as in the CSV
    with pytest.raises(UserError, match="label is empty"):  # the files oracle refuses a partial file
        oracle.answer(0, _queries(), wd)
    status, out = put(server, 2, 2)
    assert status == 200 and out["row"]["label"] == 2
    _, s = call(server, "/api/state")
    assert s["answered"] == 3 and s["complete"]
    assert oracle.answer(0, _queries(), wd) == {7: 1, 2: 2, 11: 2}
    lines = cycle_paths(0, wd).csv.read_text().splitlines()
    assert lines[1:] == ["7,img_007.png,aus,0.91,0,normal,1", "2,img_002.png,bus,0.5,2,covid,2",
                         "11,img_011.png,aus,0.1,1,pneumonia,2"]


@pytest.mark.parametrize("label,pattern", [(3, r"label '3' is neither a class id in \[0, 3\)"),
                                           (-1, "label '-1' is neither"), ("flu", "label 'flu' is neither")])
def test_refuses_a_label_outside_the_classes(served, label, pattern):
    server, _, wd = served
    before = cycle_paths(0, wd).csv.read_bytes()
    status, out = put(server, 7, label)
    assert status == 422
    assert re.search(pattern, out["error"])
    assert cycle_paths(0, wd).csv.read_bytes() == before


@pytest.mark.parametrize("index", [5, 99, -1])
def test_refuses_a_row_not_in_the_query_set(served, index):
    server, _, wd = served
    before = cycle_paths(0, wd).csv.read_bytes()
    status, out = call(server, "/api/answer", {"index": index, "label": 1, "version": "x"})
    assert status == 404 and f"index {index} is not among cycle 0's queries" in out["error"]
    assert cycle_paths(0, wd).csv.read_bytes() == before


@pytest.mark.parametrize("body,status", [({"index": "7", "label": 1, "version": "x"}, 400),
                                         ({"index": True, "label": 1, "version": "x"}, 400),
                                         ({"index": 7, "label": [1], "version": "x"}, 400),
                                         (b"not json", 400), (b"[1]", 400), (b"{" + b" " * 5000 + b"}", 413)])
def test_refuses_malformed_bodies(served, body, status):
    server = served[0]
    assert call(server, "/api/answer", body)[0] == status


def test_refuses_non_json_content_type(served):
    server = served[0]
    v = row(server, 7)["version"]
    status, _ = call(server, "/api/answer", f"index=7&label=1&version={v}".encode(),
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415


def test_stale_version_is_refused_with_the_newer_row(served):
    server, _, wd = served
    old = row(server, 7)["version"]                      # tab A loads
    assert put(server, 7, 1)[0] == 200                  # tab B answers
    before = cycle_paths(0, wd).csv.read_bytes()
    status, out = put(server, 7, 2, version=old)        # tab A writes from its stale view
    assert status == 409 and "changed elsewhere" in out["error"]
    assert out["row"]["label"] == 1 and out["row"]["version"] != old
    assert cycle_paths(0, wd).csv.read_bytes() == before
    assert put(server, 7, 2, version=out["row"]["version"])[0] == 200  # after the reload it goes through


def test_hand_edit_of_the_csv_is_seen_and_makes_the_page_stale(served):
    server, _oracle, wd = served
    old = row(server, 2)["version"]
    path = cycle_paths(0, wd).csv
    lines = path.read_text().splitlines()
    lines[2] = lines[2] + "pneumonia"                   # a person types a class name in a spreadsheet
    path.write_text("\n".join(lines) + "\n")
    assert row(server, 2)["label"] == 1
    assert put(server, 2, 0, version=old)[0] == 409


def test_broken_csv_is_reported_not_overwritten(served):
    server, _, wd = served
    path = cycle_paths(0, wd).csv
    path.write_text(path.read_text().replace("img_002.png", "img_999.png"))
    before = path.read_bytes()
    status, out = call(server, "/api/state")
    assert status == 422 and "id does not match index 2" in out["error"]
    assert put_raw(server, 7, 1)[0] == 422
    assert path.read_bytes() == before


def put_raw(server, index, label):
    return call(server, "/api/answer", {"index": index, "label": label, "version": "whatever"})


def test_failed_write_leaves_the_csv_whole(served, monkeypatch):
    server, _, wd = served
    from boostmis_jax import fsutil

    path = cycle_paths(0, wd).csv
    before = path.read_bytes()
    v = row(server, 7)["version"]

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fsutil.os, "replace", boom)
    status, out = call(server, "/api/answer", {"index": 7, "label": 1, "version": v})
    assert status == 500 and "unchanged" in out["error"]
    assert path.read_bytes() == before
    left = sorted(p.name for p in path.parent.iterdir() if p.name != ".annotate.lock")  # the writers' lock
    assert left == ["cycle_0", "cycle_0.csv", "cycle_0.json", "cycle_0.png"]


def test_serves_only_its_page_and_the_query_images(served):
    server, _, wd = served
    status, page = call(server, "/")
    assert status == 200 and b"BoostMIS annotation" in page and b"__NONCE__" not in page
    status, png = call(server, "/img/1.png")
    assert status == 200 and png == cycle_paths(0, wd).image(1).read_bytes()
    for path in ["/img/3.png", "/img/01.png.bak", "/img/../cycle_0.csv", "/queries/cycle_0.csv",
                 "/static/index.html", "/%2e%2e/oracle.py", "/api/nothing", "/img/-1.png"]:
        assert call(server, path)[0] == 404, path


def test_page_has_a_nonce_csp(served):
    server = served[0]
    host, port = server.server_address[:2]
    with urllib.request.urlopen(f"http://{host}:{port}/?token={TOKEN}", timeout=30) as r:
        csp = r.headers["Content-Security-Policy"]
        body = r.read().decode()
        assert r.headers["Cache-Control"] == "no-store" and r.headers["Referrer-Policy"] == "no-referrer"
    nonce = csp.split("'nonce-")[1].split("'")[0]
    assert f'<script nonce="{nonce}">' in body and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp
    assert "https://" not in body and "http://" not in body  # nothing fetched from elsewhere


def test_finish_needs_then_train_and_every_answer(tmp_path):
    _write(tmp_path)
    server = make_server(tmp_path, port=0, token=TOKEN, then_train=True)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        status, out = call(server, "/api/finish", {})
        assert status == 409 and "label is empty" in out["error"] and not server.finished.is_set()
        for index, label in [(7, 0), (2, 1), (11, 2)]:
            assert put(server, index, label)[0] == 200
        assert call(server, "/api/finish", {})[0] == 200
        t.join(timeout=60)
        assert server.finished.is_set() and not t.is_alive()  # the server stopped itself
    finally:
        if t.is_alive():
            server.shutdown()
        server.server_close()


def test_finish_without_then_train_is_refused(served):
    server = served[0]
    status, out = call(server, "/api/finish", {})
    assert status == 400 and "--then-train" in out["error"]


def test_annotator_refuses_a_workdir_without_queries(tmp_path):
    with pytest.raises(UserError, match="no cycle_N.csv to annotate; run the main command"):
        Annotator(tmp_path)
    _write(tmp_path)
    with pytest.raises(UserError, match="cycle_4.csv: no such file"):
        Annotator(tmp_path, cycle=4)


def test_annotator_refuses_stale_version_directly(tmp_path):
    _write(tmp_path)
    a = Annotator(tmp_path)
    with pytest.raises(ApiError) as e:
        a.answer(7, 1, "not-the-version")
    assert e.value.status == 409


def test_features_without_images(tmp_path):
    _write(tmp_path, images=False)
    a = Annotator(tmp_path)
    assert a.state()["has_images"] is False


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT))


def test_cli_bad_workdir_is_one_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "boostmis_jax.annotate", "--workdir", str(tmp_path), "--port", "0"],
                       capture_output=True, text=True, timeout=120, env=_env(), check=False)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and p.stderr.startswith("error: ")
    assert "Traceback" not in p.stderr


def test_server_does_not_import_jax():
    code = "import sys, boostmis_jax.annotate.__main__, boostmis_jax.annotate.server; print('jax' in sys.modules)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=_env(),
                       check=True)
    assert p.stdout.strip() == "False"


def test_cli_then_train_runs_the_recorded_command(tmp_path):
    wd = tmp_path / "wd"
    marker = tmp_path / "trained.txt"
    _write(wd, command=[sys.executable, "-c", "import os; open('trained.txt', 'w').write(os.getcwd())"],
           cwd=str(tmp_path))
    p = subprocess.Popen([sys.executable, "-m", "boostmis_jax.annotate", "--workdir", str(wd), "--port", "0",
                          "--then-train"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        url = ""
        for line in p.stdout:
            if line.startswith("open "):
                url = line.split()[1]
                break
        assert url.startswith("http://127.0.0.1:") and "token=" in url
        base, token = url.split("/?token=")

        def post(path, body):
            req = urllib.request.Request(f"{base}{path}?token={token}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read())

        with urllib.request.urlopen(f"{base}/api/state?token={token}", timeout=30) as r:
            rows = json.loads(r.read())["rows"]
        for r, label in zip(rows, [2, 0, 1]):
            post("/api/answer", {"index": r["index"], "label": label, "version": r["version"]})
        assert not marker.exists()
        post("/api/finish", {})
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    assert "continuing training" in out and "all 3 queries of cycle 0 answered" in out
    assert marker.read_text() == str(tmp_path)  # ran in the recorded directory
    assert FilesOracle(3, CLASSES, None).answer(0, _queries(), wd) == {7: 2, 2: 0, 11: 1}


WORKER = """
import sys, time
from pathlib import Path
from boostmis_jax.annotate.server import Annotator, row_version
wd, part, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
a = Annotator(wd, 0)
mine = [int(q.index) for q in a.queries][part::2]
print("ready", flush=True)
while not go.exists():
    time.sleep(0.001)
for idx in mine:
    a.answer(idx, idx % 3, row_version(0, idx, None))  # returns only once written: acknowledged
print("done", flush=True)
"""


def test_two_processes_on_one_workdir_lose_no_acknowledged_answer(tmp_path):
    """Two annotate processes (two pages) write different rows of one CSV at the same moment: every
    acknowledged answer is in the file (a read-check-write under a thread lock alone lost 26 of 60)."""
    queries = [Query(index=i, id=f"img_{i:03d}.png", selector="aus", score=0.5, predicted=0)
               for i in range(60)]
    FilesOracle(3, CLASSES, None, command=["true"], cwd=str(tmp_path)).answer(0, queries, tmp_path)
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), str(part), str(go)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for part in (0, 1)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
    go.touch()
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and "done" in out, err
    answers = FilesOracle(3, CLASSES, None).answer(0, queries, tmp_path)
    assert answers == {i: i % 3 for i in range(60)}
