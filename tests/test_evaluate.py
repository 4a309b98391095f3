"""evaluate.py end to end on a tiny random world model over real block-world shards (generate -> preprocess),
the baselines' bookkeeping (a copy-last-frame "model" scores exactly the copy baseline, a ground-truth
"model" scores perfectly), the stability checks on constructed rollouts, and bench/run_all.py."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import eval_inputs as EI
import evaluate as E
import metrics as M
from actions import RAW, make_raw, noop
from test_rollout import tiny_configs


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # Tiny ops: one thread is faster, and much faster on a busy shared 2-core machine.
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    """(world model checkpoint, VQ-VAE checkpoint, shard folder, block-world folder): 3 block-world episodes
    of 1.5 s through the real generator and preprocess.py; a tiny VQ-VAE whose codebook is k-means
    initialised on those frames (so tokens follow the image: a random codebook maps every frame to the
    same code) and a randomly initialised tiny world model that records a 1-in-3 validation split."""
    import preprocess
    from blockworld.generate import GenerateConfig, write_episode
    from model_convGru import WorldModel
    from video_io import read_frames
    from vq_vae import VQVAE, save_vqvae
    from world_model_io import save_world_model

    from actions import ActionEncoding

    d = tmp_path_factory.mktemp("eval")
    gen = GenerateConfig(out=str(d / "bw"), episodes=3, seconds=1.5, seed=4)
    for part in range(3):
        write_episode(gen, part)
    wm_cfg, vq_cfg = tiny_configs(codebook_size=32, kmeans_iters=5)
    torch.manual_seed(0)
    vq = VQVAE(vq_cfg).train()
    frames = np.concatenate([read_frames(p) for p in sorted((d / "bw" / "video").glob("*.mp4"))])
    with torch.no_grad():
        vq.quantizer(vq.encoder(vq.preprocess(frames)))
    vq.eval()
    vq_path = d / "vqvae.pt"
    ident = save_vqvae(vq, vq_path)
    wm_path = d / "world_model.pt"
    save_world_model(wm_path, WorldModel(wm_cfg, codebook=vq.codebook), ActionEncoding(), str(vq_path), ident,
                     {"val_fraction": 0.34, "seed": 0, "data": str(d / "shards")}, step=0)
    preprocess.run(preprocess.PreprocessConfig(data=str(d / "bw"), vqvae=str(vq_path), out=str(d / "shards"),
                                               skip_start_seconds=0.0, device="cpu", workers=0))
    return wm_path, vq_path, d / "shards", d / "bw"


QUICK_ARGS = ["--quick", "--context", "3", "--counterfactual-frames", "4", "--stability-seconds", "1",
              "--judge-steps", "3", "--device", "cpu"]


def test_quick_cli_end_to_end(tiny_setup, tmp_path, capsys):
    wm, _, shards, _ = tiny_setup
    out = tmp_path / "report"
    assert E.main(["--model", str(wm), "--data", str(shards), "--out", str(out), *QUICK_ARGS]) == 0
    assert "evaluation report:" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    for name in ("fidelity.png", "controllability.png", "stability.png", "counterfactuals.png"):
        assert (out / name).stat().st_size > 1000, name
    assert report["videos"] and all(Path(v).is_file() for v in report["videos"])
    fid = report["fidelity"]["tables"]
    assert set(fid) == {"model", "model_noop_actions", "model_random_actions", "copy"}
    assert set(fid["model"]) == {"psnr", "ssim", "lpips", "psnr_changed", "lpips_changed"}
    assert set(fid["model"]["psnr"]) == {"1", "4", "16"}
    # Copying the last frame is perfect outside the changed region, so pasting the truth there changes nothing
    # for it; its changed-region PSNR can only be lower than its whole-frame PSNR.
    changed = fid["copy"]["psnr_changed"]["16"]["mean"]  # None (NaN) when no pixel changed in these clips
    assert changed is None or changed <= fid["copy"]["psnr"]["16"]["mean"] + 1e-6
    assert set(report["fidelity"]["delta_t_psnr"]) == {"1", "4", "16"}
    assert "held-out split" in report["split"] and report["n_clips"] >= 2  # several clips of the 1 held-out episode
    cf = report["counterfactuals"]
    assert cf["presets"] == list(E.QUICK_SCRIPTS) and cf["frames"] == 4
    # One held-out episode still gives four views: its start turned by a quarter each time.
    assert [s["start"].split(" ", 1)[-1] for s in cf["per_start"]][1:] == ["turned 90 deg", "turned 180 deg",
                                                                          "turned 270 deg"]
    assert np.isfinite(cf["summary"]["walk-forward"]["psnr"])
    codes = cf["tokenizer_codes"]  # the tokenizer's code metrics on the oracle's clips
    assert 0.0 <= codes["idempotence"] <= 1.0 and 0.0 <= codes["stability_le2"] <= 1.0 and codes["separation"] >= 0
    assert any(k.startswith("tokenizer idempotence") for k in report["summary"])
    assert np.isfinite(codes["follow_1px"]) and "tokenizer shift following at 1 / 2 / 3 px" in report["summary"]
    st = report["stability"]
    assert st["frames"] == 16 and len(st["starts"]) == 1
    assert st["starts"][0]["reference"].startswith("block-world oracle")
    assert st["starts"][0]["flashing"]["judged"] is False  # 16 frames are too few to judge flashing
    assert {"diversity", "grey", "flashing", "noop_drift"} <= set(st["starts"][0])
    assert "judge" in report["controllability"] and "truth" in report["controllability"]["judge"]
    judged = report["controllability"]["judge"]["truth"]
    assert 0.0 <= judged["camera_balanced_acc"] <= 1.0 and judged["class_recall"]
    for response in ("yaw", "pitch", "forward", "back", "strafe", "jump"):  # one preset per response
        assert any(k.startswith(f"counterfactual {response} ratio") for k in report["summary"]), response
    assert (shards / "idm_judge.pt").is_file()  # trained on the training split and cached
    for heading in ("## Fidelity", "## Controllability", "## Counterfactuals", "## Long-rollout stability",
                    "Thresholds:", "copy last frame"):
        assert heading in md
    # The cached judge is reused, not retrained.
    from rollout import load_bundle
    bundle = load_bundle(wm, device="cpu")
    _, note = E.get_judge(E.EvalConfig(judge_steps=3), shards, bundle, (0.34, 0))
    assert "(cached, 3 steps)" in note
    # A model trained on another folder: every episode here is unseen.
    files, why = EI.heldout_files(shards, {"train_config": {"data": "elsewhere", "val_fraction": 0.34}})
    assert len(files) == 3 and "none of them was seen" in why
    files, why = EI.heldout_files(shards, bundle.meta)
    assert len(files) == 1 and "held-out split" in why
    # A model that names its training episodes is held out by name, whatever path it recorded for the data
    # (a relative path from another directory would otherwise look like another dataset).
    every = sorted(p.name for p in shards.glob("*.npz"))
    named = {"train_config": {"data": "runs/x/shards", "val_fraction": 0.34}, "train_files": every[:2]}
    files, why = EI.heldout_files(shards, named)
    assert files == every[2:] and "not among the model's training episodes" in why
    files, why = EI.heldout_files(shards, {**named, "train_files": every})
    assert files == every and "NOT held out" in why
    files, why = EI.heldout_files(shards, {**named, "train_files": ["other.npz"]})
    assert files == every and "none is among" in why


def test_copy_last_frame_model_scores_exactly_the_copy_baseline(tiny_setup, tmp_path):
    from rollout import load_bundle

    wm, _, shards, _ = tiny_setup
    bundle = load_bundle(wm, device="cpu")
    cfg = E.EvalConfig(model=str(wm), data=str(shards), out=str(tmp_path), quick=True, context=3,
                       counterfactual_frames=4, stability_seconds=1, judge_steps=3, videos=0, lpips=False,
                       device="cpu")
    report = E.evaluate(cfg, bundle=bundle, model=EI.CopyPredictor())
    assert report["videos"] == [] and "lpips" not in report["fidelity"]["tables"]["model"]
    fid = report["fidelity"]
    assert fid["tables"]["model"] == fid["tables"]["copy"]
    assert fid["token_accuracy_rollout"]["model"]["16"] < 0.9  # the episodes do move
    assert fid["teacher_forced_token_accuracy"]["model"] == fid["teacher_forced_token_accuracy"]["copy"]
    resp = report["controllability"]["responses"]
    for action, row in resp.items():
        assert row["model"] == row["copy"] or (row["model"] is None and row["copy"] is None), action
    j = report["controllability"]["judge"]
    assert j["model"] == j["copy"]
    cf = report["counterfactuals"]["summary"]
    assert all(v["psnr"] == pytest.approx(v["copy_psnr"]) == pytest.approx(v["noop_actions_psnr"]) for v in cf.values())


def test_ground_truth_model_is_perfect_and_ratios_are_one(tiny_setup):
    """A "model" that returns the true future: PSNR at the cap, token accuracy 1, responses equal to the
    truth's. Checks that each clip's future actions and frames line up."""
    from dataset import split_files
    from rollout import load_bundle

    wm, _, shards, _ = tiny_setup
    bundle = load_bundle(wm, device="cpu")
    files = split_files(shards, 0.0)[0]
    clips, _ = EI.load_clips(shards, files, context=3, horizon=16, per_episode=2, max_episodes=3)
    assert len(clips) == 6
    by_ctx = {cl.tokens[:3].tobytes(): cl for cl in clips}

    class Truth(EI.Predictor):
        def rollout(self, ctx, ctx_a, fut):
            out = []
            for c, a in zip(ctx, fut):
                cl = by_ctx[c.tobytes()]
                assert np.array_equal(a, cl.actions[2:2 + len(a)])  # the clip's own future actions
                out.append(cl.tokens[3:3 + a.shape[0]])
            return EI.Rolled(np.stack(out))

        def teacher_forced(self, tokens, actions, first):
            return tokens[:, first + 1:].copy()

    cfg = E.EvalConfig(context=3, horizons=(1, 4, 16), lpips=False, device="cpu")
    ev = E.Evaluation(cfg, bundle, model=Truth())
    ev.predictors = {"model": ev.model, "copy": EI.CopyPredictor()}
    sec, drawn = ev.clips_section(clips, judge=None)
    t = sec["fidelity"]["tables"]["model"]
    assert all(t["psnr"][h]["mean"] == M.PSNR_CAP_DB for h in ("1", "4", "16"))
    assert sec["fidelity"]["teacher_forced_token_accuracy"]["model"] == 1.0
    # The section returns the frames it drew (for the report's videos): the model's are the truth's.
    assert np.array_equal(drawn.predicted["model"], drawn.truth) and drawn.actions.shape[:2] == drawn.truth.shape[:2]
    # The tiny VQ-VAE's random decoder draws nearly flat frames, so most responses fall below their
    # floors here (test_response_signs_on_block_world_presets measures real frames); whatever is
    # measurable must be exactly the truth's.
    resp = sec["controllability"]["responses"]
    for action, row in resp.items():
        assert row["model"] == pytest.approx(row["truth"], nan_ok=True), action
        assert row["model_ratio"] in (None, pytest.approx(1.0)), action


def test_response_signs_on_block_world_presets():
    """The pixel responses have the documented signs on the simulator's own frames."""
    from blockworld import World, render
    from blockworld.oracle import rollout
    from action_scripts import named_script_actions

    world = World(3)
    state = world.spawn(0)
    first = render(world, state, (128, 72))[None, None]
    got = {}
    for preset in ("turn-right-360", "walk-forward", "walk-back", "strafe-left", "jump"):
        a = named_script_actions(preset, 90 if preset == "turn-right-360" else 12)[None, :12]  # turns: 4 deg/step
        frames = np.concatenate([first, rollout(world, state, a[0], (128, 72))[None]], 1)
        got[preset] = M.responses(M.pixel_measures(frames, a), a)
    assert got["turn-right-360"]["yaw"] > 0.5
    assert got["walk-forward"]["forward"] > 0.005 and got["walk-back"]["back"] < -0.005
    assert got["strafe-left"]["strafe"] > 0.1
    assert got["jump"]["jump"] > 1.0


