"""config.py parsing, ckpt_io atomic/self-describing checkpoints, video_io round trips and errors."""
import json
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np
import pytest
import torch

import ckpt_io
import config
import video_io


@dataclass
class DemoConfig:
    lr: float = 1e-3
    """Learning rate."""
    max_steps: int = 10
    """Number of optimizer steps."""
    edges: tuple[float, ...] = (1.0, 2.0)
    """Bin edges."""
    compile: bool = False
    """Use torch.compile."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to run."""
    resume_from: Optional[str] = None
    """Checkpoint to resume."""
    preset: str = "none"
    """Preset applied before overrides."""


PRESETS = {"tiny": {"max_steps": 2, "lr": 0.1}}


def test_parse_overrides_types_and_dashes():
    cfg = config.parse_config(DemoConfig, ["--lr", "-0.5", "--max-steps", "3", "--edges", "1,2.5,3",
                                           "--compile", "--device", "cpu", "--resume_from", "a.pt"])
    assert cfg == DemoConfig(lr=-0.5, max_steps=3, edges=(1.0, 2.5, 3.0), compile=True, device="cpu",
                             resume_from="a.pt")
    assert config.parse_config(DemoConfig, ["--compile=false"]).compile is False


def test_preset_then_overrides():
    cfg = config.parse_config(DemoConfig, ["--max-steps", "7", "--preset", "tiny"], PRESETS)
    assert (cfg.max_steps, cfg.lr, cfg.preset) == (7, 0.1, "tiny")
    assert config.parse_config(DemoConfig, [], PRESETS, default_preset="tiny").max_steps == 2


@pytest.mark.parametrize("argv,match", [
    (["--nope", "1"], "unknown option --nope"),
    (["--max-steps", "x"], "expected int"),
    (["--device", "tpu"], "not one of"),
    (["--preset", "huge"], "unknown preset"),
    (["--lr"], "needs a value"),
    (["stray"], "unexpected argument"),
])
def test_bad_command_lines(argv, match):
    with pytest.raises(config.ConfigError, match=match):
        config.parse_config(DemoConfig, argv, PRESETS)


def test_field_docs_and_help(capsys):
    docs = config.field_docs(DemoConfig)
    assert docs["lr"] == "Learning rate." and set(docs) == {f for f in DemoConfig.__dataclass_fields__}
    with pytest.raises(SystemExit):
        config.parse_config(DemoConfig, ["--help"], PRESETS)
    out = capsys.readouterr().out
    assert "--max-steps" in out and "Number of optimizer steps." in out and "tiny" in out


def test_main_config_help_shows_the_script_usage_and_errors_exit_cleanly(capsys):
    with pytest.raises(SystemExit) as e:
        config.main_config(DemoConfig, PRESETS, argv=["--help"], doc="usage: demo.py --lr X")
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.index("usage: demo.py --lr X") < out.index("--max-steps")
    with pytest.raises(SystemExit) as e:
        config.main_config(DemoConfig, PRESETS, argv=["--no-such-key", "1"])
    assert e.value.code == 2 and "no-such-key" in capsys.readouterr().err.replace("_", "-")

    def bad_input() -> None:
        raise video_io.VideoError("clip.mp4: no video stream")

    with pytest.raises(SystemExit) as e:
        config.exit_on_error(bad_input, (video_io.VideoError,))
    assert e.value.code == 2 and capsys.readouterr().err.strip() == "error: clip.mp4: no video stream"
    # Only the listed errors are turned into a clean exit; a bug still shows its traceback.
    with pytest.raises(ZeroDivisionError):
        config.exit_on_error(lambda: 1 / 0, (video_io.VideoError,))
    assert config.exit_on_error(lambda: 7) == 7


def test_config_round_trip_and_strict(tmp_path):
    cfg = DemoConfig(edges=(3.0, 4.0))
    config.save_config(cfg, tmp_path / "c.json")
    data = json.loads((tmp_path / "c.json").read_text())
    assert config.from_dict(DemoConfig, data) == cfg
    with pytest.raises(config.ConfigError, match="unknown keys"):
        config.from_dict(DemoConfig, {**data, "extra": 1})


def test_main_config_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as e:
        config.main_config(DemoConfig, argv=["--bogus", "1"])
    assert e.value.code == 2 and "unknown option --bogus" in capsys.readouterr().err


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    ckpt_io.atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with ckpt_io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
    plain = tmp_path / "plain"
    plain.write_text("x")
    assert target.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_checkpoint_identity_and_strict_errors(tmp_path):
    path = tmp_path / "m.pt"
    ckpt_io.save_checkpoint(path, "vqvae", 1, {"w": torch.arange(3)})
    rec = ckpt_io.load_checkpoint(path, "vqvae", 1)
    assert torch.equal(rec["w"], torch.arange(3)) and rec["action_schema_version"] >= 1
    with pytest.raises(ckpt_io.CheckpointError, match=r"m\.pt.*expected 'world_model'"):
        ckpt_io.load_checkpoint(path, "world_model", 1)
    with pytest.raises(ckpt_io.CheckpointError, match="format version"):
        ckpt_io.load_checkpoint(path, "vqvae", 2)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ckpt_io.CheckpointError, match=r"junk\.pt.*not a readable"):
        ckpt_io.load_checkpoint(tmp_path / "junk.pt", "vqvae", 1)
    with pytest.raises(ckpt_io.CheckpointError, match="not found"):
        ckpt_io.load_checkpoint(tmp_path / "missing.pt", "vqvae", 1)


def test_video_round_trip_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (72, 128, 3), dtype=np.uint8)
    frames = [np.roll(base, i, axis=1) for i in range(12)]
    path = tmp_path / "v.mp4"
    assert video_io.write_mp4(path, frames, fps=16) == 12
    info = video_io.probe(path)
    assert (info.width, info.height, round(info.fps)) == (128, 72, 16)
    back = video_io.read_frames(path)
    assert back.shape == (12, 72, 128, 3)
    # H.264 is lossy; a smooth-enough check that frames are the right ones in the right order.
    errs = [np.abs(back[i].astype(int) - frames[j].astype(int)).mean() for i in (0, 11) for j in (0, 11)]
    assert errs[0] < errs[1] and errs[3] < errs[2]

    truncated = tmp_path / "t.mp4"
    truncated.write_bytes(path.read_bytes()[:300])
    with pytest.raises(video_io.VideoError, match=r"t\.mp4"):
        video_io.read_frames(truncated)
    with pytest.raises(video_io.VideoError, match="even"):
        video_io.write_mp4(tmp_path / "odd.mp4", [np.zeros((5, 5, 3), np.uint8)], fps=16)
    assert not (tmp_path / "odd.mp4").exists()


def test_resize_area_and_nearest_upscale():
    frame = np.zeros((360, 640, 3), np.uint8)
    frame[:, 320:] = 200
    small = video_io.resize(frame, (128, 72))
    assert small.shape == (72, 128, 3) and small[0, 0, 0] == 0 and small[0, -1, 0] == 200
    up = video_io.upscale_nearest(small, 4)
    assert up.shape == (288, 512, 3) and (up[::4, ::4] == small).all()
