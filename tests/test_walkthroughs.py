"""The shell walkthroughs of README.md and docs/*.md, run as written (issue 20, item 6), so that the
README cannot break again.

A walkthrough is an indented block right after ``<!-- walkthrough: NAME -->`` (or
``<!-- walkthrough: NAME after=OTHER -->``: it goes on in OTHER's folder, after it). Each chain runs
with bash in an empty temporary folder whose ``.venv/bin/humwatch`` is this checkout's humwatch,
in a process group of its own (what it leaves running in the background, `serve &` and `listen &`,
is ended with the group), with only the environment variables the text names (a free port through
``HUMWATCH_PORT`` and ``HUMWATCH_SERVER``). A block a user types that CI cannot run (downloaded
weights or data, minutes of work) is marked ``<!-- walkthrough-skip: WHY -->``; an unmarked one
fails the first test here.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from service_fixtures import env_with_src, free_port

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARK = re.compile(r"^<!--\s*walkthrough(-skip)?:\s*(.*?)\s*-->\s*$")
TYPED = (".venv/bin/", "bash scripts/")
"""How a block a user types starts in these docs."""


@dataclass
class Block:
    doc: Path
    line: int  # 1-based line of the block's first line
    text: str
    mark: tuple[str, str] | None  # ("walkthrough" | "walkthrough-skip", its words), or None

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    """Every indented (4 spaces) block of a Markdown file, with the marker on the nearest non-blank
    line above it, if that line is one."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        if lines[i].startswith("    ") and (i == 0 or not lines[i - 1].strip()):
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            body = [ln[4:] for ln in lines[i:j]]
            while body and not body[-1].strip():
                body.pop()
            k = i - 1
            while k >= 0 and not lines[k].strip():
                k -= 1
            m = MARK.match(lines[k]) if k >= 0 else None
            mark = (("walkthrough-skip" if m.group(1) else "walkthrough"), m.group(2)) if m else None
            found.append(Block(doc, i + 1, "\n".join(body) + "\n", mark))
            i = j
        else:
            i += 1
    return found


def walkthroughs() -> dict[str, tuple[Block, str | None]]:
    """NAME -> (its block, the walkthrough it goes on from)."""
    out = {}
    for doc in DOCS:
        for b in blocks(doc):
            if b.mark and b.mark[0] == "walkthrough":
                name, _, after = b.mark[1].partition(" after=")
                assert name not in out, f"{b.where}: a second walkthrough named {name!r}"
                out[name] = (b, after.strip() or None)
    return out


def test_every_block_a_user_types_is_run_here_or_says_why_not():
    unmarked = [b.where for doc in DOCS for b in blocks(doc) if b.text.startswith(TYPED) and b.mark is None]
    assert not unmarked, f"mark these <!-- walkthrough: NAME --> (run by this test) or <!-- walkthrough-skip: WHY -->: {unmarked}"
    found = walkthroughs()
    assert "service" in found and found["service"][0].doc.name == "README.md"
    for b, after in found.values():
        assert after is None or after in found, f"{b.where}: after={after}: no such walkthrough"
    skips = [b for doc in DOCS for b in blocks(doc) if b.mark and b.mark[0] == "walkthrough-skip"]
    assert all(b.mark[1] for b in skips), [b.where for b in skips if not b.mark[1]]


def chain(name: str) -> list[Block]:
    """The walkthrough ``name`` and the ones that go on from it (and from those), in order."""
    found = walkthroughs()
    order, todo = [], [name]
    while todo:
        current = todo.pop(0)
        order.append(found[current][0])
        todo += [n for n, (_, after) in found.items() if after == current]
    return order


