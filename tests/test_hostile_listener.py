"""`humwatch listen` against what can stop a listener for good (issue 18, item 6): a folder whose name
is not URL-safe, a damaged sidecar, every kind of refusal a server or a proxy can answer, a sender
thread that dies. Each case: no traceback, no hang, nothing lost (a refused clip is set aside with
its reason, never deleted)."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

import httpx
import pytest
from service_fixtures import LiveServer, env_with_src, make_token, write_clip

from humwatch.service.listen import FolderSource, ListenError, ListenSettings, Sender, Spool, listen

T0 = dt.datetime(2030, 3, 1, tzinfo=dt.timezone.utc)


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


class FakeService:
    """A stand-in server on 127.0.0.1 that answers each machine as its name says: ``ok...`` a
    stored clip (the service's JSON), ``html`` a 200 web page (a proxy's), ``code-NNN`` status NNN
    (``code-302`` with a Location). It records the raw path of every request."""

    def __init__(self):
        self.paths: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length") or 0))
                outer.paths.append(self.path)
                parts = urllib.parse.urlsplit(self.path).path.split("/")
                machine = urllib.parse.unquote(parts[-2]) if len(parts) >= 6 else ""
                if machine.startswith("ok") or machine not in ("html",) and not machine.startswith("code-"):
                    self._answer(
                        200,
                        "application/json",
                        json.dumps(
                            {
                                "clip_id": len(outer.paths),
                                "machine": machine,
                                "score": 1.0,
                                "threshold": 2.0,
                                "decision": "normal",
                                "duplicate": False,
                                "alert_opened": False,
                            }
                        ),
                    )
                elif machine == "html":
                    self._answer(200, "text/html", "<html><body>Sign in to the plant network</body></html>")
                else:
                    code = int(machine[5:])
                    self._answer(
                        code,
                        "application/json",
                        json.dumps({"detail": f"refused with {code}"}),
                        {"location": "https://elsewhere.example/"} if 300 <= code < 400 else {},
                    )

            def _answer(self, code, ctype, body, headers=None):
                data = body.encode()
                self.send_response(code)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake():
    server = FakeService()
    yield server
    server.close()


def sender_for(url, spool, **kw) -> Sender:
    return Sender(ListenSettings(server=url, spool=str(spool.root), retry_max=0.5, **kw).validate(), "hw_t", spool)


def test_every_answer_is_sorted_into_sent_set_aside_held_or_retried(fake, tmp_path):
    spool = Spool(tmp_path / "spool")
    clip = write_clip(tmp_path / "c.wav")
    sender = sender_for(fake.url, spool)
    expected = {
        "ok-1": "sent",
        "html": "retry",
        "code-302": "hold",
        "code-401": "hold",
        "code-403": "hold",
        "code-400": "rejected",
        "code-404": "rejected",
        "code-405": "rejected",
        "code-409": "rejected",
        "code-413": "rejected",
        "code-415": "rejected",
        "code-422": "rejected",
        "code-408": "retry",
        "code-429": "retry",
        "code-500": "retry",
        "code-502": "retry",
        "code-503": "retry",
    }
    got, errors = {}, {}
    with httpx.Client(timeout=10) as client:
        for machine in expected:
            got[machine] = sender.send(client, spool.put_file(clip, machine, T0))
            errors[machine] = sender.last_error
    assert got == expected
    assert "refused with 405" in errors["code-405"] and errors["code-405"].startswith("HTTP 405")
    assert "--server" in errors["html"] and "elsewhere.example" in errors["code-302"]
    down = sender_for("http://127.0.0.1:9", spool)  # nothing listens there
    with httpx.Client(timeout=5) as client:
        assert down.send(client, spool.put_file(clip, "ok-2", T0)) == "retry"


def test_machine_names_are_quoted_into_the_url(fake, tmp_path):
    spool = Spool(tmp_path / "spool")
    clip = write_clip(tmp_path / "c.wav")
    sender = sender_for(fake.url, spool)
    names = ["bad?x", "a#b", "50%", "two words", "a/b", "wärme-pumpe", "..", "ok&x=1"]
    with httpx.Client(timeout=10) as client:
        for name in names:
            assert sender.send(client, spool.put_file(clip, name, T0)) == "sent", name
    for name, path in zip(names, fake.paths):
        split = urllib.parse.urlsplit(path)
        head, machine, tail = split.path.rsplit("/", 2)
        assert (head, tail) == ("/api/v1/machines", "clips"), path
        assert urllib.parse.unquote(machine) == name, path
        assert urllib.parse.parse_qs(split.query)["filename"] == ["c.wav"], path


def test_a_refused_clip_is_set_aside_with_its_reason_and_holds_up_no_one(fake, tmp_path):
    spool = Spool(tmp_path / "spool")
    bad = write_clip(tmp_path / "bad.wav", seed=1)
    spool.put_file(bad, "code-405", T0)  # the oldest: it used to be retried for ever, blocking the rest
    spool.put_file(write_clip(tmp_path / "good.wav", seed=2), "ok-1", T0)
    sender = sender_for(fake.url, spool)
    stop = threading.Event()
    thread = threading.Thread(target=sender.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: sender.sent == 1 and sender.rejected == 1, 20), (sender.sent, sender.rejected)
    finally:
        stop.set()
        thread.join(10)
    assert spool.pending() == []
    kept = sorted(p.name for p in spool.rejected_dir.iterdir())
    stem = kept[0].split(".")[0]
    assert kept == [f"{stem}.json", f"{stem}.reason.txt", f"{stem}.wav"]
    assert (spool.rejected_dir / f"{stem}.wav").read_bytes() == bad.read_bytes()  # kept whole, not deleted
    assert json.loads((spool.rejected_dir / f"{stem}.json").read_text())["machine"] == "code-405"
    assert (spool.rejected_dir / f"{stem}.reason.txt").read_text() == "HTTP 405: refused with 405\n"


@pytest.mark.parametrize(
    "sidecar",
    [
        '{"recorded_at": "2030-03-01T00:00:00+00:00", "filename": "x.wav"}',
        '{"machine": 7, "recorded_at": "2030-03-01T00:00:00+00:00"}',
        '["a", "list"]',
        '{"machine": "ok-1", "recorded_at":',
        "",
    ],
)
def test_a_damaged_sidecar_is_set_aside_and_the_sender_goes_on(fake, tmp_path, sidecar):
    spool = Spool(tmp_path / "spool")
    damaged = spool.put_file(write_clip(tmp_path / "a.wav", seed=3), "ok-1", T0)
    damaged.meta.write_text(sidecar)
    spool.put_file(write_clip(tmp_path / "b.wav", seed=4), "ok-2", T0)
    sender = sender_for(fake.url, spool)
    stop = threading.Event()
    thread = threading.Thread(target=sender.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: sender.sent == 1, 20)
        time.sleep(0.7)  # another round or two: the thread lives on
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(10)
    assert spool.pending() == [] and len(fake.paths) == 1
    assert (spool.rejected_dir / damaged.audio.name).read_bytes() == (tmp_path / "a.wav").read_bytes()
    assert (spool.rejected_dir / damaged.meta.name).read_text() == sidecar
    reason = (spool.rejected_dir / f"{damaged.audio.stem}.reason.txt").read_text()
    assert damaged.meta.name in reason


def test_a_dead_sender_ends_the_listener_with_one_error(fake, tmp_path):
    watch = tmp_path / "watch"
    watch.mkdir()
    spool = Spool(tmp_path / "spool")
    s = ListenSettings(server=fake.url, machine="ok-1", spool=str(spool.root), retry_max=0.5, settle=0.2).validate()
    sender = Sender(s, "hw_t", spool)
    stop, raised = threading.Event(), []

    def run():
        try:
            listen(FolderSource(watch, spool, s), sender, stop)
        except ListenError as e:
            raised.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    time.sleep(1.0)
    shutil.rmtree(spool.root)  # the sender's next look at the spool fails: it dies
    thread.join(20)
    assert not thread.is_alive(), "the listener went on without its sender"
    assert raised and "the sender stopped" in str(raised[0]) and "\n" not in str(raised[0])


def test_on_the_command_line_a_dead_sender_is_one_error_line_and_exit_2(fake, tmp_path):
    watch, spool = tmp_path / "watch", tmp_path / "spool"
    watch.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "humwatch.cli",
        "listen",
        "--server",
        fake.url,
        "--watch",
        str(watch),
        "--machine",
        "ok-1",
        "--spool",
        str(spool),
    ]
    proc = subprocess.Popen(
        cmd, env={**env_with_src(), "HUMWATCH_TOKEN": "hw_t"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert wait_for(lambda: (spool / "pending").is_dir(), 60)
        time.sleep(1.0)
        shutil.rmtree(spool)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 2, (out, err)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "the sender stopped" in errors[0], err
    assert "Traceback" not in out + err


def test_a_folder_named_bad_query_is_refused_by_the_service_and_the_others_go_on(service_monitors, tmp_path):
    from humwatch.service.store import default_db_url

    monitors = tmp_path / "monitors"
    shutil.copytree(service_monitors / "listen-2", monitors / "hostile-l1")  # a server and a machine of its own
    token = make_token(default_db_url(monitors), "pi", "ingest,read")
    server = LiveServer(monitors, tmp_path / "serve.log").start()
    watch, spool = tmp_path / "watch", tmp_path / "spool"
    bad = write_clip(watch / "bad?x" / "odd.wav", "normal", 90)
    write_clip(watch / "hostile-l1" / "first.wav", "normal", 91)
    cmd = [
        sys.executable,
        "-m",
        "humwatch.cli",
        "listen",
        "--server",
        server.url,
        "--watch",
        str(watch),
        "--existing",
        "--spool",
        str(spool),
    ]
    proc = subprocess.Popen(
        cmd, env={**env_with_src(), "HUMWATCH_TOKEN": token}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )

    def filenames():
        r = httpx.get(f"{server.url}/api/v1/machines/hostile-l1/scores", headers={"authorization": f"Bearer {token}"})
        return {row["filename"] for row in r.json()["items"]} if r.status_code == 200 else set()

    try:
        assert wait_for(lambda: "first.wav" in filenames(), 90)
        write_clip(watch / "hostile-l1" / "second.wav", "normal", 92)  # after the refusal: still sent
        ok = wait_for(lambda: "second.wav" in filenames() and len(list((spool / "rejected").glob("*.reason.txt"))) == 1, 90)
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
        server.stop()
    assert ok, out
    assert proc.returncode == 0 and "Traceback" not in out, out
    assert "sent 2 clip(s), 1 refused; 0 left in the spool" in " ".join(out.split()), out
    reason = next((spool / "rejected").glob("*.reason.txt"))
    assert reason.read_text().startswith("HTTP 422: machine")  # the service's own word: no monitor can have that name
    assert json.loads(next((spool / "rejected").glob("*.json")).read_text())["machine"] == "bad?x"
    assert next((spool / "rejected").glob("*.wav")).read_bytes() == bad.read_bytes()
