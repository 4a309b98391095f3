"""live_inference.py: the input -> raw action mapping against actions.py, the event-handling path with
injected pygame events, headless scripted runs (every key and the mouse), recording, screenshots, quitting."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from actions import RAW, ActionEncoding, from_live, make_raw
from live_inference import (KEYMAP, InputAccumulator, LiveConfig, LiveSession, events_from_actions, load_script,
                            parse_event_script, raw_action_from_input, run)
from action_scripts import named_script_actions
from contexts import load_context
from rollout import load_bundle
from test_rollout import ROOT, tiny_pair  # noqa: F401  (tiny_pair is a fixture)
from video_io import read_frames


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """Tiny models on a shared 2-core machine: one thread avoids OpenMP barrier stalls when the cores are busy."""
    torch.set_num_threads(1)


SENS = 0.25


def test_raw_action_from_input_is_actions_from_live() -> None:
    enc = ActionEncoding()
    cases = [((), 0, 0), (("w",), 0, 0), (("a", "space"), 12, 0), (("s", "left shift"), -30, 8),
             (("d", "left ctrl", "w"), 3, -40), (("q", "w", "escape"), 1.5, 0.5), (tuple(KEYMAP), 100, 100)]
    for keys, dx, dy in cases:
        raw = raw_action_from_input(keys, dx, dy, SENS)
        fields = [KEYMAP[k] for k in keys if k in KEYMAP]
        assert np.array_equal(raw, from_live(fields, dx, dy, SENS))
        assert np.array_equal(enc.encode(raw), enc.encode(from_live(fields, dx, dy, SENS)))
    raw = raw_action_from_input(("w", "space", "left shift", "left ctrl"), 16, -4, SENS)
    assert np.array_equal(raw, make_raw(4.0, -1.0, forward=1, jump=1, sneak=1, sprint=1))


def test_accumulator_keeps_taps_and_sums_mouse_within_a_tick() -> None:
    acc = InputAccumulator()
    acc.key_down("space")
    acc.key_up("space")  # tapped and released inside one tick: still a jump this tick
    acc.key_down("w")
    acc.mouse(4, 1)
    acc.mouse(6, -3)
    a = acc.take(0.5)
    assert a[RAW["jump"]] == 1 and a[RAW["forward"]] == 1
    assert a[RAW["yaw_deg"]] == 5.0 and a[RAW["pitch_deg"]] == -1.0
    b = acc.take(0.5)  # next tick: W still held, the tap and the motion are gone
    assert b[RAW["forward"]] == 1 and b[RAW["jump"]] == 0 and b[:2].tolist() == [0, 0]
    acc.release_all()
    assert not acc.take(0.5).any()


@pytest.fixture()
def session_factory(tiny_pair, tmp_path: Path):  # noqa: F811
    wm, _, _ = tiny_pair
    bundle = load_bundle(wm, device="cpu")
    ctx = load_context("png:" + str(tiny_pair[2]), bundle)
    made = []

    def make(**kw) -> LiveSession:
        cfg = LiveConfig(model=str(wm), context="png", headless=True, scale=4, sensitivity=SENS,
                         screenshot_dir=str(tmp_path / "shots"), **kw)
        s = LiveSession(cfg, bundle, ctx)
        made.append(s)
        return s

    return make


def test_event_path_encoding_equals_actions_py(session_factory) -> None:
    import pygame

    s = session_factory()
    enc = s.rollout.bundle.encoding
    for keys, rel in [(("w", "space"), (12.0, -4.0)), (("s", "left shift", "left ctrl"), (-20.0, 0.0)),
                      (("a", "d"), (0.0, 6.0)), ((), (0.0, 0.0))]:
        for k in keys:
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.key.key_code(k), mod=0))
        pygame.event.post(pygame.event.Event(pygame.MOUSEMOTION, rel=rel, pos=(0, 0), buttons=(0, 0, 0)))
        s.tick()
        want = from_live([KEYMAP[k] for k in keys], rel[0], rel[1], SENS)
        assert np.array_equal(s.actions_log[-1], want)
        assert np.array_equal(enc.encode(s.actions_log[-1]), enc.encode(want))
        for k in keys:
            pygame.event.post(pygame.event.Event(pygame.KEYUP, key=pygame.key.key_code(k), mod=0))
        s.tick()  # keys released at the start of this tick were still down at its start: they count once more
        assert np.array_equal(s.actions_log[-1], from_live([KEYMAP[k] for k in keys], 0, 0, SENS))
    s.finish(1.0)


def test_scripted_actions_round_trip_through_the_event_queue(session_factory) -> None:
    raw = named_script_actions("random", 40, seed=3)
    raw[:, :2] = np.round(raw[:, :2] / SENS) * SENS  # whole pixels
    s = session_factory()
    summary = s.run(events_from_actions(raw, SENS), max_ticks=len(raw), paced=False)
    assert summary["frames"] == 40 and summary["quit"] == "frames done"
    played = np.stack(s.actions_log)
    assert np.allclose(played, raw, atol=1e-5)
    enc = ActionEncoding()
    assert np.array_equal(enc.encode(played), enc.encode(raw))


def test_headless_script_exercises_every_key_and_the_mouse(session_factory, tmp_path: Path) -> None:
    events = [
        {"tick": 0, "event": "keydown", "key": "w"}, {"tick": 0, "event": "mouse", "rel": [8, -4]},
        {"tick": 1, "event": "keydown", "key": "a"}, {"tick": 1, "event": "keyup", "key": "w"},
        {"tick": 2, "event": "keydown", "key": "s"}, {"tick": 2, "event": "keyup", "key": "a"},
        {"tick": 3, "event": "keydown", "key": "d"}, {"tick": 3, "event": "keyup", "key": "s"},
        {"tick": 4, "event": "keydown", "key": "space"}, {"tick": 4, "event": "keyup", "key": "d"},
        {"tick": 5, "event": "keydown", "key": "left shift"}, {"tick": 5, "event": "keyup", "key": "space"},
        {"tick": 6, "event": "keydown", "key": "left ctrl"}, {"tick": 6, "event": "keyup", "key": "left shift"},
        {"tick": 7, "event": "keyup", "key": "left ctrl"}, {"tick": 7, "event": "keydown", "key": "f12"},
        {"tick": 8, "event": "keydown", "key": "h"}, {"tick": 9, "event": "keydown", "key": "h"},
        {"tick": 10, "event": "keydown", "key": "p"}, {"tick": 11, "event": "mouse", "rel": [50, 0]},
        {"tick": 12, "event": "keydown", "key": "p"}, {"tick": 13, "event": "keydown", "key": "r"},
        {"tick": 14, "event": "keydown", "key": "q"}, {"tick": 14, "event": "keydown", "key": "f5"},
        {"tick": 15, "event": "keydown", "key": "w"}, {"tick": 16, "event": "focus_lost"},
        {"tick": 17, "event": "mouse", "rel": [30, 0]}, {"tick": 18, "event": "click"},
        {"tick": 19, "event": "keydown", "key": "escape"}, {"tick": 20, "event": "mouse", "rel": [9, 9]},
        {"tick": 21, "event": "keydown", "key": "escape"},
    ]
    path = tmp_path / "events.json"
    path.write_text(json.dumps(events))
    script, length = load_script(str(path), SENS)
    assert length == 22
    s = session_factory(record=str(tmp_path / "rec.mp4"), actions_out=str(tmp_path / "played.json"))
    summary = s.run(script, max_ticks=100, paced=False)
    # ticks 0..20 run, tick 21's second Esc quits; ticks 10 and 11 are paused
    assert summary["quit"] == "escape" and summary["ticks"] == 21
    assert summary["frames"] == 19 and summary["paused_ticks"] == 2 and summary["resets"] == 1
    assert summary["ignored_keys"] == 2 and len(summary["screenshots"]) == 1
    assert Path(summary["screenshots"][0]).is_file()
    assert summary["model_ms"]["p50"] > 0 and summary["fps"] > 0
    a = np.stack(s.actions_log)  # one row per unpaused tick
    fields = ["forward", "left", "back", "right", "jump", "sneak", "sprint"]
    for t, f in enumerate(fields):  # each key alone on its tick, next to the previous one being released
        assert a[t, RAW[f]] == 1
    assert a[0, RAW["yaw_deg"]] == 8 * SENS and a[0, RAW["pitch_deg"]] == -4 * SENS
    assert a[10, :2].tolist() == [0, 0]  # motion while paused (tick 11) is dropped, not saved up
    assert a[13, RAW["forward"]] == 1 and a[14, RAW["forward"]] == 0  # focus lost releases held keys
    assert a[15, RAW["yaw_deg"]] == 0  # mouse free after focus loss: no look
    assert a[18, RAW["yaw_deg"]] == 0  # motion after Esc released the mouse
    assert len(read_frames(tmp_path / "rec.mp4")) == summary["frames"] == summary["recorded_frames"]
    played = json.loads((tmp_path / "played.json").read_text())
    assert sum(e.get("repeat", 1) for e in played) == summary["frames"]


def test_window_close_ends_cleanly(session_factory) -> None:
    s = session_factory()
    script, _ = parse_event_script([{"tick": 2, "event": "quit"}], "inline")
    summary = s.run(script, max_ticks=50, paced=False)
    assert summary["quit"] == "window closed" and summary["frames"] == 2


def test_bad_scripts_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown key name 'kw'"):
        parse_event_script([{"tick": 0, "event": "keydown", "key": "kw"}], "s.json")
    with pytest.raises(ValueError, match="event must be one of"):
        parse_event_script([{"tick": 0, "event": "jump"}], "s.json")
    with pytest.raises(ValueError, match="script not found"):
        load_script(str(tmp_path / "missing.json"), SENS)
    events, n = load_script("turn-left-360", SENS)
    assert n == 96 and sum(e.rel[0] for e in events if e.event == "mouse") * SENS == pytest.approx(-360)


def test_headless_cli_prints_a_json_summary(tiny_pair, tmp_path: Path) -> None:  # noqa: F811
    wm, _, png_dir = tiny_pair
    env = dict(os.environ, SDL_VIDEODRIVER="dummy", SDL_AUDIODRIVER="dummy", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "live_inference.py", "--model", str(wm), "--context", f"png:{png_dir}",
                        "--headless", "--script", "walk-forward+turn-right-360", "--frames", "6",
                        "--device", "cpu", "--summary", str(tmp_path / "s.json")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["frames"] == 6 and summary["ticks"] == 6 and summary["quit"] == "frames done"
    assert set(summary["model_ms"]) == {"mean", "p50", "p95", "max"}
    assert json.loads((tmp_path / "s.json").read_text())["frames"] == 6


def test_cli_errors_are_one_clean_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture) -> None:
    import live_inference

    monkeypatch.setattr(sys, "argv", ["live_inference.py", "--model", str(tmp_path / "nope.pt"), "--context",
                                      "blockworld:0", "--headless", "--frames", "2"])
    with pytest.raises(SystemExit) as e:
        live_inference.main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and "nope.pt" in err and "Traceback" not in err


def test_run_refuses_headless_without_input(tiny_pair) -> None:  # noqa: F811
    with pytest.raises(ValueError, match="--headless needs"):
        run(LiveConfig(model=str(tiny_pair[0]), context="blockworld:0", headless=True))


def test_a_model_slower_than_the_tick_slows_the_game_and_drops_no_input(session_factory) -> None:
    raw = named_script_actions("turn-left-360+walk-forward", 12)
    s = session_factory(tick_hz=1000.0)  # far faster than any model step: every tick runs late
    summary = s.run(events_from_actions(raw, SENS), max_ticks=len(raw), paced=True)
    assert summary["frames"] == summary["ticks"] == 12
    assert summary["fps"] < 1000.0
    assert np.stack(s.actions_log)[:, RAW["yaw_deg"]].sum() == pytest.approx(-360.0, abs=1e-3)
