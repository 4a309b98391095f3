"""live_inference.py: play a world model with keyboard and mouse.

    python live_inference.py --model CKPT --context blockworld:0
    python live_inference.py --context blockworld:7       (no --model: the shipped model; `make play`)
    python live_inference.py --model CKPT --context SPEC --headless --script actions.json --frames 200

Controls: mouse looks (captured; --sensitivity degrees per pixel), W/A/S/D move, Space jump, Left Shift
sneak, Left Ctrl sprint. Esc releases the mouse (click to capture it again; a second Esc quits), R resets to
the context, P pauses, F12 saves a screenshot, H toggles the HUD (FPS, model ms, decode ms, current action).

The game runs at a fixed tick (--tick-hz, 16 by default): each tick takes every key held at any moment during
it and the mouse motion summed over it, turns them into one raw action (actions.from_live), runs one
model.step with the persistent hidden state and shows the decoded frame. When the model is slower than the
tick the game slows down; inputs are never dropped.

--headless runs the same loop under SDL's dummy video driver, unpaced (as fast as it goes), for --frames
ticks, with --script's input events posted into pygame's event queue so the real event handling runs;
it prints a JSON summary (frames, FPS, latencies) as the last line of stdout. --script is one of:
    an event script (JSON list): {"tick": 0, "event": "keydown", "key": "w"}, {"tick": 9, "event": "keyup",
        "key": "w"}, {"tick": 3, "event": "mouse", "rel": [12, -4]}, {"tick": 5, "event": "click"},
        {"tick": 6, "event": "focus_lost"}, {"tick": 7, "event": "quit"}; keys by pygame name ("w", "space",
        "left shift", "left ctrl", "escape", "r", "p", "f12", "h", ...)
    an action script (.json/.csv, as for inference.py) or a preset name: turned into key and mouse events
        (mouse pixels = degrees / sensitivity; a key is pressed while its fraction is >= 0.5)
"""
from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import numpy as np  # noqa: E402

from actions import KEY_FIELDS, RAW, RAW_DIM, from_live  # noqa: E402
from config import exit_on_error, main_config  # noqa: E402

# pygame key names (pygame.key.name) -> raw action key fields.
KEYMAP: dict[str, str] = {
    "w": "forward", "s": "back", "a": "left", "d": "right",
    "space": "jump", "left shift": "sneak", "left ctrl": "sprint",
}


@dataclass
class LiveConfig:
    model: str = ""
    """World-model checkpoint (weights-only export); its VQ-VAE and action encoding come from it."""
    vqvae: str = ""
    """VQ-VAE checkpoint replacing the one the world model records (empty: use the recorded one)."""
    context: str = ""
    """Start: shard:PATH.npz[:START], video:PATH.mp4[:START], png:A.png[,B.png] or png:DIR,
    blockworld:SEED[:BIOME] (see inference.py --help)."""
    context_frames: int = 8
    """C: context frames warming the hidden state (shard, video and block-world contexts)."""
    scale: int = 6
    """Window scale, 4 to 8 (nearest neighbour): 128x72 -> 768x432 at 6."""
    sensitivity: float = 0.15
    """Mouse look in degrees per pixel (0.15 = VPT's 360/2400)."""
    tick_hz: float = 16.0
    """Game tick: one model step per tick (the data's 16 fps)."""
    sampling: str = "greedy"
    """greedy, temperature or topk."""
    temperature: float = 1.0
    """Softmax temperature for temperature and topk sampling."""
    top_k: int = 0
    """Codes kept per position in topk sampling."""
    fill: bool = True
    """Draw the rows a walk's warp repeats from the model's texture prior (rollout.Sampling.fill), when it has
    one; false = keep the sampling mode's codes there."""
    fill_anchor: float = 128.0
    """Weigh the fill's draw towards the code the warp put there (rollout.Sampling.fill_anchor: the kernel's
    width in median nearest-code distances); 0 = the prior alone."""
    seed: int = 0
    """Seed of the sampler; R (reset) re-seeds it."""
    device: str = "auto"
    """auto, cpu or cuda."""
    cpu_threads: int = 1
    """torch CPU threads (0: torch's default, one per core). 1 is the default because one small step per
    frame gains little from more, and with anything else running OpenMP barriers stall (bench/live.py,
    BENCHMARKS.md: 2 threads ran the laptop preset 4x slower than 1 on the shared 2-core machine)."""
    compile: bool = False
    """torch.compile the model step and the VQ decoder."""
    subtoken: bool = True
    """Draw each frame where its content is between whole-token moves (the motion the token warp has not
    applied yet, motion.subtoken_shift): a slow mouse turn glides a pixel a step instead of jumping a token
    every few steps (evaluate.py --subtoken measures it; README, "Drawing between whole-token moves")."""
    hud: bool = True
    """Show the HUD at start (H toggles it)."""
    record: str = ""
    """Record the session's frames (native size) to this mp4."""
    actions_out: str = ""
    """Write the actions played as an action script (JSON), replayable with inference.py --actions."""
    screenshot_dir: str = "runs/screenshots"
    """Where F12 saves PNG screenshots of the window."""
    headless: bool = False
    """Run without a window (SDL dummy driver), unpaced, driven by --script, and print a JSON summary."""
    script: str = ""
    """Scripted input for --headless: an event script, an action script (.json/.csv) or a preset name."""
    frames: int = 0
    """Headless: ticks to run (0 = the script's length)."""
    summary: str = ""
    """Also write the JSON summary to this file."""


