"""Run manifests (`jaxnorm.manifests`): `verify` checks each file a run folder's run.json
lists before it is read (changed, truncated, missing or not part of the run), and reads a
folder without run.json, as earlier versions wrote, with a warning. The manifest's part
in replacing a folder: test_runfolder.py."""

import pytest

from jaxnorm import manifests, runfolder


def test_verify_finds_a_changed_a_truncated_and_a_missing_file(tmp_path):
  staging = runfolder.begin(tmp_path)
  staging.write("results.npz", b"0123456789")
  staging.write("summary.json", b"{}")
  staging.commit({})
  manifests.verify(tmp_path, ("results.npz", "summary.json"))
  (tmp_path / "results.npz").write_bytes(b"01234")
  with pytest.raises(runfolder.RunFolderError, match="truncated"):
    manifests.verify(tmp_path, ("results.npz",))
  (tmp_path / "summary.json").write_bytes(b"[]")  # same size, other bytes
  with pytest.raises(runfolder.RunFolderError, match="changed"):
    manifests.verify(tmp_path, ("summary.json",))
  with pytest.raises(runfolder.RunFolderError, match="not part of the run"):
    manifests.verify(tmp_path, ("variables_none.msgpack",))
  (tmp_path / "summary.json").unlink()
  with pytest.raises(runfolder.RunFolderError, match="missing"):
    manifests.verify(tmp_path, ("summary.json",))


def test_a_folder_without_manifest_is_read_unchecked_with_a_warning(tmp_path):
  (tmp_path / "results.npz").write_bytes(b"anything")
  with pytest.warns(manifests.UncheckedWarning, match="read unchecked"):
    manifests.verify(tmp_path, ("results.npz",))
  (tmp_path / manifests.MANIFEST).write_text("not json")
  with pytest.raises(runfolder.RunFolderError, match="not a run manifest"):
    manifests.verify(tmp_path, ("results.npz",))
