"""The block world: determinism, the vectorised ray trace against a plain DDA, physics (walls, jumps,
ledges, speeds, water), camera (360-degree turns, looking up), the generator's GameFactory output, the
oracle re-creating generated episodes, action round trips and the preview."""
import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import video_io
from actions import RAW, RAW_DIM, from_gamefactory, make_raw, noop, to_gamefactory
from blockworld import BIOMES, FlatWorld, PlayerState, World, episode_start, render, render_with_depth, rollout, step
from blockworld import blocks as B
from blockworld import renderer as R
from blockworld.generate import GenerateConfig, episode_frames, run
from blockworld.policy import GameFactoryPolicy
from blockworld.world import CHUNK, SEA

ROOT = Path(__file__).resolve().parents[1]


def on_flat(x=0.5, z=0.5, yaw=0.0, pitch=0.0) -> PlayerState:
    return PlayerState(pos=(x, float(SEA + 1), z), yaw=yaw, pitch=pitch)


def walk(world, state, n, **keys):
    for _ in range(n):
        state = step(world, state, make_raw(**keys))
    return state


@pytest.fixture(scope="module")
def world():
    return World(3)


@pytest.fixture(scope="module")
def start(world):
    return world.spawn(0, biome="plains")


# ----------------------------------------------------------------------------------------- rendering

def test_render_and_step_are_deterministic(world, start):
    a = render(world, start)
    assert a.dtype == np.uint8 and a.shape == (72, 128, 3)
    assert np.array_equal(a, render(world, start))
    assert np.array_equal(a, render(World(3), start)), "a fresh World of the same seed renders the same"
    act = make_raw(yaw_deg=3.0, forward=1.0, jump=1.0)
    before = start.to_dict()
    s1, s2 = step(world, start, act), step(World(3), start, act)
    assert s1 == s2 and start.to_dict() == before
    assert render(world, start, (64, 36)).shape == (36, 64, 3)


def _scalar_dda(occ, sx, sz, o, d, t_lim):
    cell = [math.floor(v) for v in o]
    step_ = [1 if v > 0 else -1 for v in d]
    td = [abs(1 / v) if v != 0 else math.inf for v in d]
    tm = [((cell[a] + 1 - o[a]) if d[a] > 0 else (o[a] - cell[a])) * td[a] if d[a] != 0 else math.inf
          for a in range(3)]
    while True:
        a = min(range(3), key=lambda k: tm[k])
        t = tm[a]
        if t > t_lim:
            return math.inf
        cell[a] += step_[a]
        tm[a] += td[a]
        if occ[cell[0] * sx + cell[1] + cell[2] * sz]:
            return t