# ----------------------------------------------------------------------------- input -> raw action


def raw_action_from_input(keys_held: Iterable[str], mouse_dx: float, mouse_dy: float,
                          sensitivity: float) -> np.ndarray:
    """Pygame key names held during a tick and the mouse motion over it (pixels) -> raw action [RAW_DIM].
    Keys outside KEYMAP are ignored; the conversion itself is actions.from_live."""
    return from_live([KEYMAP[k] for k in keys_held if k in KEYMAP], mouse_dx, mouse_dy, sensitivity)


@dataclass
class InputAccumulator:
    """Key state and mouse motion over one tick, so nothing pressed during a tick is lost: a key counts
    as held for the tick if it was down at any moment of it."""

    held: set[str] = field(default_factory=set)
    touched: set[str] = field(default_factory=set)
    dx: float = 0.0
    dy: float = 0.0

    def key_down(self, name: str) -> None:
        self.held.add(name)
        self.touched.add(name)

    def key_up(self, name: str) -> None:
        self.held.discard(name)

    def mouse(self, dx: float, dy: float) -> None:
        self.dx += dx
        self.dy += dy

    def release_all(self) -> None:
        """Focus lost: key-up events go elsewhere, so forget every key now (no key stays stuck)."""
        self.held.clear()
        self.touched.clear()

    def take(self, sensitivity: float) -> np.ndarray:
        """The tick's raw action; starts the next tick."""
        raw = raw_action_from_input(self.held | self.touched, self.dx, self.dy, sensitivity)
        self.discard()
        return raw

    def discard(self) -> None:
        """Start the next tick without producing an action (pause)."""
        self.touched = set(self.held)
        self.dx = self.dy = 0.0


# ----------------------------------------------------------------------------- scripts


@dataclass(frozen=True)
class ScriptEvent:
    tick: int
    event: str
    key: str = ""
    rel: tuple[float, float] = (0.0, 0.0)


EVENT_TYPES = ("keydown", "keyup", "mouse", "click", "focus_lost", "quit")


def events_from_actions(raw: np.ndarray, sensitivity: float) -> list[ScriptEvent]:
    """Raw actions [N, RAW_DIM] -> key and mouse events that reproduce them tick for tick. A key counts for
    every tick it is down at any moment of, so its key-up goes in its last held tick (after the
    key-down when it is held for one tick only)."""
    key_of = {v: k for k, v in KEYMAP.items()}
    raw = np.asarray(raw, dtype=np.float32)
    held = [{f for f in KEY_FIELDS if row[RAW[f]] >= 0.5} for row in raw] + [set()]
    events: list[ScriptEvent] = []
    for t, row in enumerate(raw):
        before = held[t - 1] if t > 0 else set()
        events += [ScriptEvent(t, "keydown", key_of[f]) for f in sorted(held[t] - before)]
        yaw, pitch = float(row[RAW["yaw_deg"]]), float(row[RAW["pitch_deg"]])
        if yaw or pitch:
            events.append(ScriptEvent(t, "mouse", rel=(yaw / sensitivity, pitch / sensitivity)))
        events += [ScriptEvent(t, "keyup", key_of[f]) for f in sorted(held[t] - held[t + 1])]
    return events


