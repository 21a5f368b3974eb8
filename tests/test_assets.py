"""Folders shipped through Ray's object store to nodes that lack them (`ncsearch._assets`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ncsearch._assets import ShippedFolder, folder_digest


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _model_like(folder: Path) -> Path:
    (folder / "prefix").mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "bert"}')
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (folder / "prefix" / "prefix.pt").write_bytes(b"\x00\x01" * 10)
    return folder


def test_a_node_with_the_same_folder_uses_it_in_place(ray_local, tmp_path):
    shipped = ShippedFolder.put(_model_like(tmp_path / "model"))
    assert shipped.local_path(cache=tmp_path / "cache") == str((tmp_path / "model").resolve())
    assert not (tmp_path / "cache").exists()


def test_a_node_without_the_folder_unpacks_the_shipped_copy_once(ray_local, tmp_path):
    import ray

    source = _model_like(tmp_path / "model")
    shipped = dataclasses.replace(ShippedFolder.put(source), path=str(tmp_path / "elsewhere" / "model"))

    @ray.remote(num_cpus=0)
    def on_a_worker(folder: ShippedFolder, cache: str) -> str:  # the ref travels inside the dataclass
        return folder.local_path(cache=Path(cache))

    copy = Path(ray.get(on_a_worker.remote(shipped, str(tmp_path / "cache"))))
    assert copy.parent == tmp_path / "cache" / "shipped" and copy.name == shipped.digest
    assert _files(copy) == _files(source)
    assert shipped.local_path(cache=tmp_path / "cache") == str(copy)  # unpacked once, then reused
    assert [p.name for p in (tmp_path / "cache" / "shipped").iterdir()] == [shipped.digest]  # no scratch left


def test_a_node_whose_folder_differs_gets_the_drivers_copy(ray_local, tmp_path):
    source = _model_like(tmp_path / "model")
    shipped = ShippedFolder.put(source)
    (source / "config.json").write_text('{"model_type": "bert", "stale": true}')  # this node's copy changed
    assert folder_digest(source) != shipped.digest
    copy = Path(shipped.local_path(cache=tmp_path / "cache"))
    assert copy != source and (copy / "config.json").read_text() == '{"model_type": "bert"}'