@pytest.mark.parametrize("biome", ["forest", "snow"])
def test_vectorised_trace_matches_a_plain_dda(world, biome):
    """The batched per-axis crossings, the coarse tile skip and the landing shortcut together must find
    exactly the first block a textbook one-ray-at-a-time DDA finds."""
    s = world.spawn(1, biome=biome)
    for yaw, pitch in ((0.0, 0.0), (137.0, 35.0), (-60.0, -40.0)):
        st = s.replace(yaw=s.yaw + yaw, pitch=pitch)
        _, depth = render_with_depth(world, st)
        eye = R.eye_position(st)
        win = world.window(math.floor(eye[0]) // CHUNK, math.floor(eye[2]) // CHUNK, R.WINDOW_RADIUS)
        o = [eye[0] - win.x0, eye[1], eye[2] - win.z0]
        d = R.ray_directions(float(st.yaw), float(st.pitch), (128, 72))
        o32 = np.array(o, dtype=np.float32)
        t_top = np.where(d[1] > 1e-6, (np.float32(win.top + 0.5) - o32[1]) / np.maximum(d[1], 1e-6), np.inf)
        t_lim = np.minimum(R.VIEW_DIST, np.maximum(t_top, 0))
        for i in range(0, d.shape[1], 37):
            ref = _scalar_dda(win.occ, win.sx, win.sz, o32.astype(float), d[:, i].astype(float), float(t_lim[i]))
            got = float(depth.reshape(-1)[i])
            assert (math.isinf(ref) and math.isinf(got)) or abs(ref - got) < 1e-3, (i, ref, got)


def test_turning_360_degrees_in_steps_returns_the_same_frame(world, start):
    a = render(world, start)
    for deg, n in ((15.0, 24), (7.2, 50), (-45.0, 8)):
        s = start
        for _ in range(n):
            s = step(world, s, make_raw(yaw_deg=deg))
        assert -180.0 <= s.yaw < 180.0
        b = render(world, s)
        differ = (a != b).any(axis=-1).mean()
        assert differ <= 0.002, f"{n} turns of {deg} degrees: {differ:.2%} of pixels changed"
    half = render(world, walk(world, start, 12, yaw_deg=15.0))
    assert (a != half).any(axis=-1).mean() > 0.3, "half a turn must change the view"


def test_looking_up_shows_more_sky(world, start):
    def sky(pitch):
        frame, depth = render_with_depth(world, start.replace(pitch=pitch))
        bluish = (frame[..., 2].astype(int) > frame[..., 0] + 20) & (frame[..., 2] > 180)
        return int(np.isinf(depth).sum()), int(bluish.sum())

    down, level, up = sky(60.0), sky(0.0), sky(-60.0)
    assert down[0] < level[0] < up[0]
    assert down[1] < level[1] < up[1]
    assert up[0] > 0.9 * 128 * 72
    # Pitch moves in steps and stays clamped to [-90, 90] (+pitch looks down).
    s = walk(world, start, 40, pitch_deg=-5.0)
    assert s.pitch == -90.0
    assert walk(world, s, 50, pitch_deg=5.0).pitch == 90.0


def test_terrain_has_every_biome_and_feature():
    w = World(11)
    rng = np.random.default_rng(0)
    xs, zs = rng.integers(-20000, 20000, 4000), rng.integers(-20000, 20000, 4000)
    assert set(np.unique(w.biomes(xs, zs))) == set(range(len(BIOMES)))
    found = set()
    for biome in BIOMES:
        s = w.spawn(rng, biome=biome)
        assert w.biome_at(s.pos[0], s.pos[2]) == biome
        cx, cz = int(s.pos[0]) // CHUNK, int(s.pos[2]) // CHUNK
        for dx in range(-2, 3):
            for dz in range(-2, 3):
                found |= set(np.unique(w.chunk(cx + dx, cz + dz)).tolist())
    for block in (B.GRASS, B.SAND, B.STONE, B.SNOWY_GRASS, B.OAK_LOG, B.OAK_LEAVES, B.SPRUCE_LOG, B.CACTUS):
        assert block in found, f"no {B.NAMES[block]} near the spawns"
    # Chunks do not depend on the order they are generated in (trees cross chunk borders).
    a, b = World(11), World(11)
    first = a.chunk(5, -3).copy()
    for dx in (-1, 0, 1):
        b.chunk(5 + dx, -2)
    assert np.array_equal(first, b.chunk(5, -3))


# ------------------------------------------------------------------------------------------- physics

def test_walking_into_a_wall_stops_you():
    w = FlatWorld(0)
    for x in range(-3, 4):
        for y in range(SEA + 1, SEA + 4):
            w.set_block(x, y, 4, B.STONE)  # a wall across +z (yaw 0 looks south, +z)
    s = walk(w, on_flat(), 48, forward=1.0)
    assert s.pos[2] == pytest.approx(4 - 0.3, abs=1e-6), "the hitbox (0.6 wide) stops at the wall"
    assert s.pos[0] == pytest.approx(0.5) and s.on_ground
    assert s.vel[2] == 0.0
    # Sprinting or jumping into it does not get through either.
    s = walk(w, s, 32, forward=1.0, sprint=1.0)
    assert s.pos[2] <= 4 - 0.3 + 1e-9
    # Walking back works; a tree trunk is as solid as stone.
    w.set_block(0, SEA + 1, -3, B.OAK_LOG)
    w.set_block(0, SEA + 2, -3, B.OAK_LOG)
    s = walk(w, s, 64, back=1.0)
    assert s.pos[2] == pytest.approx(-2 + 0.3, abs=1e-6)


def test_a_jump_peaks_near_1_25_blocks_and_lands_at_the_same_height():
    w = FlatWorld(0)
    s = on_flat()
    heights = []
    for i in range(16):
        s = step(w, s, make_raw(jump=1.0 if i == 0 else 0.0))
        heights.append(s.pos[1] - (SEA + 1))
    assert max(heights) == pytest.approx(1.25, abs=0.03)
    land = next(i for i, h in enumerate(heights) if i > 0 and h == 0.0)
    assert 8 <= land <= 10, f"airtime {land + 1} ticks (Minecraft: ~0.6 s = 9.6 ticks at 16/s)"
    assert s.on_ground and s.pos[1] == SEA + 1


def test_ledges_block_walking_but_a_jump_climbs_them():
    w = FlatWorld(0)
    for x in range(-2, 3):
        for z in range(3, 8):
            w.set_block(x, SEA + 1, z, B.DIRT)  # a one-block step up
    s = walk(w, on_flat(), 32, forward=1.0)
    assert s.pos[2] == pytest.approx(3 - 0.3, abs=1e-6) and s.pos[1] == SEA + 1
    s = walk(w, s, 6, forward=1.0, jump=1.0)
    s = walk(w, s, 12, forward=1.0)
    assert s.pos[1] == SEA + 2 and s.pos[2] > 3.5 and s.on_ground


def test_sneak_is_slower_than_walk_is_slower_than_sprint():
    w = FlatWorld(0)
    speeds = {}
    for name, keys in (("sneak", dict(forward=1.0, sneak=1.0)), ("walk", dict(forward=1.0)),
                       ("sprint", dict(forward=1.0, sprint=1.0))):
        s = walk(w, on_flat(), 16, **keys)  # reach full speed
        z0 = s.pos[2]
        s = walk(w, s, 32, **keys)
        speeds[name] = (s.pos[2] - z0) / 2.0
    assert speeds["sneak"] < speeds["walk"] < speeds["sprint"]
    assert speeds["walk"] == pytest.approx(4.317, rel=0.02)
    assert speeds["sprint"] == pytest.approx(5.612, rel=0.02)
    assert speeds["sneak"] == pytest.approx(1.295, rel=0.03)
    # Keys are relative to yaw: facing east (yaw -90), forward moves +x; a half-held key is slower.
    s = walk(w, on_flat(yaw=-90.0), 16, forward=1.0)
    assert s.pos[0] > 3.0 and abs(s.pos[2] - 0.5) < 1e-9
    half = walk(w, on_flat(), 32, forward=0.5)
    assert 0.3 < (half.pos[2] - 0.5) / (walk(w, on_flat(), 32, forward=1.0).pos[2] - 0.5) < 0.7
    # Sneaking lowers the eye and stops at edges.
    assert R.eye_position(walk(w, on_flat(), 1, sneak=1.0))[1] == pytest.approx(SEA + 1 + 1.27)
    for x in range(-3, 4):
        for z in range(2, 6):
            w.set_block(x, SEA, z, B.AIR)
            w.set_block(x, SEA - 1, z, B.AIR)
    s = walk(w, on_flat(), 48, forward=1.0, sneak=1.0)
    assert s.on_ground and s.pos[1] == SEA + 1 and s.pos[2] < 2.3


def test_water_slows_you_and_jump_swims_up():
    w = FlatWorld(0)
    for x in range(-4, 5):
        for z in range(-4, 12):
            for y in range(SEA - 3, SEA + 1):
                w.set_block(x, y, z, B.WATER)
    s = on_flat().replace(pos=(0.5, SEA - 1.0, 0.5), in_water=True, on_ground=False)
    sunk = walk(w, s, 8)
    assert sunk.in_water and sunk.pos[1] < s.pos[1] and sunk.pos[1] - s.pos[1] > -1.5
    up = walk(w, sunk, 8, jump=1.0)
    assert up.pos[1] > sunk.pos[1]
    z0 = sunk.pos[2]
    swim = walk(w, sunk, 32, forward=1.0)
    assert 0.5 < (swim.pos[2] - z0) / 2.0 < 2.6, "about 2 blocks/s in water"
    frame, depth = render_with_depth(w, sunk)
    assert frame[..., 2].mean() > frame[..., 0].mean() + 30, "under water everything is blue"


# ---------------------------------------------------------------------------------------- generator

@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("bw")
    cfg = GenerateConfig(out=str(out), episodes=2, seconds=1.5, seed=7, workers=1)
    results = run(cfg)
    assert not [r for r in results if "error" in r]
    return cfg, out


def test_generator_writes_gamefactory_layout(dataset):
    cfg, out = dataset
    names = sorted(p.stem for p in (out / "video").glob("*.mp4"))
    assert names == ["seed_7_part_0", "seed_7_part_1"]
    assert sorted(p.stem for p in (out / "metadata").glob("*.json")) == names
    with open(out / "annotation.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["Original video name", "Start frame index", "End frame index", "Prompt"]
    assert [r[0] for r in rows[1:]] == [n + ".mp4" for n in names]
    biomes = set()
    for name in names:
        meta = json.loads((out / "metadata" / f"{name}.json").read_text())
        assert {"biome", "initial_weather", "start_time", "actions"} <= set(meta)
        assert meta["biome"] in BIOMES and meta["initial_weather"] in ("clear", "rain", "thunder")
        assert isinstance(meta["start_time"], str)
        biomes.add(meta["biome"])
        acts = meta["actions"]
        assert list(acts) == [str(i) for i in range(len(acts))], "entries are contiguous from 0"
        assert len(acts) == 24
        for key, e in acts.items():
            assert set(e) == {"ws", "ad", "scs", "pitch", "yaw", "pitch_delta", "yaw_delta", "pos"}
            assert e["ws"] in (0, 1, 2) and e["ad"] in (0, 1, 2) and e["scs"] in (0, 1, 2, 3)
            assert all(type(e[k]) is int for k in ("ws", "ad", "scs"))
            assert all(isinstance(e[k], float) for k in ("pitch", "yaw", "pitch_delta", "yaw_delta"))
            assert -90.0 <= e["pitch"] <= 90.0 and -180.0 <= e["yaw"] < 180.0
            assert len(e["pos"]) == 3 and all(isinstance(v, float) for v in e["pos"])
        assert acts["0"]["ws"] == acts["0"]["ad"] == acts["0"]["scs"] == 0
        assert acts["0"]["yaw_delta"] == acts["0"]["pitch_delta"] == 0.0
        info = video_io.probe(out / "video" / f"{name}.mp4")
        frames = video_io.read_frames(out / "video" / f"{name}.mp4")
        assert frames.shape == (len(acts), 72, 128, 3) and info.fps == 16.0
    assert len(biomes) == 2, "consecutive episodes start in different biomes"


def test_json_actions_reproduce_the_policy_and_the_oracle_reproduces_the_video(dataset):
    cfg, out = dataset
    meta: dict = {}
    raw: list = []
    frames = np.stack(list(episode_frames(cfg, 1, meta, raw)))
    raw = np.stack(raw)
    disk = json.loads((out / "metadata" / "seed_7_part_1.json").read_text())
    assert meta == disk, "the generator is deterministic"
    parsed = np.stack([from_gamefactory(disk["actions"][str(i)]) for i in range(len(raw))])
    assert np.array_equal(parsed, raw), "JSON actions (camera in degrees / 15) give back the raw actions"
    video = video_io.read_frames(out / "video" / "seed_7_part_1.mp4").astype(np.float32)
    assert np.abs(video - frames).mean() < 4.0, "only H.264 loss between the rendered and stored frames"
    world, s0 = episode_start(disk)
    assert np.array_equal(render(world, s0), frames[0])
    true = rollout(world, s0, parsed[1:])
    assert np.array_equal(true, frames[1:])
    assert np.abs(video[1:] - true).mean() < 4.0
    pos = np.array([disk["actions"][str(i)]["pos"] for i in range(len(raw))])
    assert np.abs(np.diff(pos, axis=0)).max() < 1.5
    bad = dict(disk, blockworld=dict(disk["blockworld"], render_version=-1))
    with pytest.raises(ValueError, match="version"):
        episode_start(bad)


def test_policy_covers_isolated_actions_and_round_trips_through_gamefactory_json():
    rng = np.random.default_rng(0)
    policy = GameFactoryPolicy(rng)
    s = on_flat()
    acts = []
    for _ in range(6000):
        a = policy.next(s)
        acts.append(a)
        s = s.replace(pitch=float(np.clip(s.pitch + a[1], -90, 90)), yaw=0.0)
    acts = np.stack(acts)
    assert acts.shape == (6000, RAW_DIM) and acts.dtype == np.float32
    keys = acts[:, 2:]
    assert set(np.unique(keys)) <= {0.0, 1.0}
    assert (keys[:, 4:].sum(axis=1) <= 1).all(), "at most one of jump/sneak/sprint"
    no_keys = keys.sum(axis=1) == 0
    assert (no_keys & (acts[:, 0] == 0) & (acts[:, 1] == 0)).mean() > 0.03, "no-op runs"
    assert (no_keys & (acts[:, 0] != 0)).mean() > 0.1, "camera-only turns"
    assert len(set(np.abs(acts[no_keys & (acts[:, 0] != 0), 0]))) >= 3, "several turn speeds"
    assert (no_keys & (acts[:, 1] != 0)).mean() > 0.03, "look up/down"
    for name in ("forward", "back", "left", "right", "jump", "sneak"):
        col = RAW[name] - 2
        alone = (keys.sum(axis=1) == 1) & (keys[:, col] == 1) & (acts[:, 0] == 0) & (acts[:, 1] == 0)
        assert alone.mean() > 0.015, f"{name} is rarely pressed alone"
    fwd = acts[:, RAW["forward"]] == 1
    assert (fwd & (acts[:, 0] != 0)).any(), "forward + turn"
    assert (fwd & (acts[:, RAW["jump"]] == 1)).any() and (fwd & (acts[:, RAW["sprint"]] == 1)).any()
    for a in acts[::29]:
        entry = to_gamefactory(a, 12.5, -3.0, (1.0, 2.0, 3.0))
        json.loads(json.dumps(entry))
        assert np.array_equal(from_gamefactory(json.loads(json.dumps(entry))), a)
    assert np.array_equal(from_gamefactory(to_gamefactory(noop(), 0.0, 0.0, (0.0, 0.0, 0.0))), noop())


def test_generate_and_preview_commands(tmp_path):
    out = tmp_path / "bw"
    cmd = [sys.executable, "-m", "blockworld.generate", "--out", str(out), "--episodes", "2", "--seconds", "0.5",
           "--seed", "3", "--size", "64x36", "--workers", "2"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["episodes"] == 2 and summary["frames"] == 16 and summary["failed"] == 0
    assert video_io.read_frames(out / "video" / "seed_3_part_1.mp4").shape == (8, 36, 64, 3)
    prev = tmp_path / "preview"
    r = subprocess.run([sys.executable, "-m", "blockworld.preview", "--data", str(out), "--out", str(prev)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    import cv2
    sheet = cv2.imread(str(prev / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[0] > 2 * 36 and sheet.shape[1] > 8 * 64
    assert video_io.read_frames(prev / "preview.mp4").shape[0] == 8
    bad = subprocess.run([sys.executable, "-m", "blockworld.generate", "--out", str(out), "--size", "65x36"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "even" in bad.stderr