def load_script(spec: str, sensitivity: float, frames: int = 0) -> tuple[list[ScriptEvent], int]:
    """--script -> (events, length in ticks); a preset runs `frames` ticks (0: its default length)."""
    from action_scripts import (DEFAULT_SCRIPT_FRAMES, actions_from_entries, is_named_script, load_action_script, named_script_actions,
                         read_json_script)

    if is_named_script(spec):
        raw = named_script_actions(spec, frames or DEFAULT_SCRIPT_FRAMES)
        return events_from_actions(raw, sensitivity), len(raw)
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"{path}: script not found (and not a preset name)")
    if path.suffix.lower() == ".json":
        entries = read_json_script(path)
        if isinstance(entries, list) and entries and all(isinstance(e, dict) and "event" in e for e in entries):
            return parse_event_script(entries, str(path))
        raw = actions_from_entries(entries, str(path))
    else:
        raw = load_action_script(path)
    return events_from_actions(raw, sensitivity), len(raw)


def parse_event_script(entries: Sequence[dict], source: str) -> tuple[list[ScriptEvent], int]:
    import pygame

    pygame.display.init()  # key names resolve only once SDL's video subsystem is up
    events = []
    for i, e in enumerate(entries):
        where = f"{source}: event {i}"
        kind = e.get("event")
        if kind not in EVENT_TYPES:
            raise ValueError(f"{where}: event must be one of {EVENT_TYPES}, got {kind!r}")
        try:
            tick = int(e.get("tick", 0))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: tick is not an integer: {e.get('tick')!r}") from err
        if tick < 0:
            raise ValueError(f"{where}: tick must be >= 0")
        key = str(e.get("key", ""))
        if kind in ("keydown", "keyup"):
            try:
                pygame.key.key_code(key)
            except ValueError as err:
                raise ValueError(f"{where}: unknown key name {key!r} (pygame names: w, space, left shift, "
                                 f"left ctrl, escape, f12, ...)") from err
        rel = (0.0, 0.0)
        if kind == "mouse":
            r = e.get("rel")
            if not (isinstance(r, (list, tuple)) and len(r) == 2):
                raise ValueError(f"{where}: mouse events need \"rel\": [dx, dy]")
            rel = (float(r[0]), float(r[1]))
        events.append(ScriptEvent(tick, kind, key, rel))
    return events, (max(e.tick for e in events) + 1 if events else 0)


# ----------------------------------------------------------------------------- recording


class Recorder:
    """Streams frames to an mp4 from a background thread, so a long session is never held in memory."""

    def __init__(self, path: str | Path, fps: float) -> None:
        from video_io import write_mp4

        self.path = Path(path)
        self.queue: queue.Queue = queue.Queue(maxsize=256)
        self.error: BaseException | None = None
        self.count = 0

        def frames() -> Iterable[np.ndarray]:
            while (f := self.queue.get()) is not None:
                yield f

        def work() -> None:
            try:
                self.count = write_mp4(self.path, frames(), fps)
            except BaseException as e:  # reported by close(); the game must not die for its recording
                self.error = e
                while self.queue.get() is not None:
                    pass

        self.thread = threading.Thread(target=work, daemon=True)
        self.thread.start()

    def add(self, frame: np.ndarray) -> None:
        self.queue.put(frame)

    def close(self) -> int:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise ValueError(f"{self.path}: recording failed ({self.error})")
        return self.count


# ----------------------------------------------------------------------------- the game


