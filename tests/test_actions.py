"""The action schema: encoding, every source converter, sign conventions and round trips."""
import numpy as np
import pytest

import actions as A


def test_raw_layout_and_versions():
    assert A.RAW_DIM == 9 and A.ENC_DIM == 15
    assert A.RAW_FIELDS[:2] == ("yaw_deg", "pitch_deg")
    assert isinstance(A.ACTION_SCHEMA_VERSION, int)


BINS = A.ActionEncoding(camera="bins")


@pytest.mark.parametrize("yaw,expected_bin", [(-10, 0), (-2, 1), (0, 2), (0.5, 2), (-0.5, 2), (2, 3), (10, 4)])
def test_yaw_bins(yaw, expected_bin):
    enc = A.encode(A.make_raw(yaw_deg=yaw), BINS)
    assert enc[A.YAW_SLICE].argmax() == expected_bin
    assert enc[A.YAW_SLICE].sum() == 1.0


@pytest.mark.parametrize("pitch,expected_bin", [(-3, 0), (0, 1), (3, 2)])
def test_pitch_bins_plus_looks_down(pitch, expected_bin):
    enc = A.encode(A.make_raw(pitch_deg=pitch), BINS)
    assert enc[A.PITCH_SLICE].argmax() == expected_bin
    assert A.ENC_FIELDS[A.PITCH_SLICE.start + expected_bin] == ["pitch_up", "pitch_none", "pitch_down"][expected_bin]


@pytest.mark.parametrize("yaw,pitch", [(0, 0), (1, 1.5), (2.5, -3), (-5, 6), (-7.25, -0.2), (10, -6)])
def test_graded_camera_is_continuous_and_reads_back(yaw, pitch):
    e = A.ActionEncoding()
    assert e.camera == "graded"
    enc = e.encode(A.make_raw(yaw_deg=yaw, pitch_deg=pitch))
    y, p = enc[A.YAW_SLICE], enc[A.PITCH_SLICE]
    assert y.sum() == pytest.approx(1.0) and p.sum() == pytest.approx(1.0)
    assert (y >= 0).all() and (p >= 0).all() and (y > 0).sum() <= 2 and (p > 0).sum() <= 2
    assert float(y @ np.array(e.yaw_centres)) == pytest.approx(yaw, abs=1e-5)
    assert float(p @ np.array(e.pitch_centres)) == pytest.approx(pitch, abs=1e-5)


def test_graded_camera_tells_turn_speeds_apart_and_saturates():
    e = A.ActionEncoding()
    codes = [tuple(e.encode(A.make_raw(yaw_deg=v))[A.YAW_SLICE]) for v in (1.0, 2.5, 5.0, 10.0)]
    assert len(set(codes)) == 4  # one-hot bins put 1 and 2.5 (and 5 and 10) in the same bin
    np.testing.assert_array_equal(e.encode(A.make_raw(yaw_deg=40.0)), e.encode(A.make_raw(yaw_deg=10.0)))
    # No turn is exactly the "none" slot, as in the binned encoding.
    np.testing.assert_array_equal(e.encode(A.make_raw()), BINS.encode(A.make_raw()))


def test_encoding_round_trips_and_old_checkpoints_mean_bins():
    e = A.ActionEncoding()
    assert A.ActionEncoding.from_dict(e.to_dict()) == e
    old = {"yaw_edges": [-4.0, -0.5, 0.5, 4.0], "pitch_edges": [-0.5, 0.5]}
    assert A.ActionEncoding.from_dict(old).camera == "bins"
    with pytest.raises(ValueError):
        A.ActionEncoding(camera="wobbly")


def test_keys_encoding_order_and_fractions():
    raw = A.make_raw(forward=1, left=0.25, jump=1, sneak=0.5)
    enc = A.encode(raw)
    named = dict(zip(A.ENC_FIELDS, enc))
    assert named["W"] == 1 and named["A"] == 0.25 and named["S"] == 0 and named["D"] == 0
    assert named["jump"] == 1 and named["sneak"] == 0.5 and named["sprint"] == 0