def test_stability_checks_catch_collapse_flashing_and_drift():
    rng = np.random.default_rng(0)
    n = 112  # the flash check judges only rollouts of at least 10 cycles of its longest period
    tex = np.clip(rng.random((24, 160, 3)) * 0.8 + 0.1, 0, 1)
    truth = np.stack([tex[:, i:i + 48] for i in range(n)])  # a steady pan (small frames: only speed differs)
    tokens = rng.integers(0, 50, (n, 4, 4))
    last = truth[0]
    ok = E.stability_checks(tokens, truth, tokens, truth, None, np.repeat(last[None], n, 0), None, last)
    assert all(ok[k]["pass"] for k in ("diversity", "grey", "flashing", "noop_drift"))
    grey = np.repeat(truth.mean(axis=(1, 2), keepdims=True), 24, 1).repeat(48, 2)
    bad = E.stability_checks(np.zeros_like(tokens), grey, tokens, truth, None, truth, None, last)
    assert not bad["grey"]["pass"] and not bad["diversity"]["pass"] and not bad["noop_drift"]["pass"]
    flash = truth.copy()
    flash[::5] = np.clip(flash[::5] * 1.4 + 0.1, 0, 1)
    fl = E.stability_checks(tokens, flash, tokens, truth, None, truth[:1].repeat(n, 0), None, last)
    assert not fl["flashing"]["pass"] and fl["flashing"]["period"] == pytest.approx(5, abs=0.3)
    # The same periodicity in the truth (e.g. a repeating script) excuses it.
    ex = E.stability_checks(tokens, flash, tokens, flash, None, truth[:1].repeat(n, 0), None, last)
    assert ex["flashing"]["pass"] and ex["flashing"]["explained_by_reference"]
    # Without an oracle the references are the data's codes per frame and per second.
    nd = E.stability_checks(tokens, truth, None, truth, (12.0, 40.0), truth[:1].repeat(n, 0), None, last)
    assert nd["diversity"]["reference_per_frame"] == [12.0] * 7
    assert nd["diversity"]["reference_per_second"] == [40.0] * 7
    short = E.stability_checks(tokens[:64], flash[:64], tokens[:64], truth[:64], None, truth[:64], None, last)
    assert short["flashing"]["pass"] and not short["flashing"]["judged"]


