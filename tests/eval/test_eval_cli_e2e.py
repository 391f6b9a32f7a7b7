"""End to end: the harness drives the real `vs-hdrvid reconstruct`, on a fixture scene and on the
generator's micro preset through `vs-hdrvid synth` and `vs-hdrvid eval`."""
import json
import math

from eval_fixture import make_scene
from vs_hdrvid.cli import main
from vs_hdrvid.eval import evaluate


def test_reference_and_merge_through_real_cli(tmp_path):
    root = tmp_path / "synth"
    make_scene(root, "micro", "e2e", [-1.5, 1.5], frames=4)
    res = evaluate(root, "micro", ["reference", "merge"], tmp_path / "eval", cvvdp=False,
                   progress=False, device="cpu")
    assert res["failures"] == []
    for m in ("reference", "merge"):
        frames = res["scenes"]["e2e"]["methods"][m]["frames"]
        assert len(frames) == 4
        assert all(math.isfinite(f["psnr_mu"]) and f["psnr_mu"] > 10.0 for f in frames)
    assert (tmp_path / "eval" / "results.md").is_file()
    assert (tmp_path / "eval" / "crops.png").is_file()


def test_synth_then_eval_on_micro_preset(tmp_path):
    root, out = tmp_path / "synth", tmp_path / "eval"
    assert main(["synth", "--preset", "micro", "--root", str(root)]) == 0
    assert main(["eval", "--root", str(root), "--preset", "micro", "--methods", "reference,merge",
                 "--out", str(out), "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert len(res["scenes"]) == 2
    overall = res["groups"]["all"]["methods"]
    # the merge sees every exposure, the reference alone one: it must score higher overall
    assert overall["merge"]["psnr_mu"]["all"] > overall["reference"]["psnr_mu"]["all"]
    assert math.isfinite(overall["merge"]["jod"])
    assert "| merge |" in (out / "results.md").read_text()
