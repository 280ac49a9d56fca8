"""Atomic writes: the target is either the old file or the new one, and failures propagate."""
import json

import pytest

from pada_fast.files import write_atomic, write_json_atomic, write_text_atomic


def test_failed_write_keeps_the_old_file_and_raises(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"a": 1})

    def broken(handle):
        handle.write('{"half": ')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, broken)
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]      # no temporary file left


def test_unserialisable_json_raises_instead_of_passing_silently(tmp_path):
    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "x.json", {"bad": object()})
    assert not (tmp_path / "x.json").exists()


def test_text_write_creates_the_folder(tmp_path):
    write_text_atomic(tmp_path / "a" / "b.txt", "hello\n")
    assert (tmp_path / "a" / "b.txt").read_text() == "hello\n"
