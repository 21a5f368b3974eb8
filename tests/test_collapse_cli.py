"""`ncsearch collapse` end to end on a tiny saved model over the GAP mirror (gender vs random subset)."""

from __future__ import annotations

import json
import math

from ncsearch.cli import main


def test_collapse_command_writes_table_and_json(tiny_mlm, tmp_path, data_root, capsys):
    model, tok = tiny_mlm
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    out = tmp_path / "nc.json"
    code = main(["collapse", str(tmp_path / "model"), "--max-sentences", "150", "--bootstrap", "30",
                 "--data-dir", str(data_root), "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "NC1 CDNV" in printed and "gender" in printed and "random" in printed
    result = json.loads(out.read_text())
    assert result["sentences"] == 150
    gender, random = result["subsets"]["gender"], result["subsets"]["random"]
    assert gender["size"] == random["size"] > 50  # same-size control
    assert not set(gender["words"]) & {"[CLS]", "[SEP]", "[PAD]"}
    for subset in (gender, random):
        assert subset["classes_analysed"] >= 5
        m, ci = subset["metrics"], subset["ci95"]
        assert m["nc1"] > 0 and 0 <= m["nc4"] <= 1 and 0 <= m["nc3"] <= 2 and m["unc3"] > 0
        for key in ("nc1", "nc2_equinorm", "nc2_equiangular", "nc3", "unc3", "nc4"):
            lo, hi = ci[key]
            assert lo is not None and lo <= hi, key
        assert ci["nc2_cos_mean"] == [None, None]  # deliberately no interval (see _metrics docstring)
        assert not math.isnan(m["nc2_cos_mean"])


def test_collapse_command_rejects_bad_numbers_with_exit_2(capsys):
    assert main(["collapse", "some-model", "--max-sentences", "0"]) == 2
    assert "--max-sentences must be positive, but got 0" in capsys.readouterr().err
