"""`humwatch token` on the command line; the service's files declared to ship; the dashboard's redirects."""

from __future__ import annotations

import pytest

from humwatch.cli import main


def run(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_token_create_list_revoke(tmp_path, capsys):
    from humwatch.service.auth import authenticate
    from humwatch.service.store import Store, default_db_url

    where = ["--monitors", str(tmp_path)]
    code, out, err = run(["token", "create", "plant-pi", "--scope", "ingest", *where], capsys)
    token = out.strip()
    assert code == 0 and token.startswith("hw_") and "not shown again" in err
    code, out, _ = run(["token", "create", "ops", "--scope", "read,admin", "--db", default_db_url(tmp_path)], capsys)
    assert code == 0
    store = Store(default_db_url(tmp_path))
    assert authenticate(store, token).scopes == {"ingest"}
    code, out, _ = run(["token", "list", *where], capsys)
    lines = [line.split("\t") for line in out.strip().splitlines()]
    assert [(x[0], x[1], x[3]) for x in lines] == [("plant-pi", "ingest", "active"), ("ops", "read,admin", "active")]
    assert token not in out
    assert run(["token", "revoke", "plant-pi", *where], capsys)[0] == 0
    assert authenticate(store, token) is None
    store.close()
    assert "revoked" in run(["token", "list", *where], capsys)[1].splitlines()[0]


@pytest.mark.parametrize(
    "args, words",
    [
        (["token", "create", "x"], "--monitors MONITORS"),
        (["token", "create", "x", "--scope", "root", "--monitors", "{M}"], "choose from ingest, read, admin"),
        (["token", "revoke", "nobody", "--monitors", "{M}"], "no token named"),
        (["token", "create", "x", "--db", "mysql+nodriver://h/db"], "--db"),
    ],
)
def test_token_errors_are_one_line(args, words, tmp_path, capsys):
    code, _, err = run([a.replace("{M}", str(tmp_path)) for a in args], capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and words in err, err


def test_every_file_the_service_needs_is_declared_to_ship():
    """Templates, static files, the vendored libraries and the migrations' template are not Python
    modules: each must match a package-data pattern of pyproject.toml, or an installed humwatch
    would serve pages without them."""
    import fnmatch
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml with tomllib")
    root = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["humwatch"]
    pkg = root / "src" / "humwatch"
    files = [
        p.relative_to(pkg).as_posix()
        for p in (pkg / "service").rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    ]
    assert len(files) >= 15
    missing = [f for f in files if not any(fnmatch.fnmatchcase(f, pat) and f.count("/") == pat.count("/") for pat in patterns)]
    assert not missing, missing


def test_dashboard_redirects_only_to_its_own_pages():
    from humwatch.service.dashboard import _local_path

    assert _local_path("/alerts?state=open") == "/alerts?state=open"
    for target in ("//evil.example/x", "/\\evil.example", "https://evil.example", "", None, "alerts"):
        assert _local_path(target, "/") == "/"
