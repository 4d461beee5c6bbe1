"""Listing a job's inputs: folders, globs, CSV and Parquet lists, locally and on a real S3-compatible server."""

import os
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ser.batch.storage import BatchError, Storage, glob_regex, list_inputs
from tests.batch.conftest import upload


def test_a_folder_lists_its_audio_files_each_once_smallest_first(clips):
    folder, good, bad = clips
    listed = list_inputs(str(folder), Storage())
    assert sorted(listed) == sorted([str(p.absolute()) for p in good] + list(bad))  # no .txt, no hidden file
    sizes = [os.path.getsize(p) for p in listed]
    assert sizes == sorted(sizes)  # neighbours have similar lengths: padded batches stay short
    assert list_inputs(str(good[0]), Storage()) == [str(good[0].absolute())]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("a/*.wav", lambda names: [n for n in names if n.startswith("a/") and n.endswith(".wav")]),
        ("*.wav", lambda names: []),  # `*` stays in its folder: nothing at the top
        ("**/*.flac", lambda names: [n for n in names if n.endswith(".flac")]),
        ("b/clip-00[0-4].*", lambda names: [n for n in names if re.fullmatch(r"b/clip-00[0-4]\..*", n)]),
    ],
)
def test_a_glob_matches_as_a_shell_would(clips, pattern, expected):
    folder, good, bad = clips
    names = sorted([p.relative_to(folder).as_posix() for p in good] + [f"bad/{n.rsplit('/', 1)[1]}" for n in bad])
    want = [str(folder / n) for n in expected(names)]
    if not want:
        with pytest.raises(BatchError, match="no audio files found"):
            list_inputs(f"{folder}/{pattern}", Storage())
    else:
        assert sorted(list_inputs(f"{folder}/{pattern}", Storage())) == sorted(want)


def test_glob_regex():
    assert re.fullmatch(glob_regex("x/**/y?.wav"), "x/y1.wav") and re.fullmatch(
        glob_regex("x/**/y?.wav"), "x/a/b/y1.wav"
    )
    assert not re.fullmatch(glob_regex("x/*.wav"), "x/a/y.wav")
    assert re.fullmatch(glob_regex("[!a]b"), "cb") and not re.fullmatch(glob_regex("[!a]b"), "ab")
    assert re.fullmatch(glob_regex("a+b(1).wav"), "a+b(1).wav")  # regex characters are literal


def test_a_list_names_files_relative_to_itself_keeps_its_order_and_drops_repeats(clips, tmp_path):
    folder, good, _ = clips
    entries = [str(good[3].relative_to(folder)), str(good[1].absolute()), str(good[3].relative_to(folder)), ""]
    (folder / "list.csv").write_text("path,speaker\n" + "".join(f"{e},x\n" for e in entries))
    expected = [str(good[3].absolute()), str(good[1].absolute())]
    assert list_inputs(str(folder / "list.csv"), Storage()) == expected
    pq.write_table(pa.table({"uri": entries}), folder / "list.parquet")
    assert list_inputs(str(folder / "list.parquet"), Storage()) == expected


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing", "no such file or folder"),
        (lambda d: (d / "l.csv").write_text("file,label\na.wav,x\n") and d / "l.csv", "needs a 'path' or 'uri' column"),
        (lambda d: (d / "l.parquet").write_bytes(b"PAR1 not really") and d / "l.parquet", "not a readable list"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "no audio files found"),
        (lambda d: "gs://bucket/x", "only local paths and s3:// URIs"),
    ],
)
def test_a_source_that_names_nothing_usable_is_refused_by_name(tmp_path, make, message):
    source = str(make(tmp_path))
    with pytest.raises(BatchError, match=re.escape(message)) as caught:
        list_inputs(source, Storage())
    assert source in str(caught.value)


def test_s3_folders_globs_and_lists(clips, s3):
    folder, good, bad = clips
    endpoint, client = s3
    upload(client, folder, "in")
    storage = Storage(s3_endpoint=endpoint)
    listed = list_inputs("s3://calls/in", storage)
    names = [p.relative_to(folder).as_posix() for p in good] + [f"bad/{n.rsplit('/', 1)[1]}" for n in bad]
    assert sorted(listed) == sorted(f"s3://calls/in/{n}" for n in names)
    assert list_inputs("s3://calls/in/a/*.wav", storage) == sorted(
        (u for u in listed if re.fullmatch(r"s3://calls/in/a/[^/]*\.wav", u)), key=listed.index
    )
    client.put_object(
        Bucket="calls", Key="lists/l.csv", Body=b"path\n../in/a/clip-001.wav\ns3://calls/in/b/clip-000.flac\n"
    )
    assert list_inputs("s3://calls/lists/l.csv", storage) == [
        "s3://calls/in/a/clip-001.wav",
        "s3://calls/in/b/clip-000.flac",
    ]
    with pytest.raises(BatchError, match="no such file or folder"):
        list_inputs("s3://calls/nothing-here", storage)
    assert storage.read("s3://calls/in/a/clip-001.wav", 1 << 20) == (folder / "a" / "clip-001.wav").read_bytes()
    with pytest.raises(ValueError, match="over the limit"):
        storage.read("s3://calls/in/a/clip-001.wav", 100)