def test_diversity_judges_collapse_per_frame_and_shimmer_per_second():
    rng = np.random.default_rng(1)
    n = 64
    pictures = rng.integers(0, 200, (4, 6, 6))  # four distinct pictures of up to 36 codes each
    truth = pictures[np.arange(n) % 4]  # the truth re-codes its one picture every frame
    frames = rng.random((n, 8, 8, 3))
    last = frames[0]
    # A right picture that keeps its codes: fewer codes per second than the truth, none fewer per frame.
    still = E.stability_checks(np.repeat(pictures[:1], n, 0), frames, truth, frames, None, frames, None, last)
    assert still["diversity"]["relative_per_second_last_quarter"] < 0.5
    assert still["diversity"]["pass"] and not still["diversity"]["collapsed"]
    # A flat plain (one code per frame) collapses; fresh random codes every frame shimmer.
    flat = E.stability_checks(np.zeros_like(truth), frames, truth, frames, None, frames, None, last)
    assert flat["diversity"]["collapsed"] and not flat["diversity"]["pass"]
    noise = E.stability_checks(rng.integers(0, 1000, truth.shape), frames, truth, frames, None, frames, None, last)
    assert noise["diversity"]["shimmer"] and not noise["diversity"]["pass"]


def test_helpers_quick_caps_random_actions_and_script():
    cfg = E.apply_quick(E.EvalConfig(quick=True, episodes=1, horizons=(1, 4, 16, 64)))
    assert cfg.episodes == 1 and cfg.horizons == (1, 4, 16) and cfg.stability_seconds == 4.0
    assert E.apply_quick(E.EvalConfig()).horizons == (1, 4, 16, 64)
    acts = np.arange(4 * 3 * 9, dtype=np.float32).reshape(4, 3, 9)
    other = EI.other_clip_actions(acts, seed=1)
    assert all(not np.array_equal(other[i], acts[i]) for i in range(4))
    assert sorted(o[0, 0] for o in other) == sorted(a[0, 0] for a in acts)
    script = E.scripted_play(100, seed=0)
    assert script.shape == (100, 9) and (script[:32, RAW["forward"]] == 1).all()
    noops = EI.noop_actions(np.stack([make_raw(3, forward=1)]))
    assert np.array_equal(noops, noop(1))


