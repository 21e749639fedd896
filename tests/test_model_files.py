"""Model file lookup and the opt-in download (served from loopback only)."""

from __future__ import annotations

import hashlib
import http.server
import threading
from dataclasses import replace
from functools import partial

import pytest

from emoji_model.downloads import download_model_file
from emoji_model.errors import ModelFileError
from emoji_model.model_files import FACE_LANDMARKER, find_model_file, missing_message


@pytest.fixture
def fake_model(tmp_path):
    """A small stand-in file with its own checksum, so downloads are cheap."""
    payload = b"not really a task bundle " * 4000
    source = tmp_path / "served"
    source.mkdir()
    (source / "model.task").write_bytes(payload)
    model = replace(FACE_LANDMARKER, name="fake.task", sha256=hashlib.sha256(payload).hexdigest(), size=len(payload))
    return model, source, payload


@pytest.fixture
def loopback_server(fake_model):
    """An HTTP server on 127.0.0.1 serving the fake model's folder."""
    _, source, _ = fake_model
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(source))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join(timeout=5)


def test_download_verifies_checksum_and_reports_progress(fake_model, loopback_server, tmp_path):
    model, _, payload = fake_model
    seen = []
    path = download_model_file(
        model,
        tmp_path / "models",
        progress=lambda done, total: seen.append((done, total)),
        urls=[f"{loopback_server}/model.task"],
    )
    assert path == tmp_path / "models" / "fake.task"
    assert path.read_bytes() == payload
    assert seen[-1] == (len(payload), len(payload))
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_download_with_wrong_checksum_leaves_nothing_behind(fake_model, loopback_server, tmp_path):
    model, _, _ = fake_model
    wrong = replace(model, sha256="0" * 64)
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        download_model_file(wrong, tmp_path / "models", urls=[f"{loopback_server}/model.task"])
    assert list((tmp_path / "models").iterdir()) == []


def test_download_tries_the_next_source(fake_model, loopback_server, tmp_path):
    model, _, _ = fake_model
    path = download_model_file(
        model, tmp_path, urls=[f"{loopback_server}/missing.task", f"{loopback_server}/model.task"]
    )
    assert path.is_file()


def test_download_failure_names_every_source(fake_model, loopback_server, tmp_path):
    model, _, _ = fake_model
    with pytest.raises(ModelFileError) as info:
        download_model_file(model, tmp_path, urls=[f"{loopback_server}/a.task", f"{loopback_server}/b.task"])
    assert "a.task" in str(info.value) and "b.task" in str(info.value)


def test_explicit_path_must_exist(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        find_model_file(FACE_LANDMARKER, tmp_path / "nowhere.task")


def test_search_order_prefers_the_given_folders(tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        folder.mkdir()
        (folder / FACE_LANDMARKER.name).write_bytes(b"x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert find_model_file(FACE_LANDMARKER, search_dirs=[first, second]) == first / FACE_LANDMARKER.name
    monkeypatch.setenv("FYE_FACE_LANDMARKER", str(second / FACE_LANDMARKER.name))
    assert find_model_file(FACE_LANDMARKER) == second / FACE_LANDMARKER.name


def test_missing_message_says_which_file_where_and_how_to_get_it(tmp_path):
    message = missing_message(FACE_LANDMARKER, [tmp_path / "models" / "mediapipe"])
    assert FACE_LANDMARKER.name in message
    assert str(tmp_path / "models" / "mediapipe") in message
    assert FACE_LANDMARKER.urls[0] in message
    assert "--download" not in message and "download_if_missing" not in message  # each host adds its own switch