def test_encode_batched_matches_single():
    rng = np.random.default_rng(0)
    raw = np.concatenate([rng.normal(0, 5, (4, 6, 2)), rng.uniform(0, 1, (4, 6, 7))], -1).astype(np.float32)
    batched = A.encode(raw)
    assert batched.shape == (4, 6, 15)
    for i in range(4):
        for j in range(6):
            np.testing.assert_array_equal(batched[i, j], A.encode(raw[i, j]))


def test_encoding_edges_validated_and_serialised():
    enc = A.ActionEncoding(yaw_edges=(-8, -1, 1, 8), pitch_edges=(-1, 1))
    assert A.ActionEncoding.from_dict(enc.to_dict()) == enc
    with pytest.raises(ValueError, match="yaw_edges"):
        A.ActionEncoding(yaw_edges=(1, 0, 2, 3))


def test_gamefactory_conversion_and_round_trip():
    entry = {"ws": 1, "ad": 2, "scs": 3, "yaw_delta": 0.2, "pitch_delta": -0.1, "pitch": 3.0, "yaw": 10.0,
             "pos": [1, 2, 3]}
    raw = A.from_gamefactory(entry)
    f = dict(zip(A.RAW_FIELDS, raw))
    assert f["yaw_deg"] == pytest.approx(3.0) and f["pitch_deg"] == pytest.approx(-1.5)
    assert (f["forward"], f["back"], f["left"], f["right"]) == (1, 0, 0, 1)
    assert (f["jump"], f["sneak"], f["sprint"]) == (0, 0, 1)
    back = A.to_gamefactory(raw, yaw=10.0, pitch=3.0, pos=[1, 2, 3])
    assert {k: back[k] for k in ("ws", "ad", "scs")} == {"ws": 1, "ad": 2, "scs": 3}
    assert back["yaw_delta"] == pytest.approx(0.2) and back["pitch_delta"] == pytest.approx(-0.1)
    np.testing.assert_allclose(A.from_gamefactory(back), raw, atol=1e-6)


@pytest.mark.parametrize("scs,field", [(1, "jump"), (2, "sneak"), (3, "sprint")])
def test_gamefactory_scs(scs, field):
    raw = A.from_gamefactory({"ws": 0, "ad": 0, "scs": scs, "yaw_delta": 0, "pitch_delta": 0})
    assert raw[A.RAW[field]] == 1 and raw[2:].sum() == 1


@pytest.mark.parametrize("bad", [{"ws": 3}, {"ad": -1}, {"scs": 4}, {"yaw_delta": float("nan")},
                                 {"pitch_delta": "x"}, {"yaw_delta": float("inf")}])
def test_gamefactory_rejects_bad_entries(bad):
    entry = {"ws": 0, "ad": 0, "scs": 0, "yaw_delta": 0.0, "pitch_delta": 0.0, **bad}
    with pytest.raises(ValueError):
        A.from_gamefactory(entry)


def test_minerl_conversion_camera_is_pitch_then_yaw():
    npz = {"action$camera": np.array([[2.0, -4.0], [0.0, 7.5]], np.float32),
           "action$forward": np.array([1, 0]), "action$jump": np.array([0, 1]),
           "action$sneak": np.array([1, 0]), "action$attack": np.array([1, 1])}
    raw = A.from_minerl(npz)
    assert raw.shape == (2, 9)
    assert raw[0, A.RAW["pitch_deg"]] == 2.0 and raw[0, A.RAW["yaw_deg"]] == -4.0
    assert raw[1, A.RAW["yaw_deg"]] == 7.5
    assert raw[0, A.RAW["forward"]] == 1 and raw[1, A.RAW["jump"]] == 1 and raw[0, A.RAW["sneak"]] == 1
    with pytest.raises(ValueError, match="steps"):
        A.from_minerl({**npz, "action$back": np.zeros(3)})