def test_bad_inputs_are_clean_errors(tiny_setup, tmp_path, capsys):
    wm, _, shards, _ = tiny_setup
    for args, says in ((["--model", str(wm)], "--data is required"),
                       (["--model", str(tmp_path / "missing.pt"), "--data", str(shards), "--device", "cpu"],
                        "missing.pt"),
                       (["--model", str(wm), "--data", str(shards), "--context", "40", "--device", "cpu",
                         "--out", str(tmp_path / "o")], "too short")):
        with pytest.raises(SystemExit) as e:
            E.main(args)
        assert e.value.code == 2 and says in capsys.readouterr().err


def _script(name: str):
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses resolve the module's annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def test_training_minutes_count_an_interruption_as_the_expected_step_time(tmp_path):
    curve = _script("response_curve")
    rows = [{"step": 10, "time": 100.0, "timing/step_ms": 1000.0}, {"step": 20, "time": 110.0, "timing/step_ms": 1000.0},
            {"step": 30, "time": 5000.0, "timing/step_ms": 1000.0}]  # a --resume hours later
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    minutes = curve.training_minutes(path)
    assert minutes == pytest.approx({10: 10 / 60, 20: 20 / 60, 30: 30 / 60})
    assert curve.minutes_at(25, minutes) == pytest.approx(20 / 60) and curve.minutes_at(5, minutes) is None