class LiveSession:
    """The live loop: pygame events -> InputAccumulator -> one Rollout.next per tick -> window."""

    def __init__(self, cfg: LiveConfig, bundle: Any, context: Any) -> None:
        import pygame

        from rollout import Rollout, Sampling

        if not 4 <= cfg.scale <= 8:
            raise ValueError(f"--scale must be 4 to 8, got {cfg.scale}")
        if not cfg.tick_hz > 0:
            raise ValueError(f"--tick-hz must be > 0, got {cfg.tick_hz}")
        self.cfg = cfg
        self.pg = pygame
        fw, fh = bundle.frame_size
        self.size = (fw * cfg.scale, fh * cfg.scale)
        try:
            pygame.display.init()
            pygame.font.init()
            self.screen = pygame.display.set_mode(self.size)
        except pygame.error as e:
            raise ValueError(f"cannot open a window ({e}); on a machine without a display use --headless") from e
        pygame.display.set_caption("Ochre - live world model (Esc frees the mouse, H HUD)")
        self.font = pygame.font.Font(None, 3 * cfg.scale + 4)
        sampling = Sampling.of(cfg)
        self.rollout = Rollout(bundle, sampling, subtoken=cfg.subtoken)
        self.rollout.warmup(context.tokens, context.actions)
        self.context = context
        self.device = str(bundle.device)
        self.inputs = InputAccumulator()
        self.frame = self.rollout.frame()
        self.running = True
        self.quit_reason = ""
        self.paused = False
        self.hud = cfg.hud
        self.captured = False
        self.reset_requested = False
        self.screenshot_requested = False
        self.screenshots: list[str] = []
        self.last_action = np.zeros(RAW_DIM, np.float32)
        self.actions_log: list[np.ndarray] = []
        self.model_ms: list[float] = []
        self.decode_ms: list[float] = []
        self.display_ms: list[float] = []
        self.tick_ms: list[float] = []
        self.tick_starts: deque[float] = deque(maxlen=17)
        self.tick_cpu_ms: list[float] = []
        """CPU time of this process per tick: what a tick costs when the cores are not shared."""
        self.ticks = 0
        self.paused_ticks = 0
        self.resets = 0
        self.events_handled = 0
        self.ignored_keys = 0
        self.recorder = Recorder(cfg.record, cfg.tick_hz) if cfg.record else None
        self.set_capture(True)

    # -- input
    def set_capture(self, on: bool) -> None:
        """Capture (hidden cursor + grab = relative mouse motion without screen borders) or release."""
        self.captured = on
        try:
            self.pg.event.set_grab(on)
            self.pg.mouse.set_visible(not on)
        except self.pg.error:  # no window manager support (dummy driver): relative events still arrive
            pass

    def handle_event(self, ev: Any) -> None:
        pg = self.pg
        self.events_handled += 1
        if ev.type == pg.QUIT:
            self.stop("window closed")
        elif ev.type == getattr(pg, "WINDOWFOCUSLOST", -1) or (
                ev.type == pg.ACTIVEEVENT and getattr(ev, "gain", 1) == 0 and getattr(ev, "state", 0) & 2):
            self.inputs.release_all()
            self.set_capture(False)
        elif ev.type == pg.KEYDOWN:
            name = pg.key.name(getattr(ev, "key", 0))
            if name == "escape":
                if self.captured:
                    self.set_capture(False)
                    self.inputs.release_all()
                else:
                    self.stop("escape")
            elif name == "r":
                self.reset_requested = True
            elif name == "p":
                self.paused = not self.paused
            elif name == "f12":
                self.screenshot_requested = True
            elif name == "h":
                self.hud = not self.hud
            elif name in KEYMAP:
                self.inputs.key_down(name)
            else:
                self.ignored_keys += 1
        elif ev.type == pg.KEYUP:
            name = pg.key.name(getattr(ev, "key", 0))
            if name in KEYMAP:
                self.inputs.key_up(name)
        elif ev.type == pg.MOUSEMOTION:
            if self.captured and not self.paused:
                rel = getattr(ev, "rel", (0, 0))
                self.inputs.mouse(float(rel[0]), float(rel[1]))
        elif ev.type == pg.MOUSEBUTTONDOWN and not self.captured:
            self.set_capture(True)

    def stop(self, reason: str) -> None:
        self.running = False
        self.quit_reason = self.quit_reason or reason

    def post_script_events(self, events: Sequence[ScriptEvent]) -> None:
        """Inject scripted input into pygame's event queue, as the OS would."""
        pg = self.pg
        centre = (self.size[0] // 2, self.size[1] // 2)
        for e in events:
            if e.event in ("keydown", "keyup"):
                ev = pg.event.Event(pg.KEYDOWN if e.event == "keydown" else pg.KEYUP,
                                    key=pg.key.key_code(e.key), mod=0, unicode="", scancode=0)
            elif e.event == "mouse":
                ev = pg.event.Event(pg.MOUSEMOTION, rel=e.rel, pos=centre, buttons=(0, 0, 0))
            elif e.event == "click":
                ev = pg.event.Event(pg.MOUSEBUTTONDOWN, button=1, pos=centre)
            elif e.event == "focus_lost":
                ev = pg.event.Event(pg.WINDOWFOCUSLOST)
            else:
                ev = pg.event.Event(pg.QUIT)
            pg.event.post(ev)

    # -- one tick
    def tick(self) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        self.tick_starts.append(t0)
        for ev in self.pg.event.get():
            self.handle_event(ev)
        if not self.running:
            return
        if self.reset_requested:
            self.reset_requested = False
            self.rollout.reset()
            self.frame = self.rollout.frame()
            self.resets += 1
        if self.paused:
            self.inputs.discard()
            self.paused_ticks += 1
        else:
            raw = self.inputs.take(self.cfg.sensitivity)
            self.rollout.next(raw)
            self.frame = self.rollout.frame()
            self.last_action = raw
            self.actions_log.append(raw)
            self.model_ms.append(self.rollout.step_ms)
            self.decode_ms.append(self.rollout.decode_ms)
            if self.recorder is not None:
                self.recorder.add(self.frame)
        t1 = time.perf_counter()
        self.draw()
        self.display_ms.append((time.perf_counter() - t1) * 1e3)
        if self.screenshot_requested:
            self.screenshot_requested = False
            self.save_screenshot()
        self.ticks += 1
        self.tick_ms.append((time.perf_counter() - t0) * 1e3)
        self.tick_cpu_ms.append((time.process_time() - c0) * 1e3)

    # -- display
    def fps_now(self) -> float:
        """Frames shown per second over the last 16 ticks (tick starts, so waiting for the tick counts)."""
        recent = self.tick_starts
        return (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0

    def hud_lines(self) -> list[str]:
        from action_scripts import describe

        fps = self.fps_now()
        lines = [(f"{fps:5.1f} FPS" if fps else "  -- FPS")
                 + f"  model {self.rollout.step_ms:5.1f} ms  decode {self.rollout.decode_ms:5.1f} ms",
                 f"action {describe(self.last_action)}"]
        if self.paused:
            lines.append("PAUSED (P resumes)")
        if not self.captured:
            lines.append("mouse free: click to capture, Esc quits")
        lines.append("WASD Space Shift Ctrl | Esc mouse  R reset  P pause  F12 shot  H hud")
        return lines

    def draw(self) -> None:
        pg = self.pg
        surf = pg.surfarray.make_surface(np.ascontiguousarray(self.frame.swapaxes(0, 1)))  # [W, H, 3] view
        pg.transform.scale(surf, self.size, self.screen)  # pygame's plain scale is nearest neighbour
        if self.hud:
            lines = [self.font.render(t, True, (255, 255, 255)) for t in self.hud_lines()]
            pad = self.cfg.scale
            height = sum(s.get_height() for s in lines) + 2 * pad
            width = max(s.get_width() for s in lines) + 2 * pad
            box = pg.Surface((width, height), pg.SRCALPHA)
            box.fill((0, 0, 0, 150))
            self.screen.blit(box, (0, 0))
            y = pad
            for s in lines:
                self.screen.blit(s, (pad, y))
                y += s.get_height()
        pg.display.flip()

    def save_screenshot(self, path: str | Path | None = None) -> Path:
        from ckpt_io import atomic_path

        if path is None:
            stamp = time.strftime("%Y%m%d_%H%M%S")
            path = Path(self.cfg.screenshot_dir) / f"live_{stamp}_{len(self.screenshots):03d}.png"
        path = Path(path)
        with atomic_path(path, suffix=".png") as tmp:
            self.pg.image.save(self.screen, str(tmp))
        self.screenshots.append(str(path))
        return path

    # -- the loop
    def run(self, script: Sequence[ScriptEvent] = (), max_ticks: int = 0, paced: bool = True) -> dict:
        """Tick until quit (or max_ticks). Paced: wait for the tick period when ahead, never catch up
        when behind (the game slows down instead of skipping inputs)."""
        by_tick: dict[int, list[ScriptEvent]] = {}
        for e in script:
            by_tick.setdefault(e.tick, []).append(e)
        period = 1.0 / self.cfg.tick_hz
        self.draw()  # the context frame at once, not a black window during the first step
        start = time.perf_counter()
        deadline = start
        try:
            while self.running and (max_ticks <= 0 or self.ticks < max_ticks):
                if self.ticks in by_tick:
                    self.post_script_events(by_tick[self.ticks])
                self.tick()
                if paced:
                    deadline += period
                    now = time.perf_counter()
                    if deadline > now:
                        time.sleep(deadline - now)
                    else:
                        deadline = now
        except KeyboardInterrupt:
            self.stop("interrupted")
        wall = time.perf_counter() - start
        if not self.quit_reason:
            self.quit_reason = "frames done"
        return self.finish(wall)

    def finish(self, wall: float) -> dict:
        from rollout import summarize_ms

        try:
            recorded = self.recorder.close() if self.recorder is not None else 0
        finally:
            self.pg.display.quit()
        if self.cfg.actions_out:
            from ckpt_io import atomic_write_json
            from action_scripts import actions_to_entries

            atomic_write_json(self.cfg.actions_out, actions_to_entries(np.array(self.actions_log).reshape(-1, RAW_DIM)))
        frames = len(self.actions_log)
        summary = {
            "frames": frames, "ticks": self.ticks, "wall_s": round(wall, 3),
            "fps": round(frames / wall, 2) if wall > 0 else None, "tick_hz": self.cfg.tick_hz,
            "model_ms": summarize_ms(self.model_ms), "decode_ms": summarize_ms(self.decode_ms),
            "display_ms": summarize_ms(self.display_ms), "tick_ms": summarize_ms(self.tick_ms),
            "tick_cpu_ms": summarize_ms(self.tick_cpu_ms),
            "paused_ticks": self.paused_ticks, "resets": self.resets, "screenshots": self.screenshots,
            "events": self.events_handled, "ignored_keys": self.ignored_keys, "quit": self.quit_reason,
            "device": self.device, "recorded_frames": recorded, "record": self.cfg.record or None,
        }
        return summary


def run(cfg: LiveConfig) -> dict:
    if cfg.headless:
        os.environ["SDL_VIDEODRIVER"] = "dummy"
        os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    elif sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise ValueError("no display to open the window on (DISPLAY is not set): play without one with "
                         "--headless --frames N [--script actions.json] [--record play.mp4], or run under Xvfb")
    from rollout import load_bundle, model_or_shipped

    model = model_or_shipped(cfg.model)
    if not cfg.context:
        raise ValueError("--context is required (e.g. blockworld:0 or shard:preprocessed/x.npz:0)")
    if cfg.headless and not cfg.script and cfg.frames <= 0:
        raise ValueError("--headless needs --script and/or --frames N")
    import torch

    from contexts import load_context

    if cfg.cpu_threads > 0:
        torch.set_num_threads(cfg.cpu_threads)
    script, length = load_script(cfg.script, cfg.sensitivity, cfg.frames) if cfg.script else ([], 0)
    bundle = load_bundle(model, cfg.vqvae or None, cfg.device, cfg.compile)
    ctx = load_context(cfg.context, bundle, cfg.context_frames)
    session = LiveSession(cfg, bundle, ctx)
    max_ticks = (cfg.frames or length) if cfg.headless else cfg.frames
    summary = session.run(script, max_ticks=max_ticks, paced=not cfg.headless)
    if cfg.summary:
        from ckpt_io import atomic_write_json

        atomic_write_json(cfg.summary, summary)
    return summary


def main() -> None:
    cfg = main_config(LiveConfig, doc=__doc__)
    # CheckpointError, VideoError and IncompatibleError are ValueErrors
    summary = exit_on_error(lambda: run(cfg))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
