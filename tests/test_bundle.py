import json

import pytest

from ser.bundle import (
    MANIFEST_NAME,
    Bundle,
    BundleError,
    BundleWriter,
    Manifest,
    ModelInfo,
    graph_signature,
)


def _manifest() -> Manifest:
    inputs, outputs = graph_signature(3)
    return Manifest(
        model=ModelInfo("wavlm", "tiny", "WavLMForEmotion", 10),
        labels=("a", "b", "c"),
        sample_rate=16_000,
        precision="fp32",
        inputs=inputs,
        outputs=outputs,
        source={"kind": "random-init", "seed": 0},
        versions={"ser": "0"},
        validation={"passed": True},
    )


def _write(out, payload=b"graph bytes", overwrite=False) -> Bundle:
    with BundleWriter(out, overwrite=overwrite) as writer:
        (writer.dir / "model.onnx").write_bytes(payload)
        return writer.commit(_manifest())


def test_round_trip(tmp_path):
    written = _write(tmp_path / "b")
    loaded = Bundle.load(tmp_path / "b")
    assert loaded.manifest == written.manifest
    assert set(loaded.manifest.files) == {"model.onnx"}
    assert loaded.manifest.outputs[0].shape == ("batch", 3)
    assert (tmp_path / "b").stat().st_mode & 0o777 == 0o755


def test_the_id_names_the_files(tmp_path):
    first, same, other = _write(tmp_path / "a"), _write(tmp_path / "b"), _write(tmp_path / "c", b"other graph")
    assert len(first.id) == 16 and int(first.id, 16) >= 0
    assert first.id == same.id == Bundle.load(tmp_path / "a").id  # the same files, wherever the folder is
    assert other.id != first.id


def test_tampered_file_is_refused(tmp_path):
    _write(tmp_path / "b")
    (tmp_path / "b" / "model.onnx").write_bytes(b"graph bytez")
    with pytest.raises(BundleError, match=r"model\.onnx does not match its sha256"):
        Bundle.load(tmp_path / "b")


def test_missing_file_is_refused(tmp_path):
    _write(tmp_path / "b")
    (tmp_path / "b" / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"model\.onnx is listed in the manifest but missing"):
        Bundle.load(tmp_path / "b")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.pop("labels"), "lacks the field 'labels'"),
        (lambda m: m.update(format_version=99), "format_version 99 is not supported"),
        (lambda m: m.update(inputs=7), "malformed"),
    ],
)
def test_bad_manifest_is_refused(tmp_path, edit, message):
    _write(tmp_path / "b")
    path = tmp_path / "b" / MANIFEST_NAME
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError, match=message):
        Bundle.load(tmp_path / "b")


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="no such directory"):
        Bundle.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match=r"no manifest\.json"):
        Bundle.load(tmp_path / "empty")
    (tmp_path / "empty" / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        Bundle.load(tmp_path / "empty")


def test_interrupted_write_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt), BundleWriter(tmp_path / "b") as writer:
        (writer.dir / "model.onnx").write_bytes(b"half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_existing_bundle_needs_overwrite(tmp_path):
    _write(tmp_path / "b", b"first")
    with pytest.raises(BundleError, match="already exists"):
        _write(tmp_path / "b", b"second")
    _write(tmp_path / "b", b"second", overwrite=True)
    assert (tmp_path / "b" / "model.onnx").read_bytes() == b"second"
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no staging or old folders left behind
    Bundle.load(tmp_path / "b")


@pytest.mark.parametrize(
    ("labels", "reason"),
    [
        (["a", "b"], "2 labels for 3 logits"),
        (["a", "b", "c", "d"], "4 labels for 3 logits"),
        (["a", "b", "a"], "label 'a' is given twice (ids 0 and 2)"),
        (["a", "", "c"], "label 1 is empty"),
        (["a", 7, "c"], "label 1 is empty"),
    ],
)
def test_labels_must_name_the_logits_one_to_one(tmp_path, labels, reason):
    _write(tmp_path / "b")
    manifest = json.loads((tmp_path / "b" / MANIFEST_NAME).read_text())
    (tmp_path / "b" / MANIFEST_NAME).write_text(json.dumps({**manifest, "labels": labels}))
    with pytest.raises(BundleError, match="labels: " + reason.replace("(", r"\(").replace(")", r"\)")):
        Bundle.load(tmp_path / "b")


def test_canonical_labels_are_recorded_and_checked(tmp_path):
    _write(tmp_path / "b")
    path = tmp_path / "b" / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    assert manifest["canonical_labels"] == [None, None, None]
    path.write_text(json.dumps({**manifest, "labels": ["neu", "calm", "Angry"], "canonical_labels": []}))
    assert Bundle.load(tmp_path / "b").manifest.canonical_labels == ("neutral", None, "angry")
    path.write_text(json.dumps({**manifest, "canonical_labels": ["happy", "bored", None]}))
    with pytest.raises(BundleError, match="canonical_labels must give one of angry"):
        Bundle.load(tmp_path / "b")


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "../b/model.onnx", "sub/model.onnx", "", ".."])
def test_files_outside_the_bundle_are_refused_by_name_alone(tmp_path, name):
    _write(tmp_path / "b")
    path = tmp_path / "b" / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "files": {**manifest["files"], name: "0" * 64}}))
    with pytest.raises(BundleError, match="is not a plain file name inside the bundle; refused"):
        Bundle.load(tmp_path / "b")


def test_whether_an_outside_file_exists_does_not_change_the_answer(tmp_path):
    """Nothing outside is read or hashed, so the refusal cannot tell an attacker what exists there."""
    _write(tmp_path / "b")
    (tmp_path / "x").write_text("outside")
    path = tmp_path / "b" / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    messages = []
    for name in ("../x", "../y"):  # ../x exists, ../y does not
        path.write_text(json.dumps({**manifest, "files": {**manifest["files"], name: "0" * 64}}))
        with pytest.raises(BundleError) as error:
            Bundle.load(tmp_path / "b")
        messages.append(str(error.value).replace(name, "NAME"))
    assert messages[0] == messages[1]


def test_links_that_leave_the_bundle_and_unlisted_files_are_refused(tmp_path):
    import os

    _write(tmp_path / "b")
    outside = tmp_path / "elsewhere.onnx"
    os.replace(tmp_path / "b" / "model.onnx", outside)
    (tmp_path / "b" / "model.onnx").symlink_to(outside)  # same bytes, same sha256: only the link is wrong
    with pytest.raises(BundleError, match=r"model\.onnx is a symbolic link that leaves the bundle folder"):
        Bundle.load(tmp_path / "b")

    _write(tmp_path / "c")
    (tmp_path / "c" / "model.onnx.data").write_bytes(b"weights nobody checked")
    with pytest.raises(BundleError, match=r"model\.onnx\.data is not in the manifest"):
        Bundle.load(tmp_path / "c")
    (tmp_path / "c" / "model.onnx.data").unlink()
    (tmp_path / "c" / "ort-tensorrt-cache").mkdir()  # the runtime's own engine cache is not the bundle's
    (tmp_path / "c" / "ort-tensorrt-cache" / "engine").write_bytes(b"cached")
    assert Bundle.load(tmp_path / "c").manifest.files.keys() == {"model.onnx"}