def test_response_curve_and_ablation_table_read_real_reports(tiny_setup, tmp_path, capsys):
    """scripts/response_curve.py evaluates every export of a run (skipping and reporting a broken one) and
    scripts/ablation_table.py builds its row from the same report."""
    wm, _, shards, bw = tiny_setup
    run = tmp_path / "run"
    (run / "exports").mkdir(parents=True)
    shutil.copy(wm, run / "exports" / "world_model_2.pt")
    (run / "exports" / "world_model_3.pt").write_bytes(b"not a checkpoint")
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "time": 60.0 * s, "timing/step_ms": 60000.0})
                                               + "\n" for s in (1, 2, 3, 4)))
    curve = _script("response_curve")
    args = ["--run", str(run), "--data", str(shards), "--source-data", str(bw),
            "--eval-args=" + " ".join(QUICK_ARGS)]
    assert curve.main(args) == 0
    out = run / "curve"
    result = json.loads((out / "curve.json").read_text())
    assert [p["step"] for p in result["points"]] == [2]
    assert result["points"][0]["minutes"] == pytest.approx(2.0)
    report = json.loads((out / "eval_2" / "report.json").read_text())
    assert result["points"][0]["copy_psnr16"] == report["fidelity"]["tables"]["copy"]["psnr"]["16"]["mean"]
    assert len(result["failed"]) == 1 and "world_model_3.pt" in result["failed"][0]
    assert (out / "curve.png").stat().st_size > 1000
    table = (out / "curve.md").read_text().splitlines()
    assert len(table) == 3 and table[2].startswith("| 2 | 2 |")
    assert "skipped" in capsys.readouterr().err
    # A second run finds every report and evaluates nothing again.
    (out / "eval_2" / "report.md").unlink()
    assert curve.main(args) == 0 and not (out / "eval_2" / "report.md").exists()
    # A report whose export a later --keep-last pruned stays on the curve.
    shutil.copytree(out / "eval_2", out / "eval_1")
    assert curve.main(args) == 0
    assert [p["step"] for p in json.loads((out / "curve.json").read_text())["points"]] == [1, 2]
    ablation = _script("ablation_table")
    cells = ablation.row(json.loads((out / "eval_2" / "report.json").read_text()))
    assert len(cells) == len(ablation.COLUMNS) and " / " in cells[0]
    assert ablation.main([f"x={out / 'missing.json'}"]) == 2