@pytest.fixture
def shell(tmp_path):
    """Run blocks in ``tmp_path`` (its own .venv/bin/humwatch), in one process group; ended after."""
    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    launcher = venv_bin / "humwatch"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m humwatch.cli "$@"\n')
    launcher.chmod(0o755)
    port = free_port()
    env = {
        **env_with_src(),
        "HUMWATCH_PORT": str(port),
        "HUMWATCH_SERVER": f"http://127.0.0.1:{port}",
        "XDG_STATE_HOME": str(tmp_path / ".state"),
    }  # the listener's default spool: not the real home's
    env.pop("HUMWATCH_TOKEN", None)
    log = tmp_path / ".walkthrough.log"
    groups: list[int] = []  # one process group per block

    def run(block: Block, timeout: float = 600) -> None:
        script = tmp_path / f".block-{block.line}.sh"
        script.write_text(block.text)
        with open(log, "a") as out:
            out.write(f"\n==> {block.where}\n")
            out.flush()
            # not a pipe: `serve &` and `listen &` outlive the script and would hold a pipe open
            proc = subprocess.Popen(
                ["bash", "-e", str(script)], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        groups.append(proc.pid)
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            rc = None
        assert rc == 0, f"{block.where}: exit status {rc}\n{log.read_text()[-6000:]}"

    run.port, run.log, run.dir = port, log, tmp_path
    yield run
    for pgid in reversed(groups):
        for sig, pause in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + pause
            while time.monotonic() < deadline and _group_alive(pgid):
                time.sleep(0.2)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def test_the_readme_service_walkthrough_opens_an_alert_from_the_anomalous_clips(shell):
    service, *rest = chain("service")
    shell(service)
    token_file = shell.dir / "token.txt"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600  # readable by its owner only
    token = token_file.read_text().strip()
    api = httpx.Client(base_url=f"http://127.0.0.1:{shell.port}", headers={"authorization": f"Bearer {token}"}, timeout=30)
    names = {f"1-normal-0000000{k}.wav" for k in range(5)} | {f"2-abnormal-0000000{k}.wav" for k in range(6)}
    rows, alerts, deadline = [], [], time.monotonic() + 300  # serve loads and warms up its monitor meanwhile
    while time.monotonic() < deadline:
        try:
            rows = api.get("/api/v1/machines/fan-00/scores", params={"limit": 100}).json().get("items", [])
            alerts = api.get("/api/v1/alerts", params={"state": "all", "machine": "fan-00"}).json().get("items", [])
        except httpx.HTTPError:
            pass
        if {r["filename"] for r in rows} == names and alerts:
            break
        time.sleep(1.0)
    log = shell.log.read_text()[-6000:]
    assert {r["filename"] for r in rows} == names, log  # every clip, each once, under its own name
    assert alerts and alerts[0]["machine"] == "fan-00", log
    flagged = {r["filename"] for r in rows if r["decision"] == "anomalous"}
    assert len(flagged & {n for n in names if "abnormal" in n}) >= 3, rows
    for block in rest:  # docs/service.md's tokens, in the same folder with the server running
        shell(block, timeout=300)
    if any(b.doc.name == "service.md" for b in rest):
        viewer = (shell.dir / "viewer-token.txt").read_text().strip()
        assert stat.S_IMODE((shell.dir / "viewer-token.txt").stat().st_mode) == 0o600
        r = httpx.get(f"http://127.0.0.1:{shell.port}/api/v1/machines", headers={"authorization": f"Bearer {viewer}"})
        assert r.status_code == 401  # revoked by the walkthrough's last line
        assert "viewer\tread" in shell.log.read_text()  # token list showed it


def test_token_create_out_writes_a_file_only_its_owner_reads_and_never_a_token_nobody_has(tmp_path, capsys):
    from humwatch.cli import main
    from humwatch.service.auth import list_tokens
    from humwatch.service.store import Store, default_db_url

    monitors = tmp_path / "monitors"
    monitors.mkdir()
    old_umask = os.umask(0o022)  # the usual one: without care the file would be 0644
    try:
        with pytest.raises(SystemExit) as e:
            main(["token", "create", "plant", "--scope", "ingest,read", "--monitors", str(monitors), "--out", str(tmp_path / "token.txt")])
    finally:
        os.umask(old_umask)
    out, err = capsys.readouterr()
    token_file = tmp_path / "token.txt"
    assert e.value.code == 0 and out == "" and "written to" in err  # not on the terminal
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text()
    assert token.endswith("\n") and len(token.strip()) > 40
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".token.txt")]  # no temporary left
    refused = [
        (["--out", str(token_file)], "exists already"),  # another token's file is never replaced
        (["--out", str(token_file / "under-a-file.txt")], "cannot write it"),
        (["--out", str(monitors)], "exists already"),
    ]
    for args, words in refused:
        with pytest.raises(SystemExit) as e:
            main(["token", "create", "second", "--monitors", str(monitors), *args])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error: ") and words in err and "Traceback" not in err, err
    assert token_file.read_text() == token
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if not os.access(ro, os.W_OK):  # (root can write anywhere)
            with pytest.raises(SystemExit) as e:
                main(["token", "create", "third", "--monitors", str(monitors), "--out", str(ro / "t.txt")])
            assert e.value.code == 2 and "cannot write it" in capsys.readouterr().err
    finally:
        ro.chmod(0o700)
    store = Store(default_db_url(monitors))
    try:
        assert [t["name"] for t in list_tokens(store)] == ["plant"]  # the refused ones made no token
    finally:
        store.close()