def test_vpt_conversion_keys_mouse_and_null_lines():
    line = {"mouse": {"dx": 24.0, "dy": -12.0}, "keyboard": {"keys": ["key.keyboard.w", "key.keyboard.space",
                                                                        "key.keyboard.left.control"]}}
    raw = A.from_vpt_line(line)
    assert raw[A.RAW["yaw_deg"]] == pytest.approx(24 * 360 / 2400)  # float, not truncated to int
    assert raw[A.RAW["pitch_deg"]] == pytest.approx(-12 * 360 / 2400)  # mouse up looks up (-pitch)
    assert raw[A.RAW["forward"]] == 1 and raw[A.RAW["jump"]] == 1 and raw[A.RAW["sprint"]] == 1
    assert raw[A.RAW["sneak"]] == 0
    np.testing.assert_array_equal(A.from_vpt_line(None), A.noop())
    np.testing.assert_array_equal(A.from_vpt_line({"mouse": None, "keyboard": None}), A.noop())


def test_live_conversion_matches_make_raw():
    raw = A.from_live({"forward", "sprint", "not-a-key"}, mouse_dx=10, mouse_dy=-4, sensitivity=0.5)
    np.testing.assert_array_equal(raw, A.make_raw(yaw_deg=5, pitch_deg=-2, forward=1, sprint=1))


def test_aggregate_sums_camera_and_averages_keys():
    steps = np.stack([A.make_raw(yaw_deg=1, forward=1), A.make_raw(yaw_deg=2, forward=1),
                      A.make_raw(yaw_deg=-0.5, jump=1), A.make_raw(pitch_deg=3)])
    agg = A.aggregate(steps)
    assert agg[A.RAW["yaw_deg"]] == pytest.approx(2.5) and agg[A.RAW["pitch_deg"]] == pytest.approx(3)
    assert agg[A.RAW["forward"]] == pytest.approx(0.5) and agg[A.RAW["jump"]] == pytest.approx(0.25)
    intervals = A.aggregate_intervals(steps, [0, 1, 4])
    np.testing.assert_allclose(intervals[0], steps[0])
    np.testing.assert_allclose(intervals[1], A.aggregate(steps[1:4]))
    with pytest.raises(ValueError, match="empty"):
        A.aggregate_intervals(steps, [0, 2, 2])


def test_validate_raw_names_source_and_field():
    raw = A.noop(5)
    raw[3, A.RAW["pitch_deg"]] = np.nan
    with pytest.raises(ValueError, match=r"clip\.json.*pitch_deg.*step 3"):
        A.validate_raw(raw, "clip.json")
    with pytest.raises(ValueError, match="shape"):
        A.validate_raw(np.zeros((5, 8)), "x")
    raw = A.noop(2)
    raw[0, A.RAW["jump"]] = 2
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        A.validate_raw(raw, "x")


def test_mirrored_columns_pair_opposite_turns():
    ActionEncoding, make_raw = A.ActionEncoding, A.make_raw
    assert ActionEncoding().mirrored_columns() == [(0, 4), (1, 3), (5, 7)]
    assert ActionEncoding(camera="bins").mirrored_columns() == [(0, 4), (1, 3), (5, 7)]
    lopsided = ActionEncoding(yaw_centres=(-10.0, -2.5, 0.0, 2.5, 8.0))
    assert lopsided.mirrored_columns() == [(5, 7)]
    enc = ActionEncoding()
    for a, b in enc.mirrored_columns():  # a turn and its opposite land on each other's columns
        raw = make_raw(yaw_deg=-7.0, pitch_deg=-4.0)
        flipped = make_raw(yaw_deg=7.0, pitch_deg=4.0)
        assert enc.encode(raw)[a] == pytest.approx(enc.encode(flipped)[b])