def _still_and_moving(tiny_setup, tmp_path: Path) -> tuple[Path, Path]:
    """The tiny world model saved twice: without a motion path, and with one where a right turn moves the
    content left by a token per 4 degrees."""
    import dataclasses

    from actions import YAW_SLICE, ActionEncoding
    from model_convGru import WorldModel
    from vq_vae import load_vqvae, vqvae_identity
    from world_model_io import load_world_model, save_world_model

    wm, vq_path, _, _ = tiny_setup
    model, meta = load_world_model(wm, device="cpu")
    enc = ActionEncoding()
    vq = load_vqvae(vq_path)

    def save(path, **changes):
        cfg = dataclasses.replace(model.cfg, **changes)
        save_world_model(path, WorldModel(cfg, codebook=vq.codebook), enc, str(vq_path), vqvae_identity(vq_path),
                         meta["train_config"], step=0)
        return path

    coef = np.zeros((3, 15))
    coef[0, YAW_SLICE] = -np.asarray(enc.yaw_centres) / 4.0
    return (save(tmp_path / "still.pt", copy_prior=0.0),
            save(tmp_path / "moving.pt", copy_prior=4.0, motion_coef=tuple(coef.reshape(-1))))


def test_rollout_diagnostics_follow_the_stability_script(tiny_setup, tmp_path, capsys):
    """scripts/rollout_diagnostics.py on a tiny model with a motion path: one row per generated frame, the
    turn lets content enter, walking forward does not; a model without a motion path is one clean error."""
    _, _, shards, bw = tiny_setup
    diag = _script("rollout_diagnostics")
    args = ["--data", str(shards), "--source-data", str(bw), "--seconds", "4", "--context", "3"]
    still, moving = _still_and_moving(tiny_setup, tmp_path)
    with pytest.raises(SystemExit) as e:
        diag.main(["--model", str(still), *args])
    assert e.value.code == 2 and "no motion path" in capsys.readouterr().err
    rows = diag.diagnose(diag.DiagnosticsConfig(model=str(moving), data=str(shards), source_data=str(bw),
                                                seconds=4.0, context=3))
    assert len(rows) == 64 and all(0.0 <= r["entered"] <= 1.0 and r["distinct"] >= 1 for r in rows)
    walking = [r["entered"] for r in rows if r["segment"] == "walk-forward"]
    turning = [r["entered"] for r in rows if r["segment"] == "turn-right-360"]
    assert max(walking) == 0.0 and min(turning) > 0.0
    assert diag.main(["--model", str(moving), *args, "--every", "16"]) == 0
    assert "distinct codes" in capsys.readouterr().out
    # --by-action: every action of the stability script alone, the stability numbers per start as JSON.
    assert diag.main(["--model", str(moving), *args, "--seconds", "1", "--by-action", "true", "--starts", "1"]) == 0
    table = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(table) == list(dict(E.STABILITY_SCRIPT))
    for per in table.values():
        assert len(per) == 1 and all(np.isfinite(v) and v >= 0 for v in per[0].values())


