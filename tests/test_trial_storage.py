"""Trials' checkpoints and evaluation folders in a storage path that may be remote (`trial_storage`)."""

from __future__ import annotations

import json

import pytest

from ncsearch._eval_store import local_eval_dir, read_eval, write_eval
from ncsearch.config import parse_spec
from ncsearch.errors import ConfigError
from ncsearch.paths import trial_storage_path

SPEC = {"name": "t", "objectives": [{"metric": "stereoset/gender/icat", "mode": "max"},
                                    {"metric": "perplexity/pppl", "mode": "min"}]}


def _eval_folder(folder):
    return write_eval(folder, metrics={"stereoset/gender/icat": 71.5}, intervals={"stereoset/gender/icat": (70.0, 73.0)},
                      details={}, identity={"trial_id": "abc"})


def test_trial_storage_takes_folders_and_known_uris_only():
    assert parse_spec({**SPEC, "trial_storage": "s3://bucket/prefix/"}).trial_storage == "s3://bucket/prefix"
    assert parse_spec({**SPEC, "trial_storage": "/mnt/nfs/ncsearch"}).trial_storage == "/mnt/nfs/ncsearch"
    assert parse_spec(SPEC).trial_storage is None
    with pytest.raises(ConfigError, match=r"trial_storage: unsupported scheme 'ftp'; use a folder or one of: s3://"):
        parse_spec({**SPEC, "trial_storage": "ftp://host/x"})


def test_each_trial_has_its_own_storage_path(tmp_path):
    assert trial_storage_path("gs://b/p/", "alpha", "t1") == "gs://b/p/alpha/trials/t1"
    assert trial_storage_path(str(tmp_path), "alpha", "t1") == str(tmp_path / "alpha" / "trials" / "t1")


def test_a_local_evaluation_folder_is_linked_not_copied(tmp_path):
    source = _eval_folder(tmp_path / "trials" / "t1" / "train" / "checkpoint_000004" / "eval")
    shown = local_eval_dir(str(source), tmp_path / "trials" / "t1" / "eval")
    assert shown.is_symlink() and shown.resolve() == source.resolve()
    assert read_eval(shown).metrics == {"stereoset/gender/icat": 71.5}
    assert local_eval_dir(str(source), shown) == shown  # again: nothing to do


def test_a_remote_evaluation_folder_is_copied_through_pyarrow_once(tmp_path):
    source = _eval_folder(tmp_path / "bucket" / "checkpoint_000004" / "eval")
    uri = f"file://{source}"  # a URI: read through pyarrow's filesystem, as s3:// or gs:// would be
    copy = local_eval_dir(uri, tmp_path / "run" / "trials" / "t1" / "eval")
    assert not copy.is_symlink() and read_eval(copy).intervals == {"stereoset/gender/icat": (70.0, 73.0)}
    assert json.loads((copy / "identity.json").read_text()) == {"trial_id": "abc"}
    (source / "metrics.json").write_text("{}")  # the copy is complete: it is not fetched again
    assert read_eval(local_eval_dir(uri, copy)).metrics == {"stereoset/gender/icat": 71.5}