def test_onestep_by_action_scores_each_motion_against_the_warp_and_copying(tiny_setup, tmp_path, capsys):
    """scripts/onestep_by_action.py: the classes follow the action; with a motion path that moves only for a
    turn, the warp scores exactly as copying where nothing is pressed, and not on the turns; no motion path is
    one clean error."""
    from actions import RAW, RAW_DIM

    _, _, shards, _ = tiny_setup
    one = _script("onestep_by_action")
    raw = np.zeros((9, RAW_DIM), np.float32)
    raw[0, RAW["yaw_deg"]] = 2.0
    raw[1, RAW["pitch_deg"]] = -3.0
    raw[2, [RAW["forward"], RAW["left"]]] = 1.0  # W wins over A
    raw[3, RAW["back"]] = 1.0
    raw[4, RAW["right"]] = 1.0
    raw[5, RAW["jump"]] = 1.0
    raw[7, RAW["sprint"]] = 1.0
    raw[8, RAW["yaw_deg"]] = 0.3  # under half a degree: not a turn
    assert list(one.action_class(raw)) == ["turn", "look", "W", "S", "A/D", "jump", "none", "other", "other"]
    still, moving = _still_and_moving(tiny_setup, tmp_path)
    with pytest.raises(SystemExit) as e:
        one.main(["--model", str(still), "--data", str(shards)])
    assert e.value.code == 2 and "no motion path" in capsys.readouterr().err
    # The same episodes (all held out in another folder) with every other action a 4-degree turn, the rest
    # no input: the motion path moves only for the turns, so there the warp leaves copying.
    data = tmp_path / "alternating"
    shutil.copytree(shards, data)
    for f in data.glob("*.npz"):
        with np.load(f) as z:
            arrays = dict(z)
        arrays["actions"] = np.zeros_like(arrays["actions"])
        arrays["actions"][::2, RAW["yaw_deg"]] = 4.0
        np.savez(f, **arrays)
    table = one.score(one.OneStepConfig(model=str(moving), data=str(data)))
    assert set(table) == {"turn", "none", "all"}
    assert table["all"]["n"] == table["turn"]["n"] + table["none"]["n"]
    assert table["none"]["warp"] == table["none"]["copy"] and table["turn"]["warp"] != table["turn"]["copy"]
    out = tmp_path / "onestep.json"
    assert one.main(["--model", str(moving), "--data", str(data), "--frames", "5", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["all"]["n"] == 5 * len(list(data.glob("*.npz")))
    assert "warp" in capsys.readouterr().out
    broken = next(iter(sorted(data.glob("*.npz"))))
    broken.write_bytes(b"not a shard")
    with pytest.raises(SystemExit) as e:
        one.main(["--model", str(moving), "--data", str(data)])
    assert e.value.code == 2 and broken.name in capsys.readouterr().err


def test_bench_run_all_writes_results_and_table(tmp_path, monkeypatch):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench import run_all

    bench = tmp_path / "mybench"  # not "bench": the repository's bench package would shadow it
    bench.mkdir()
    (bench / "fast.py").write_text('import json\nprint("warming up")\nprint(json.dumps({"fps": 12.5, '
                                   '"device": "cpu", "nested": {"ms": 3}}))\n')
    (bench / "broken.py").write_text("raise SystemExit('no GPU here')\n")
    (bench / "run_all.py").write_text("raise AssertionError('run_all must not run itself')\n")
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\nintro\n\n## Preprocess\n\nowned text\n")
    rc = run_all.main(["--bench-dir", str(bench), "--results", str(tmp_path / "results"), "--markdown", str(md)])
    assert rc == 1  # one script failed
    res = json.loads((tmp_path / "results" / "fast.json").read_text())
    assert res["result"]["fps"] == 12.5 and res["ok"] and "machine" in res and "date" in res
    assert not json.loads((tmp_path / "results" / "broken.json").read_text())["ok"]
    text = md.read_text()
    assert text.count(run_all.START) == 1 and "| fast |" in text and "fps 12.5" in text and "nested.ms 3" in text
    assert "| broken |" in text and "owned text" in text
    (bench / "fast.py").write_text('import json\nprint(json.dumps({"fps": 99}))\n')
    run_all.main(["--bench-dir", str(bench), "--results", str(tmp_path / "results"), "--markdown", str(md),
                  "--only", "fast"])
    text = md.read_text()
    assert text.count(run_all.START) == 1 and "fps 99" in text and "| broken |" in text


def test_bench_table_shows_the_headline_figures_when_a_script_gives_them():
    from bench import run_all

    rec = {"name": "x", "ok": True, "seconds": 1.0, "machine": {},
           "result": {"config": {"videos": 4, "seconds": 10}, "decode_fps": 756.4,
                      "headline": {"pipeline / decode": 0.113, "by preset": {"laptop": 2.5}}}}
    row = run_all.table([rec]).splitlines()[-1]
    assert "pipeline / decode 0.113" in row and "by preset.laptop 2.5" in row
    assert "videos" not in row and "decode_fps" not in row
    del rec["result"]["headline"]
    assert "config.videos 4" in run_all.table([rec]).splitlines()[-1]


def test_a_model_of_the_oracles_exact_tokens_scores_the_tokenizers_ratios(tiny_setup, tmp_path):
    """The counterfactuals' tokenizer columns measure the oracle's frames as the VQ-VAE draws them, from the
    same first frame as the model's: a "model" that returns the oracle's own tokens gets exactly those
    responses, and copying the last frame does not."""
    from rollout import encode_frames, load_bundle

    wm, _, shards, bw = tiny_setup
    bundle = load_bundle(wm, device="cpu")
    files = EI.heldout_files(shards, bundle.meta)[0]

    def encode(frames: np.ndarray) -> np.ndarray:
        return encode_frames(bundle, frames).numpy()

    starts = EI.blockworld_starts(shards, files, str(bw), 3, 8, encode, bundle.frame_size)[0]
    by_ctx = {st.tokens.tobytes(): st for st in starts}

    class OracleTokens(EI.Predictor):
        def rollout(self, ctx, ctx_a, fut):
            if ctx[0].tobytes() not in by_ctx:
                return EI.CopyPredictor().rollout(ctx, ctx_a, fut)
            # One encode call for every row, in evaluate.py's batches: a batch of another size can flip a
            # near-tie between two codes.
            frames = np.stack([by_ctx[c.tobytes()].oracle(a) for c, a in zip(ctx, fut)])  # [B, N, H, W, 3]
            tokens = encode(frames.reshape((-1,) + frames.shape[2:]))  # [B*N, H, W, 3] -> [B*N, h, w]
            return EI.Rolled(tokens.reshape(fut.shape[:2] + ctx.shape[2:]))  # [B, N, h, w]

        def teacher_forced(self, tokens, actions, first):
            return tokens[:, first:-1].copy()

    cfg = E.EvalConfig(model=str(wm), data=str(shards), source_data=str(bw), out=str(tmp_path), quick=True,
                       context=3, counterfactual_frames=6, stability_seconds=1, judge_steps=3, videos=0,
                       lpips=False, device="cpu")
    exact = E.evaluate(cfg, bundle=bundle, model=OracleTokens())["counterfactuals"]["per_start"]
    copy = E.evaluate(cfg, bundle=bundle, model=EI.CopyPredictor())["counterfactuals"]["per_start"]
    assert exact and len(exact) == len(copy)
    for start in exact:
        for name, row in start["presets"].items():
            assert row["model_response"] == pytest.approx(row["tokenizer_response"], nan_ok=True), name
            assert (row["ratio"] is None) == (row["tokenizer_ratio"] is None), name
            assert row["ratio"] is None or row["ratio"] == pytest.approx(row["tokenizer_ratio"]), name
    # The tiny decoder's frames are nearly flat, but looking up and down still moves the oracle's.
    assert any(r["model_response"] != pytest.approx(r["tokenizer_response"], nan_ok=True)
               for start in copy for r in start["presets"].values())
